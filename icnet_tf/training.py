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
"""

import os

import numpy as np
import tensorflow as tf
from PIL import Image

from converters.errors import UserError
from icnet_tf.losses import segmentation_loss
from icnet_tf.metrics import evaluate, scores
from icnet_tf.palette import colorize
from icnet_tf.predict import Segmenter, read_image
from icnet_tf.progress import Progress  # noqa: F401 (re-exported: the tools' progress bar)


def make_strategy(name):
    """'default' (one device), 'mirrored' (all local GPUs or CPUs) or 'multi_worker' (TF_CONFIG)."""
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy()
    if name == 'multi_worker':
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f'unknown --strategy {name!r} (default, mirrored or multi_worker)')


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


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
        with strategy.scope():
            # Slots for every trainable variable, trained or not: the optimizer checkpoints its
            # slots by position, so a resume with other freezing flags must see the same list.
            optimizer.build(model.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(net=model, optimizer=optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, snapshot_dir, max_to_keep=keep)
        self.writer = tf.summary.create_file_writer(log_dir or os.path.join(snapshot_dir, 'logs'))
        self._step_fn = None

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def restore(self):
        """Resume from the latest checkpoint in snapshot_dir; returns its path or None."""
        latest = self.manager.latest_checkpoint
        if latest:
            try:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as e:
                raise UserError(
                    f'{latest}: cannot resume from this checkpoint (another model, '
                    f'num_classes or filter_scale?): {str(e).splitlines()[0]}; use '
                    'another --snapshot_dir'
                ) from None
        return latest

    def save(self):
        return self.manager.save(checkpoint_number=self.step)

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

    def fit(self, dataset, num_steps, *, hooks=(), hook_every=0, learning_rate=None):
        """Train until the optimizer step reaches `num_steps`.

        `hooks` are called as `hook(step, writer)` every `hook_every` steps and at the end.
        Raises TrainingDiverged (after keeping the last good checkpoint) on a non-finite loss.
        """
        start = self.step
        if start >= num_steps:
            print(f'already at step {start} >= --num_steps {num_steps}: nothing to do')
            return
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        progress = Progress(start, num_steps)
        last_saved = self.manager.latest_checkpoint
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
                for hook in hooks:
                    hook(step, self.writer)
        progress.close()
        self.writer.flush()
        return values


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


def image_summary_hook(net, pair):
    """TensorBoard images: the input, its label and the prediction, in colour."""
    image = read_image(pair[0])
    with Image.open(pair[1]) as img:
        label = np.asarray(img)
    segmenter = Segmenter(net)

    def hook(step, writer):
        pred = segmenter(image)
        with writer.as_default(step=step):
            tf.summary.image('input', image[None])
            tf.summary.image('label', colorize(label, num_classes=net.num_classes)[None])
            tf.summary.image('prediction', colorize(pred, num_classes=net.num_classes)[None])

    return hook


def validation_hook(net, pairs, *, ignore_label=255):
    """Periodic mIoU on `pairs`, printed and written to TensorBoard."""

    def hook(step, writer):
        cm = evaluate(
            net, pairs, num_classes=net.num_classes, ignore_label=ignore_label, progress=False
        )
        miou = scores(cm)[1]
        print(f'\nstep {step}: validation mIoU {miou * 100:.2f} on {len(pairs)} images')
        with writer.as_default(step=step):
            tf.summary.scalar('validation/mIoU', miou)

    return hook
