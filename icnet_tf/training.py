"""A custom training loop shared by `icnet_tf.train` and `dff_tf.train`.

What it owns: the `tf.distribute` strategy, the train step (gradients of the caller's loss over
the caller's variable list, aggregated across replicas by the optimizer), checkpoints
(`tf.train.CheckpointManager`, net + optimizer incl. its step and slots, resumed
automatically), a NaN stop that keeps the last good checkpoint, a progress bar with step/s and
ETA, and TensorBoard scalars. What the caller owns: the model, the loss (`loss_fn(batch) ->
(replica loss, {name: scalar})`, run in replica context, returning this replica's share of the
global loss) and optional periodic hooks (validation, image summaries).

Checkpoints are crash-safe: TF writes a new checkpoint's data and index files under new names
and only then rewrites the small `checkpoint` state file (atomic rename), so a kill at any
moment leaves the previous checkpoint as the latest one; at most `save_every` steps are lost.

Several worker processes (`--strategy multi_worker`, `MultiWorkerMirroredStrategy` configured
by the TF_CONFIG environment variable) train one model in lockstep; `snapshot_dir` must be
the same folder for all of them (a shared filesystem). Every worker takes part in every save
(reading a batch-norm moving statistic, an ON_READ variable, all-reduces it across workers),
but only the chief (task type 'chief', else 'worker' 0) writes to `snapshot_dir`: the others
write their copy into a fresh folder under the system temporary directory ($TMPDIR) and
delete it right after the save. Likewise only the chief writes TensorBoard summaries and
prints the progress bar; the others run the hooks (they may all-reduce too) with a no-op
summary writer and their printing dropped. On start every worker restores the chief's latest
checkpoint from `snapshot_dir`, and all workers check that they restored the same step. A
worker that dies makes the others fail after its missed heartbeats (TF's coordination
service; measured on one machine: 8 s when the chief dies, about a minute when another worker
does); they stop with a one-line `WorkerLost` error, and relaunching all workers with the same
flags resumes from the last checkpoint.
"""

import contextlib
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

from converters.errors import UserError
from converters.tf1_checkpoint import checked_index
from icnet_tf.losses import segmentation_loss
from icnet_tf.metrics import evaluate, scores
from icnet_tf.palette import colorize
from icnet_tf.predict import Segmenter, read_image
from icnet_tf.progress import Progress  # also re-exported: the tools' progress bar


def make_strategy(name):
    """'default' (one device), 'mirrored' (all local GPUs or CPUs) or 'multi_worker' (TF_CONFIG)."""
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy()
    if name == 'multi_worker':
        # MultiWorkerMirroredStrategy logs every collective it builds at INFO level.
        if tf.get_logger().getEffectiveLevel() < 30:
            tf.get_logger().setLevel('WARNING')
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f'TF_CONFIG: cannot set up the workers ({e})') from None
    raise UserError(f'unknown --strategy {name!r} (default, mirrored or multi_worker)')


def worker_role(strategy):
    """`(name, is_chief, num_workers)` of this process under `strategy`: name is 'worker:1',
    'chief:0', ... under a multi-worker strategy with TF_CONFIG, else 'local'."""
    is_chief = bool(strategy.extended.should_checkpoint)
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type:
        return 'local', is_chief, 1
    jobs = resolver.cluster_spec().as_dict()
    num_workers = len(jobs.get('chief', [])) + len(jobs.get('worker', []))
    return f'{resolver.task_type}:{resolver.task_id}', is_chief, num_workers


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class WorkerLost(UserError):
    """Another worker of a multi-worker run stopped answering."""


# What TF raises in the surviving workers when a peer is gone (coordination service heartbeat
# timeout, aborted collectives, refused connections).
_LOST_WORKER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.DeadlineExceededError,
)


class _Quiet:
    """The progress bar of a non-chief worker: prints nothing."""

    def update(self, step, values, force=False):
        pass

    def close(self):
        pass


class Trainer:
    """Runs `num_steps` optimizer steps of `loss_fn` over `variables`, with checkpoints."""

    def __init__(
        self,
        *,
        strategy,
        model,
        optimizer,
        variables,
        loss_fn,
        snapshot_dir,
        save_every,
        keep=5,
        log_dir=None,
    ):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.variables = list(variables)
        self.loss_fn = loss_fn
        self.save_every = int(save_every)
        self.snapshot_dir = snapshot_dir
        self.worker, self.is_chief, self.num_workers = worker_role(strategy)
        with strategy.scope():
            # Slots for every trainable variable, trained or not: the optimizer checkpoints its
            # slots by position, so a resume with other freezing flags must see the same list.
            optimizer.build(model.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(net=model, optimizer=optimizer)
        self.log_dir = log_dir or os.path.join(snapshot_dir, 'logs')
        # the others save through a temporary manager each time (see the module docstring)
        self.manager = (
            tf.train.CheckpointManager(self.checkpoint, snapshot_dir, max_to_keep=keep)
            if self.is_chief
            else None
        )
        self._writer = None
        self._step_fn = None

    @property
    def writer(self):
        """The TensorBoard writer (created on first use; a no-op writer on non-chief workers)."""
        if self._writer is None:
            self._writer = (
                tf.summary.create_file_writer(self.log_dir)
                if self.is_chief
                else tf.summary.create_noop_writer()
            )
        return self._writer

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    @property
    def latest_checkpoint(self):
        """The latest checkpoint in snapshot_dir (the chief's), or None."""
        return tf.train.latest_checkpoint(self.snapshot_dir)

    def restore(self):
        """Resume from the latest checkpoint in snapshot_dir; returns its path or None.

        With several workers, every worker reads the chief's latest checkpoint and all of them
        check that they are at the same step (raises UserError otherwise)."""
        latest = self.latest_checkpoint
        if latest:
            # A truncated or damaged checkpoint is one line naming the file (checked in Python
            # before TF reads it), not an abort or a misleading "another model?" hint.
            checked_index(latest)
            try:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as e:
                raise UserError(
                    f'{latest}: cannot resume from this checkpoint (another model, '
                    f'num_classes or filter_scale?): {str(e).splitlines()[0]}; use '
                    'another --snapshot_dir'
                ) from None
        if self.num_workers > 1:
            self._check_same_step()
        return latest

    def _check_same_step(self):
        """All-gather every replica's step; UserError unless all are equal."""

        @tf.function
        def steps():
            local = self.strategy.run(lambda: tf.reshape(self.optimizer.iterations, [1]))
            return self.strategy.gather(local, axis=0)

        found = [int(s) for s in steps().numpy()]
        if len(set(found)) > 1:
            raise UserError(
                f'{self.snapshot_dir}: the workers resumed from different steps (replica by '
                f"replica: {found}): every worker must see the chief's --snapshot_dir, i.e. "
                'a folder on a filesystem shared by all hosts'
            )

    def save(self):
        """Save a checkpoint; every worker must call it (see the module docstring).
        Returns the chief's checkpoint prefix."""
        step = self.step
        if self.is_chief:
            return self.manager.save(checkpoint_number=step)
        scratch = tempfile.mkdtemp(prefix=f'icnet_tf_{self.worker.replace(":", "")}_ckpt_')
        try:
            manager = tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1)
            manager.save(checkpoint_number=step)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return os.path.join(self.snapshot_dir, f'ckpt-{step}')

    def _replica_step(self, batch):
        with tf.GradientTape() as tape:
            loss, parts = self.loss_fn(batch)
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables))
        return dict(parts, loss=loss)

    def train_step(self, batch):
        """One distributed step; returns the global loss terms as Python floats."""
        if self._step_fn is None:

            @tf.function
            def step_fn(batch):
                per_replica = self.strategy.run(self._replica_step, args=(batch,))
                return {
                    k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                    for k, v in per_replica.items()
                }

            self._step_fn = step_fn
        return {k: float(v) for k, v in self._step_fn(batch).items()}

    def distribute(self, dataset):
        """A distributed iterator over `dataset`: a `tf.data.Dataset` of global batches, or a
        function `input_context -> dataset of per-replica batches` (one input pipeline per
        worker; see `icnet_tf.data.shard_samples`)."""
        if isinstance(dataset, tf.data.Dataset):
            return iter(self.strategy.experimental_distribute_dataset(dataset))
        return iter(self.strategy.distribute_datasets_from_function(dataset))

    def fit(self, dataset, num_steps, *, hooks=(), hook_every=0, learning_rate=None):
        """Train until the optimizer step reaches `num_steps`.

        `dataset`: see `distribute()`. `hooks` are called as `hook(step, writer)` every
        `hook_every` steps and at the end, on every worker (non-chief workers get a no-op
        writer and their printing is dropped). Raises TrainingDiverged (after keeping the last
        good checkpoint) on a non-finite loss, WorkerLost when another worker is gone.
        """
        start = self.step
        if start >= num_steps:
            print(f'already at step {start} >= --num_steps {num_steps}: nothing to do')
            return
        if self.is_chief:
            progress = Progress(start, num_steps)
        else:
            progress = _Quiet()
            print(
                f'{self.worker}: one of {self.num_workers} workers; the chief prints the '
                f'progress and writes checkpoints and summaries to {self.snapshot_dir}',
                flush=True,
            )
        try:
            return self._fit(dataset, start, num_steps, hooks, hook_every, learning_rate, progress)
        except _LOST_WORKER_ERRORS as e:
            if self.num_workers <= 1:
                raise
            progress.close()
            reason = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', str(e).strip())
            raise WorkerLost(
                f'{self.worker}: lost another worker at step {self.step} '
                f'({type(e).__name__}: {reason.splitlines()[0][:200]}); the last '
                f'checkpoint is {self.latest_checkpoint}: relaunch every worker with the same '
                'flags to resume from it'
            ) from None

    def _fit(self, dataset, start, num_steps, hooks, hook_every, learning_rate, progress):
        iterator = self.distribute(dataset)
        last_saved = self.latest_checkpoint
        values = {}
        while self.step < num_steps:
            values = self.train_step(next(iterator))
            step = self.step
            if not all(np.isfinite(v) for v in values.values()):
                progress.close()
                kept = last_saved or 'none (no checkpoint was written yet)'
                raise TrainingDiverged(
                    f'loss is {values["loss"]} at step {step}: training '
                    f'stopped; last good checkpoint kept: {kept}'
                )
            with self.writer.as_default(step=step):
                for name, value in values.items():
                    tf.summary.scalar(f'loss/{name}', value)
                if learning_rate is not None:
                    tf.summary.scalar('learning_rate', learning_rate(step - 1))
            progress.update(step, values, force=step == num_steps)
            if step % self.save_every == 0 or step == num_steps:
                last_saved = self.save()
            if hooks and hook_every and (step % hook_every == 0 or step == num_steps):
                with self._hook_output():
                    for hook in hooks:
                        hook(step, self.writer)
        progress.close()
        self.writer.flush()
        return values

    @contextlib.contextmanager
    def _hook_output(self):
        """Hooks print on the chief only."""
        if self.is_chief:
            yield
            return
        with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
            yield


# ------------------------------------------------------------------------ what train.py runs
def trained_variables(net, train_beta_gamma):
    """Every trainable variable, minus BN gamma/beta unless --train_beta_gamma."""
    affine = {id(v) for v in net.bn_affine()}
    return [v for v in net.trainable_variables if train_beta_gamma or id(v) not in affine]


def make_loss_fn(net, *, ignore_label, weight_decay, update_mean_var):
    """The replica loss of one (images, labels) batch: BN in training mode, the network's
    heads weighted by `net.loss_weights` (ICNet_BN: LAMBDA1..3 on its three heads)."""
    head_weights = net.loss_weights

    def loss_fn(batch):
        images, labels = batch
        outputs = net(
            images, training=True, update_stats=update_mean_var, outputs=list(head_weights)
        )
        return segmentation_loss(
            outputs,
            labels,
            head_weights=head_weights,
            num_classes=net.num_classes,
            ignore_label=ignore_label,
            weight_decay=weight_decay,
            conv_weights=net.conv_weights(),
        )

    return loss_fn


def image_summary_hook(net, pair, labels=None):
    """TensorBoard images: the input, its label and the prediction, in colour.

    `labels`: the list's `data.LabelFormat` (train ids and colours of its dataset); None reads
    the label's stored values as train ids, in the Cityscapes colours."""
    image = read_image(pair[0])
    if labels is None:
        with Image.open(pair[1]) as img:
            label = np.asarray(img)
        palette = 'cityscapes'
    else:
        label, palette = labels.read(pair[1]), labels.spec.palette
    segmenter = Segmenter(net)

    def hook(step, writer):
        pred = segmenter(image)
        with writer.as_default(step=step):
            tf.summary.image('input', image[None])
            tf.summary.image('label', colorize(label, palette, net.num_classes)[None])
            tf.summary.image('prediction', colorize(pred, palette, net.num_classes)[None])

    return hook


def validation_hook(net, pairs, *, ignore_label=255, labels=None):
    """Periodic mIoU on `pairs` (labels read with the `data.LabelFormat` `labels`, else as
    train ids), printed and written to TensorBoard."""
    segmenter = Segmenter(net)  # one compiled forward pass for every validation

    def hook(step, writer):
        cm = evaluate(
            net,
            pairs,
            labels=labels,
            num_classes=net.num_classes,
            ignore_label=ignore_label,
            progress=False,
            segmenter=segmenter,
        )
        miou = scores(cm)[1]
        print(f'\nstep {step}: validation mIoU {miou * 100:.2f} on {len(pairs)} images')
        with writer.as_default(step=step):
            tf.summary.scalar('validation/mIoU', miou)

    return hook
