"""A custom training loop shared by `icnet_tf.train` and `dff_tf.train`.

What it owns: the `tf.distribute` strategy, the train step (gradients of the caller's loss over
the caller's variable list, aggregated across replicas by the optimizer), checkpoints
(`tf.train.CheckpointManager`, net + optimizer incl. its step and slots, resumed
automatically), a NaN stop that keeps the last good checkpoint, a progress bar with step/s and
ETA, and TensorBoard scalars. What the caller owns: the model, the loss (`loss_fn(batch) ->
(replica loss, {name: scalar})`, run in replica context, returning this replica's share of the
global loss) and optional periodic hooks (validation, image summaries).

Precision (`precision=`, the training CLIs' `--precision`): 'float32', 'mixed_bfloat16' or
'mixed_float16'. Mixed precision keeps float32 variables (the master weights: what the
optimizer updates and checkpoints hold, under the same names, so float32 tools load them) and
runs the network in the 16-bit compute dtype (`Network.__call__(compute_dtype=...)`), with
the logits cast to float32 for the softmax cross entropy and the loss, and batch-norm
statistics in float32. 'mixed_float16' also scales the loss (a dynamic loss scale, Keras'
`LossScaleOptimizer`: it starts at 2**15, halves and skips the update when a gradient
overflows, doubles after 2000 good steps); the scale is saved with the optimizer. A run may
resume under another precision: a float16 checkpoint under float32 or bfloat16 (its loss scale
is left unused), a float32 or bfloat16 one under float16 (the scale starts at 2**15).

Per step the loop does no Python work beyond starting the compiled step and reading one
flag: the loss terms stay tensors, the non-finite check is computed inside the step, and the
TensorBoard scalars are written by one compiled function; the progress bar converts values
only when it prints. The input pipeline (`icnet_tf.data.train_dataset`) decodes and augments
in parallel threads and prefetches, so the next batch is ready when a step ends.

Checkpoints are crash-safe: TF writes a new checkpoint's data and index files under new names
and only then rewrites the small `checkpoint` state file (atomic rename), so a kill at any
moment leaves the previous checkpoint intact; at most `save_every` steps are lost. Resuming
takes the newest intact checkpoint, not blindly the state file's: a missing or corrupt state
file, or a damaged newest checkpoint (truncated, bad checksum), falls back to the newest
intact one with a one-line note, and the damaged files are renamed aside, never overwritten
(`Trainer.restore`).

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
import functools
import gc
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from converters.errors import UserError, WeightsFileError
from converters.tf1_checkpoint import damage, newest_intact
from icnet_tf.losses import segmentation_loss
from icnet_tf.metrics import evaluate, scores
from icnet_tf.palette import colorize
from icnet_tf.predict import Segmenter, read_image
from icnet_tf.progress import Progress  # also re-exported: the tools' progress bar
from icnet_tf.rewrites import training_chain


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


# --precision: name -> (compute dtype, loss scaling)
PRECISIONS = {
    'float32': (tf.float32, False),
    'mixed_bfloat16': (tf.bfloat16, False),
    'mixed_float16': (tf.float16, True),
}


def compute_dtype(precision):
    """The network's compute dtype under `precision` (a name of PRECISIONS)."""
    if precision not in PRECISIONS:
        raise UserError(
            f'unknown precision {precision!r} (float32, mixed_float16 or mixed_bfloat16)'
        )
    return PRECISIONS[precision][0]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class BadTrainingFile(UserError):
    """A file of a training sample cannot be read (found after the input pipeline failed)."""


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


# What the input pipeline raises for a file it cannot use (decoding errors, a file removed,
# a Python decoder's exception inside `tf.numpy_function`).
_INPUT_ERRORS = (
    tf.errors.InvalidArgumentError,
    tf.errors.DataLossError,
    tf.errors.NotFoundError,
    tf.errors.UnknownError,
)


class _Quiet:
    """The progress bar of a non-chief worker: prints nothing."""

    def update(self, step, values, force=False):
        pass

    def close(self):
        pass


def _checkpoint_files(prefix):
    """The files of the checkpoint `prefix`: its `.index` and `.data-NNNNN-of-NNNNN`."""
    folder, base = os.path.split(prefix)
    try:
        names = os.listdir(folder or '.')
    except OSError:
        return []
    pattern = re.compile(re.escape(base) + r'(\.index|\.data-\d{5}-of-\d{5})')
    return sorted(os.path.join(folder, n) for n in names if pattern.fullmatch(n))


def _keep_aside(paths):
    """Rename each file to `<file>.damaged` (`.damaged.1`, ... when taken): its bytes stay, and
    no later save of the same name can overwrite them. Returns the new names."""
    kept = []
    for path in paths:
        target, n = f'{path}.damaged', 0
        while os.path.lexists(target):
            n += 1
            target = f'{path}.damaged.{n}'
        os.rename(path, target)
        kept.append(target)
    return kept


def _write_state(folder, prefix, old_state=None):
    """A `checkpoint` state file naming `prefix` (relative, as CheckpointManager writes it),
    through a temporary file and a rename. The checkpoints a valid old state file listed stay
    listed (so `keep` rotates them as before); otherwise only `prefix` is listed, and older
    checkpoints are never deleted by rotation."""
    from google.protobuf import text_format
    from tensorflow.python.training.checkpoint_state_pb2 import CheckpointState

    name = os.path.basename(prefix)
    now = time.time()
    state = CheckpointState(model_checkpoint_path=name, last_preserved_timestamp=now - 1)
    if old_state is not None:
        listed = list(old_state.all_model_checkpoint_paths)
        stamps = list(old_state.all_model_checkpoint_timestamps) or [0.0] * len(listed)
        keep = [
            (os.path.basename(p), t)
            for p, t in zip(listed, stamps)
            if os.path.basename(p) != name and _checkpoint_files(os.path.join(folder, p))
        ]
        state.last_preserved_timestamp = old_state.last_preserved_timestamp
    else:
        keep = []
    for p, t in keep + [(name, now)]:
        state.all_model_checkpoint_paths.append(p)
        state.all_model_checkpoint_timestamps.append(t)
    path = os.path.join(folder, 'checkpoint')
    tmp = os.path.join(folder, f'.checkpoint.{os.getpid()}.tmp')
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text_format.MessageToString(state))
    os.replace(tmp, path)


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
        precision='float32',
    ):
        compute_dtype(precision)  # a one-line error for an unknown name
        self.precision = precision
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
        self._loss_scaler = None  # float16: made on first use (`loss_scaler`)
        self.checkpoint = tf.train.Checkpoint(net=model, optimizer=optimizer)
        self.log_dir = log_dir or os.path.join(snapshot_dir, 'logs')
        self.keep = keep
        self._manager = None  # made after restore() has repaired the folder (chief only)
        self._restored = False
        self._latest = None  # the last checkpoint restored or saved (the chief's path)
        self._written = set()  # checkpoint prefixes this Trainer saved
        self._writer = None
        self._step_fn = None
        self._summary_fn = None

    @property
    def loss_scaler(self):
        """The dynamic loss scale of 'mixed_float16' (Keras' `LossScaleOptimizer` around the
        optimizer), None under the other precisions. Made on first use, after `restore()`: its
        state is a dependency of the optimizer, restored from a float16 checkpoint when it is
        made, and absent from a float32 one (which must still restore)."""
        if PRECISIONS[self.precision][1] and self._loss_scaler is None:
            with self.strategy.scope():
                self._loss_scaler = tf.keras.mixed_precision.LossScaleOptimizer(self.optimizer)
        return self._loss_scaler

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
    def manager(self):
        """The chief's `tf.train.CheckpointManager` over snapshot_dir (None on other workers);
        made on first use, after `restore()` has repaired the folder's state file."""
        if self._manager is None and self.is_chief:
            self._manager = tf.train.CheckpointManager(
                self.checkpoint, self.snapshot_dir, max_to_keep=self.keep
            )
        return self._manager

    @property
    def latest_checkpoint(self):
        """The last checkpoint restored or saved (the chief's path), or None."""
        return self._latest

    def restore(self, *, restart_over_damaged=False):
        """Resume from the newest intact checkpoint in snapshot_dir; returns its path or None.

        The checkpoint is the newest one whose files are intact (the index parses, every
        tensor lies within its data file: `converters.tf1_checkpoint.newest_intact`) and that
        restores (TensorFlow checks each tensor's checksum), whatever the `checkpoint` state
        file says: a save killed after writing its files but before the state file resumes
        from those files. When the state file is missing, corrupt or names another checkpoint,
        or newer checkpoints are damaged, one `note:` line on stderr says what was used and
        why, and the chief repairs the folder, losing no byte: damaged checkpoints newer than
        the one used (which later saves of the same numbers would overwrite) and a corrupt or
        stale state file are renamed `<file>.damaged` (`.damaged.1`, ... if taken), and a new
        state file naming the checkpoint used is written (temporary file, then rename).
        Checkpoints are there but none is intact: UserError, unless `restart_over_damaged`
        (they are then all renamed aside and training starts from step 0).

        Every worker makes the same choice from the same files (only the chief renames or
        writes; a file renamed meanwhile is just as damaged to the others), and with several
        workers all check that they restored the same step (UserError otherwise).
        """
        if self._loss_scaler is not None:  # see `loss_scaler`
            raise RuntimeError('Trainer.restore() must come before the first step')
        self._restored = True
        folder = self.snapshot_dir
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UserError(f'--snapshot_dir {folder}: exists and is a file, not a directory')
        found = None
        if os.path.isdir(folder):
            found = newest_intact(folder, follow_state=False, verify=self._restore_from)
        latest = found.prefix if found else None
        if found and latest is None and found.prefixes and not restart_over_damaged:
            more = f' (and {len(found.damaged) - 1} more)' if len(found.damaged) > 1 else ''
            raise UserError(
                f'{folder}: no intact checkpoint to resume from: {found.damaged[0][1]}{more}; '
                'pass --restart_over_damaged to keep them aside (renamed *.damaged) and train '
                'from step 0, or choose another --snapshot_dir'
            )
        if found and (found.damaged or found.state_problem):
            self._repair(found)
        self._manager = None  # (re)made from the repaired state file
        self._latest = latest
        if self.num_workers > 1:
            self._check_same_step()
        return latest

    def _restore_from(self, prefix):
        """Restore `prefix` (a candidate of `newest_intact`): WeightsFileError if its bytes are
        damaged (a checksum TensorFlow verifies does not match) or its files went away,
        UserError if it is another model's."""
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel('ERROR')  # a failed restore's "deleted with unrestored values" chatter
        try:
            try:
                # A float16 checkpoint's loss scale is left unused under another precision.
                self.checkpoint.restore(prefix).assert_existing_objects_matched().expect_partial()
                return
            except (AssertionError, ValueError, tf.errors.OpError) as e:
                text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', str(e))
                reason = ' '.join(text.split())[:300] or type(e).__name__
                corrupt = (
                    getattr(e, 'error_code', None) == tf.errors.DATA_LOSS
                    or 'Checksum does not match' in text
                )
                gone = isinstance(e, tf.errors.NotFoundError) and damage(prefix)
            gc.collect()  # the failed restore's objects go while the logger is quiet
        finally:
            logger.setLevel(level)
        if corrupt or gone:
            raise WeightsFileError(f'{prefix}: damaged checkpoint ({gone or reason})')
        raise UserError(
            f'{prefix}: cannot resume from this checkpoint (another model, num_classes or '
            f'filter_scale?): {reason}; use another --snapshot_dir'
        )

    def _repair(self, found):
        """Say what `restore` used instead and why; on the chief, keep the damaged files and a
        bad state file aside and write a state file naming the checkpoint used."""
        kept = []
        # a state file that parses and names a checkpoint that is there is rewritten (its list
        # of checkpoints kept); a corrupt or stale one is kept aside
        state_ok = (
            found.state is not None
            and found.prefix is not None
            and 'names checkpoint' not in (found.state_problem or '')
        )
        if self.is_chief:
            for prefix, _ in found.damaged:
                kept += _keep_aside(_checkpoint_files(prefix))
            if found.state_file and not state_ok:
                kept += _keep_aside([found.state_file])
            if found.prefix:
                _write_state(self.snapshot_dir, found.prefix, found.state if state_ok else None)
        aside = f'; kept aside: {", ".join(kept)}' if kept else ''
        if found.prefix:
            message = found.note()
        elif found.prefixes:
            damaged = '; '.join(reason for _, reason in found.damaged)
            message = (
                f'{self.snapshot_dir}: no intact checkpoint ({damaged}); '
                '--restart_over_damaged: training starts again from step 0'
            )
        else:
            message = f'{found.state_problem}; no checkpoint there: training starts from step 0'
        print(f'note: {message}{aside}', file=sys.stderr, flush=True)

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
            target = os.path.join(self.snapshot_dir, f'ckpt-{step}')
            if target not in self._written and _checkpoint_files(target):
                raise UserError(
                    f'{target}: a checkpoint of this number is already there (this run did '
                    'not write it): not overwritten; resume with restore() or choose another '
                    '--snapshot_dir'
                )
            self._latest = self.manager.save(checkpoint_number=step)
            self._written.add(self._latest)
            return self._latest
        scratch = tempfile.mkdtemp(prefix=f'icnet_tf_{self.worker.replace(":", "")}_ckpt_')
        try:
            manager = tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1)
            manager.save(checkpoint_number=step)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self._latest = os.path.join(self.snapshot_dir, f'ckpt-{step}')
        return self._latest

    def _replica_step(self, batch):
        scaler = self.loss_scaler
        with tf.GradientTape() as tape:
            loss, parts = self.loss_fn(batch)
            loss = tf.cast(loss, tf.float32)
            target = loss if scaler is None else scaler.get_scaled_loss(loss)
        grads = tape.gradient(target, self.variables)
        if scaler is None:
            self.optimizer.apply_gradients(zip(grads, self.variables))
        else:  # unscaled; the update is skipped (and the scale halved) on an overflow
            grads = scaler.get_unscaled_gradients(grads)
            scaler.apply_gradients(zip(grads, self.variables))
        return dict(parts, loss=loss)

    def _step(self, batch):
        """One distributed step: `(global loss terms, all finite)` as tensors."""
        if self._step_fn is None:
            self.loss_scaler  # noqa: B018 (made before tracing: it creates variables)

            @tf.function
            def step_fn(batch):
                per_replica = self.strategy.run(self._replica_step, args=(batch,))
                values = {
                    k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                    for k, v in per_replica.items()
                }
                finite = tf.reduce_all(
                    [tf.reduce_all(tf.math.is_finite(v)) for v in values.values()]
                )
                return values, finite

            self._step_fn = step_fn
        return self._step_fn(batch)

    def train_step(self, batch):
        """One distributed step; returns the global loss terms as Python floats."""
        values, _ = self._step(batch)
        return {k: float(v) for k, v in values.items()}

    def _write_summaries(self, values, step, learning_rate):
        """The step's scalars to TensorBoard, by one compiled function (traced once)."""
        if self._summary_fn is None or self._summary_fn[0] is not learning_rate:

            @tf.function
            def write(values, step):
                with self.writer.as_default(step=step):
                    for name, value in values.items():
                        tf.summary.scalar(f'loss/{name}', value)
                    if learning_rate is not None:
                        tf.summary.scalar('learning_rate', learning_rate(step - 1))
                    if self.loss_scaler is not None:
                        tf.summary.scalar('loss_scale', self.loss_scaler.loss_scale)

            self._summary_fn = learning_rate, write
        self._summary_fn[1](values, tf.constant(step, tf.int64))

    def distribute(self, dataset):
        """A distributed iterator over `dataset`: a `tf.data.Dataset` of global batches, or a
        function `input_context -> dataset of per-replica batches` (one input pipeline per
        worker; see `icnet_tf.data.shard_samples`)."""
        if isinstance(dataset, tf.data.Dataset):
            return iter(self.strategy.experimental_distribute_dataset(dataset))
        return iter(self.strategy.distribute_datasets_from_function(dataset))

    def fit(
        self,
        dataset,
        num_steps,
        *,
        hooks=(),
        hook_every=0,
        learning_rate=None,
        samples=None,
        skip_bad_files=False,
    ):
        """Train until the optimizer step reaches `num_steps`.

        `dataset`: see `distribute()`. `hooks` are called as `hook(step, writer)` every
        `hook_every` steps and at the end, on every worker (non-chief workers get a no-op
        writer and their printing is dropped). Raises TrainingDiverged (after keeping the last
        good checkpoint) on a non-finite loss, WorkerLost when another worker is gone.
        Calls `restore()` first if the caller has not.

        A file the input pipeline cannot read (a truncated or corrupt image that passed the
        header checks, a file removed meanwhile): `samples` (`icnet_tf.data.SampleFiles`)
        finds it (`find_bad`), and training stops with `BadTrainingFile`, one line naming the
        list line and the file, the last checkpoint kept; with `skip_bad_files` the samples of
        the bad files are left out (`samples.exclude`; `dataset` must then be a function that
        builds the pipeline from `samples.kept`), said on stderr, the pipeline is built again
        and training goes on; the end of the run lists what was skipped. Without `samples`
        such a failure is a UserError with TensorFlow's reason.
        """
        if not self._restored:
            self.restore()
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
        bad_input = functools.partial(
            self._bad_input, dataset=dataset, samples=samples, skip=skip_bad_files
        )
        try:
            return self._fit(
                dataset, start, num_steps, hooks, hook_every, learning_rate, progress, bad_input
            )
        except KeyboardInterrupt:
            progress.close()
            raise KeyboardInterrupt(
                f'at step {self.step}; the last checkpoint is {self.latest_checkpoint}: the same '
                'command resumes from it'
            ) from None
        except _LOST_WORKER_ERRORS as e:
            if self.num_workers <= 1:
                raise
            progress.close()
            reason = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', str(e).strip())
            # what a relaunch resumes from: the chief's newest intact checkpoint on disk
            on_disk = None
            if os.path.isdir(self.snapshot_dir):
                on_disk = newest_intact(self.snapshot_dir, follow_state=False).prefix
            raise WorkerLost(
                f'{self.worker}: lost another worker at step {self.step} '
                f'({type(e).__name__}: {reason.splitlines()[0][:200]}); the last '
                f'checkpoint is {on_disk}: relaunch every worker with the same '
                'flags to resume from it'
            ) from None

    def _fit(
        self, dataset, start, num_steps, hooks, hook_every, learning_rate, progress, bad_input
    ):
        iterator = self.distribute(dataset)
        last_saved = self.latest_checkpoint
        values = {}
        step = start
        while step < num_steps:
            try:
                batch = next(iterator)
            except _INPUT_ERRORS as e:
                iterator = bad_input(e, progress=progress, last_saved=last_saved)
                continue
            values, finite = self._step(batch)
            step += 1  # = self.step (the optimizer counts skipped float16 steps too)
            if not finite:
                progress.close()
                kept = last_saved or 'none (no checkpoint was written yet)'
                raise TrainingDiverged(
                    f'loss is {float(values["loss"])} at step {step}: training '
                    f'stopped; last good checkpoint kept: {kept}'
                )
            self._write_summaries(values, step, learning_rate)
            progress.update(step, values, force=step == num_steps)
            if step % self.save_every == 0 or step == num_steps:
                last_saved = self.save()
            if hooks and hook_every and (step % hook_every == 0 or step == num_steps):
                with self._hook_output():
                    for hook in hooks:
                        hook(step, self.writer)
        progress.close()
        self.writer.flush()
        skipped = bad_input.keywords['samples'].skipped if bad_input.keywords['samples'] else []
        if skipped:
            more = f'; and {len(skipped) - 10} more' if len(skipped) > 10 else ''
            print(
                f'skipped {len(skipped)} sample(s) with a bad file (--skip_bad_files): '
                + '; '.join(str(f) for f in skipped[:10])
                + more,
                file=sys.stderr,
                flush=True,
            )
        return {k: float(v) for k, v in values.items()}

    def _bad_input(self, error, *, dataset, samples, skip, progress, last_saved):
        """The input pipeline failed: find the bad file and stop, or skip it and return a new
        iterator (see `fit`)."""
        kept = last_saved or 'none (no checkpoint was written yet)'
        step = self.step + 1
        if samples is None:
            progress.close()
            text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', str(error))
            raise UserError(
                f'the training input failed at step {step} ({" ".join(text.split())[:300]}); '
                f'training stopped; last checkpoint kept: {kept}'
            )
        print(
            f'\nstep {step}: the input pipeline failed to read a file; decoding the files of '
            f'{len(samples.kept)} training samples to find it',
            flush=True,
        )
        bad = samples.find_bad()
        if not bad:
            progress.close()
            text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', str(error))
            raise UserError(
                f'the training input failed at step {step} ({" ".join(text.split())[:300]}), '
                f'and every file of the training samples decodes; training stopped; last '
                f'checkpoint kept: {kept}'
            )
        if not skip:
            progress.close()
            more = f' (and {len(bad) - 1} more sample(s) with a bad file)' if len(bad) > 1 else ''
            raise BadTrainingFile(
                f'{bad[0][1]}{more}; training stopped at step {self.step}; last checkpoint '
                f'kept: {kept}; fix or remove it, or pass --skip_bad_files to train without '
                'such samples'
            )
        samples.exclude(bad)
        for _, file in bad:
            print(f'skipping a sample (--skip_bad_files): {file}', file=sys.stderr, flush=True)
        return self.distribute(dataset)

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


def make_loss_fn(net, *, ignore_label, weight_decay, update_mean_var, precision='float32'):
    """The replica loss of one (images, labels) batch: BN in training mode, the network's
    heads weighted by `net.loss_weights` (ICNet_BN: LAMBDA1..3 on its three heads); the
    network runs in the compute dtype of `precision` with the exact rewrites it declares for
    training (`net.training_rewrites`), the loss in float32."""
    head_weights = net.loss_weights
    dtype = compute_dtype(precision)
    chain = training_chain(net)

    def loss_fn(batch):
        images, labels = batch
        outputs = net(
            images,
            training=True,
            update_stats=update_mean_var,
            outputs=list(head_weights),
            compute_dtype=dtype,
            chain_class=chain,
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
