"""icnet_tf.training: mixed precision (compute dtypes, float16 loss scaling, checkpoints that
float32 tools load, 30-step loss curves against float32), and training across processes
(`--strategy multi_worker`): two worker processes on localhost share one snapshot folder.
Only the chief writes there (the other worker sees the folder read-only, so any write of it
would fail the run), the input is split over the workers so that two workers take the very
steps one process takes, and a run whose worker was killed resumes from the last checkpoint
when all workers are relaunched.

Resuming from damaged folders (`Trainer.restore`): a missing, empty, corrupt or stale state
file, a truncated or bit-flipped newest checkpoint, a state file behind the newest intact
checkpoint, no intact checkpoint at all; every worker's choice, the chief alone repairing;
and the read-only fallback of tools given a snapshot folder. Each checks that no byte the
user had is lost."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf

from bench.multiworker import free_ports
from converters.errors import Note
from converters.tf1_checkpoint import damage, newest_intact

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    from data import toycity

    out = str(tmp_path_factory.mktemp('toymw'))
    toycity.generate(
        out,
        num_train=8,
        num_val=2,
        height=64,
        width=128,
        num_videos_train=1,
        num_videos_val=0,
        video_frames=4,
        seed=4,
    )
    return out


# ------------------------------------------------------------------------ mixed precision
def test_precisions_name_compute_dtypes():
    from converters.errors import UserError
    from icnet_tf.training import PRECISIONS, compute_dtype

    assert {p: compute_dtype(p) for p in PRECISIONS} == {
        'float32': tf.float32,
        'mixed_bfloat16': tf.bfloat16,
        'mixed_float16': tf.float16,
    }
    with pytest.raises(UserError, match="unknown precision 'float16'"):
        compute_dtype('float16')


def tiny_trainer(snapshot_dir, precision, scale=1.0):
    """A conv + BN network trained on a fixed batch in `precision`; the loss times `scale`."""
    from icnet_tf.losses import TF1Momentum
    from icnet_tf.training import Trainer, compute_dtype
    from tests.test_network import Tiny

    net = Tiny(
        lambda n: n.feed('data').conv(3, 3, 4, 1, 1, name='c').batch_normalization(name='out'),
        seed=2,
    ).build()
    dtype = compute_dtype(precision)

    def loss_fn(batch):
        y = tf.cast(net(batch, training=True, compute_dtype=dtype), tf.float32)
        return scale * tf.reduce_mean(tf.square(y - 1.0)), {}

    trainer = Trainer(
        strategy=tf.distribute.get_strategy(),
        model=net,
        optimizer=TF1Momentum(0.1),
        variables=net.trainable_variables,
        loss_fn=loss_fn,
        snapshot_dir=str(snapshot_dir),
        save_every=1,
        precision=precision,
    )
    batch = tf.random.stateless_normal((2, 8, 8, 3), [1, 1])
    return net, trainer, batch


def test_float16_scales_the_loss_and_skips_a_step_whose_gradients_overflow(tmp_path):
    """mixed_float16: a dynamic loss scale starts at 2**15; a step whose scaled gradients
    overflow float16 leaves the weights alone, halves the scale and still counts as a step;
    then a step applies and keeps the scale. float32 and bfloat16 have no loss scale."""
    for precision in ('float32', 'mixed_bfloat16'):
        assert tiny_trainer(tmp_path / precision, precision)[1].loss_scaler is None
    # 2000 x the loss: its float16 gradients overflow at the first scales
    net, trainer, batch = tiny_trainer(tmp_path / 'f16', 'mixed_float16', scale=2e3)
    scale = float(trainer.loss_scaler.loss_scale)
    assert scale == 2.0**15
    weights = [v.numpy().copy() for v in net.trainable_variables]
    for step in range(1, 11):
        trainer.train_step(batch)
        assert trainer.step == step
        now = [v.numpy().copy() for v in net.trainable_variables]
        if all(np.array_equal(a, b) for a, b in zip(weights, now)):  # skipped: halved
            assert float(trainer.loss_scaler.loss_scale) == scale / 2, step
            scale /= 2
            continue
        assert float(trainer.loss_scaler.loss_scale) == scale  # applied: kept
        break
    assert 1 < step < 10, step  # some steps were skipped, then one applied
    assert np.isfinite(now[0]).all()


def test_float16_and_float32_checkpoints_resume_under_each_others_precision(tmp_path):
    """The checkpoint of a mixed_float16 run holds the float32 master weights and the
    optimizer under the same keys as a float32 run's, plus the loss scale: a float32 run
    resumes from it (same weights and momentum, the loss scale left unused), a float16 run
    resumes from it at its loss scale, and a float16 run resumes from a float32 checkpoint
    (the loss scale starting at 2**15)."""
    data = lambda batch: tf.data.Dataset.from_tensors(batch).repeat()  # noqa: E731
    net16, t16, batch = tiny_trainer(tmp_path / 'a', 'mixed_float16', scale=2e3)
    t16.fit(data(batch), 2)  # the first steps overflow: the scale is below 2**15 now
    scale = float(t16.loss_scaler.loss_scale)
    _, t32, _ = tiny_trainer(tmp_path / 'b', 'float32')
    t32.fit(data(batch), 2)

    def layout(prefix):
        reader = tf.train.load_checkpoint(prefix)
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
        return {k: (tuple(shapes[k]), dtypes[k]) for k in shapes if 'OBJECT_GRAPH' not in k}

    f16_keys, f32_keys = layout(t16.latest_checkpoint), layout(t32.latest_checkpoint)
    loss_scale = {k for k in f16_keys if k.startswith('optimizer/loss_scale/')}
    assert len(loss_scale) == 2 and scale < 2.0**15
    assert {k: v for k, v in f16_keys.items() if k not in loss_scale} == f32_keys

    resumed_net, resumed, _ = tiny_trainer(tmp_path / 'a', 'float32')
    assert resumed.restore().endswith('ckpt-2') and resumed.step == 2
    for a, b in zip(net16.variables, resumed_net.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(t16.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    again_net, again, _ = tiny_trainer(tmp_path / 'a', 'mixed_float16')
    assert again.restore().endswith('ckpt-2') and float(again.loss_scaler.loss_scale) == scale
    switched_net, switched, _ = tiny_trainer(tmp_path / 'b', 'mixed_float16')
    assert switched.restore().endswith('ckpt-2') and switched.step == 2
    assert float(switched.loss_scaler.loss_scale) == 2.0**15
    switched.fit(data(batch), 3)
    assert switched.step == 3


@pytest.fixture(scope='module')
def small_toy(tmp_path_factory):
    from data import toycity

    out = str(tmp_path_factory.mktemp('toyprec'))
    toycity.generate(
        out,
        num_train=6,
        num_val=1,
        height=224,
        width=320,
        num_videos_train=0,
        num_videos_val=0,
        seed=3,
    )
    return out


def icnet_precision_trainer(toy, snapshot_dir, precision, batch_size=2):
    from icnet_tf import ICNet_BN
    from icnet_tf.data import read_list, train_dataset
    from icnet_tf.losses import PolyLR, TF1Momentum
    from icnet_tf.training import Trainer, make_loss_fn, trained_variables

    net = ICNet_BN(num_classes=19, seed=1).build()
    trainer = Trainer(
        strategy=tf.distribute.get_strategy(),
        model=net,
        optimizer=TF1Momentum(PolyLR(1e-2, 100, 0.9), momentum=0.9),
        variables=trained_variables(net, True),
        loss_fn=make_loss_fn(
            net, ignore_label=255, weight_decay=1e-4, update_mean_var=True, precision=precision
        ),
        snapshot_dir=str(snapshot_dir),
        save_every=1000,
        precision=precision,
    )
    pairs = read_list(os.path.join(toy, 'list', 'train.txt'), toy)
    ds = train_dataset(
        pairs,
        preprocess=net.preprocess,
        batch_size=batch_size,
        crop_size=(193, 193),
        random_mirror=True,
        seed=0,
    )
    return net, trainer, ds


def test_a_mixed_precision_checkpoint_restores_into_a_float32_network(small_toy, tmp_path):
    """ICNet_BN trained under mixed_bfloat16: its checkpoint loads into a fresh float32
    ICNet_BN the way every tool loads weights (`net.load`, as --restore_from), holding exactly
    the trained float32 variables, and segments and exports from there."""
    from icnet_tf import ICNet_BN
    from icnet_tf.predict import Segmenter, read_image
    from icnet_tf.serving import export_saved_model

    net, trainer, ds = icnet_precision_trainer(small_toy, tmp_path / 'snap', 'mixed_bfloat16')
    trainer.fit(ds, 2)
    fresh = ICNet_BN(num_classes=19, seed=7).build()
    fresh.load(str(tmp_path / 'snap'), verbose=False)
    trained = net.variables_by_key()
    assert set(fresh.variables_by_key()) == set(trained)
    for key, var in fresh.variables_by_key().items():
        assert var.dtype == tf.float32
        np.testing.assert_array_equal(var.numpy(), trained[key].numpy(), err_msg=key)
    image = read_image(
        os.path.join(small_toy, 'leftImg8bit/val/toycity/toycity_000000_000019_leftImg8bit.png')
    )
    labels = Segmenter(fresh)(image)
    np.testing.assert_array_equal(labels, Segmenter(net)(image))
    module = export_saved_model(fresh, str(tmp_path / 'exported'), probabilities=False)
    served = tf.saved_model.load(str(tmp_path / 'exported')).signatures['serving_default']
    out = served(images=tf.constant(image[None]))['labels'].numpy()[0]
    assert module.num_classes == 19 and out.shape == labels.shape
    assert np.mean(out == labels) > 0.999  # the exported rewrites round differently


def loss_curve(toy, snapshot_dir, precision, steps, batch_size=2, round_input=False):
    """Total losses of `steps` training steps of ICNet_BN (`icnet_precision_trainer`)."""
    _, trainer, ds = icnet_precision_trainer(toy, snapshot_dir, precision, batch_size)
    if round_input:  # the control: float32 on images rounded to bfloat16, nothing else
        ds = ds.map(lambda x, y: (tf.cast(tf.cast(x, tf.bfloat16), tf.float32), y))
    batches = iter(ds)
    return np.array([trainer.train_step(next(batches))['loss'] for _ in range(steps)])


@pytest.mark.slow
def test_thirty_step_loss_curve_of_mixed_bfloat16_follows_float32(small_toy, tmp_path):
    """ICNet_BN from the same initialisation on the same 30 batches (toy city, 193x193 crops,
    batch 2, lr 1e-2): the mixed_bfloat16 loss curve against float32's.

    Tolerance. A randomly initialised ICNet_BN in training mode is chaotic: a perturbation of
    the size of one bfloat16 rounding (8 significant bits) grows through the layers and the
    steps (rounding only the input images to bfloat16, everything else float32, moves the
    logits by ~20% of their range and the loss curve by ~2% on average). So the bound is
    relative to that control run, float32 on bfloat16-rounded images: the mean relative
    distance of the mixed_bfloat16 curve to float32's may be at most twice the control's
    (measured: 0.96x), and both must be small (< 10%). Also: the first step (same weights,
    same batch: only the forward pass differs) within 3% (measured 1.1%), and the same
    progress (mean of the last 5 losses over the first 5 within 0.05 of float32's, ~0.44)."""
    f32 = loss_curve(small_toy, tmp_path / 'f32', 'float32', 30)
    control = loss_curve(small_toy, tmp_path / 'ctl', 'float32', 30, round_input=True)
    bf16 = loss_curve(small_toy, tmp_path / 'bf16', 'mixed_bfloat16', 30)
    dev = lambda curve: float(np.mean(np.abs(curve - f32) / f32))  # noqa: E731
    progress = lambda curve: curve[-5:].mean() / curve[:5].mean()  # noqa: E731
    report = f'float32 {f32.round(3)}\nbfloat16 {bf16.round(3)}\ncontrol {control.round(3)}'
    assert 0 < dev(control) < 0.1 and 0 < dev(bf16) < 0.1, report
    assert dev(bf16) <= 2 * dev(control), (dev(bf16), dev(control), report)
    assert abs(bf16[0] - f32[0]) / f32[0] < 0.03, report
    assert progress(f32) < 0.6 and abs(progress(bf16) - progress(f32)) < 0.05, report


@pytest.mark.slow
def test_first_mixed_float16_steps_follow_float32(small_toy, tmp_path):
    """mixed_float16 on CPU (TF 2.15 has no fast float16 convolutions on this CPU: a step costs
    ~50x float32's, so two steps only, batch 1): the first loss (same weights and batch) within
    0.5% of float32's (float16 has 11 significant bits, 8x bfloat16's precision; measured
    0.08%), finite, and the dynamic loss scale at work (2**15, halved for each skipped step)."""
    f32 = loss_curve(small_toy, tmp_path / 'f32', 'float32', 2, batch_size=1)
    net, trainer, ds = icnet_precision_trainer(small_toy, tmp_path / 'f16', 'mixed_float16', 1)
    batches = iter(ds)
    f16 = np.array([trainer.train_step(next(batches))['loss'] for _ in range(2)])
    assert np.isfinite(f16).all() and abs(f16[0] - f32[0]) / f32[0] < 0.005, (f16, f32)
    assert float(trainer.loss_scaler.loss_scale) in (2.0**13, 2.0**14, 2.0**15)
    assert trainer.step == 2


def readonly_view(folder, cmd):
    """`cmd` in a private mount namespace where `folder` is mounted read-only (needs
    util-linux's unshare; as non-root through a user namespace)."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    user = [] if os.geteuid() == 0 else ['--map-root-user']
    return ['unshare', '--mount', '--propagation', 'private', *user, 'sh', '-c', script] + [
        str(folder),
        *cmd,
    ]


class Workers:
    """Worker processes of one cluster (TF_CONFIG with localhost ports), each in its own
    process group with its own TMPDIR and log files; all killed on exit from the `with`."""

    def __init__(self, tmp_path, name, module, args, n=2, readonly=None, last_args=None):
        self.tmp_path, self.name = tmp_path, name
        cluster = {'worker': [f'localhost:{p}' for p in free_ports(n)]}
        self.procs, self.tmpdirs = [], []
        for i in range(n):
            tmpdir = tmp_path / f'{name}_tmp{i}'
            tmpdir.mkdir()
            self.tmpdirs.append(tmpdir)
            config = {'cluster': cluster, 'task': {'type': 'worker', 'index': i}}
            env = dict(ENV, TMPDIR=str(tmpdir), TF_CONFIG=json.dumps(config))
            cmd = [sys.executable, '-m', module, *args, '--strategy', 'multi_worker']
            if i == n - 1 and last_args:  # absl: the last value of a flag wins
                cmd += last_args
            if i > 0 and readonly is not None:
                cmd = readonly_view(readonly, cmd)
            with open(self._log(i, 'out'), 'w') as out, open(self._log(i, 'err'), 'w') as err:
                self.procs.append(
                    subprocess.Popen(
                        cmd, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True
                    )
                )

    def _log(self, i, kind):
        return self.tmp_path / f'{self.name}_w{i}.{kind}'

    def stdout(self, i):
        return self._log(i, 'out').read_text()

    def stderr(self, i):
        return self._log(i, 'err').read_text()

    def logs(self):
        return '\n'.join(
            f'--- worker {i} {kind}:\n' + self._log(i, kind).read_text()[-3000:]
            for i in range(len(self.procs))
            for kind in ('out', 'err')
        )

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def wait(self, timeout, which=None):
        """Return codes of the workers `which` (default all), failing after `timeout` s."""
        deadline = time.time() + timeout
        codes = []
        for i in range(len(self.procs)) if which is None else which:
            try:
                codes.append(self.procs[i].wait(max(0.1, deadline - time.time())))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(
                    f'{self.name}: worker {i} still running after {timeout} s\n' + self.logs()
                )
        return codes

    def kill(self, i=None):
        for j, p in enumerate(self.procs):
            if (i is None or i == j) and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def icnet_args(toy, snapshot, *extra):
    return [
        '--data_list',
        os.path.join(toy, 'list', 'train.txt'),
        '--data_dir',
        toy,
        '--batch_size',
        '2',
        '--input_size',
        '193,193',
        '--snapshot_dir',
        str(snapshot),
        *extra,
    ]


def leftovers(*folders):
    """Anything left in the workers' temporary folders."""
    return [str(p) for folder in folders for p in folder.iterdir()]


def checkpoint_series(snapshot):
    state = tf.train.get_checkpoint_state(str(snapshot))
    return [os.path.basename(p) for p in state.all_model_checkpoint_paths]


def event_pids(snapshot):
    """The process id in each TensorBoard event file name (the writer's)."""
    return sorted(int(n.split('.')[-3]) for n in os.listdir(snapshot / 'logs'))


def wait_for_checkpoint(workers, snapshot, step, timeout=400):
    """Poll until `snapshot`'s latest checkpoint is at least `step` (all workers alive)."""
    deadline = time.time() + timeout
    while True:
        latest = tf.train.latest_checkpoint(str(snapshot))
        if latest and int(latest.rsplit('-', 1)[1]) >= step:
            return latest
        assert time.time() < deadline, f'no ckpt-{step} after {timeout} s\n' + workers.logs()
        assert all(p.poll() is None for p in workers.procs), workers.logs()
        time.sleep(0.2)


@pytest.mark.slow
def test_two_workers_checkpoint_once_resume_and_survive_a_lost_worker(toy, tmp_path):
    """(1) A clean 2-worker run: one checkpoint series and one event file, both the chief's,
    nothing temporary left. (2) A worker that sees another snapshot folder is refused. (3) A
    second launch resumes from it; its chief is killed after a later checkpoint; the other
    worker stops by itself with a one-line error. (4) Relaunched, both workers resume from
    the last checkpoint and finish."""
    snap = tmp_path / 'snap'
    snap.mkdir()  # the second worker sees it read-only: any write there fails the run
    args = icnet_args(toy, snap, '--save_pred_every', '2')

    with Workers(tmp_path, 'a', 'icnet_tf.train', args + ['--num_steps', '4'], readonly=snap) as a:
        assert a.wait(600) == [0, 0], a.logs()
    chief, other = a.stdout(0), a.stdout(1)
    assert 'done: step 4' in chief and 'done: step 4' in other, a.logs()
    assert 'step/s' in chief and 'step/s' not in other  # progress: chief only
    assert 'worker:1: one of 2 workers' in other
    assert sorted(os.listdir(snap)) == [
        'checkpoint',
        'ckpt-2.data-00000-of-00001',
        'ckpt-2.index',
        'ckpt-4.data-00000-of-00001',
        'ckpt-4.index',
        'dataset.json',  # the dataset the checkpoints were trained on (icnet_tf.cli)
        'logs',
    ]
    assert checkpoint_series(snap) == ['ckpt-2', 'ckpt-4']
    assert event_pids(snap) == [a.pids[0]]  # summaries: chief only
    assert leftovers(*a.tmpdirs) == []
    iterations = 'optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE'
    assert tf.train.load_checkpoint(str(snap / 'ckpt-4')).get_tensor(iterations) == 4

    # a worker that does not see the chief's folder (no shared filesystem) is refused
    elsewhere = ['--snapshot_dir', str(tmp_path / 'elsewhere')]
    listing = sorted(os.listdir(snap))
    with Workers(tmp_path, 'x', 'icnet_tf.train', args, last_args=elsewhere) as x:
        assert x.wait(600) == [1, 1], x.logs()
    assert sorted(os.listdir(snap)) == listing and not (tmp_path / 'elsewhere').exists()
    for i in range(2):
        assert 'workers resumed from different steps (replica by replica: [4, 0])' in x.stderr(i)
        assert 'a folder on a filesystem shared by all hosts' in x.stderr(i)

    with Workers(
        tmp_path, 'b', 'icnet_tf.train', args + ['--num_steps', '200'], readonly=snap
    ) as b:
        wait_for_checkpoint(b, snap, 6)
        time.sleep(0.5)  # somewhere inside a later step
        b.kill(0)  # the chief
        assert b.wait(180, which=[1]) == [1], b.logs()
    for i in range(2):
        assert f'resumed from {snap}/ckpt-4 at step 4' in b.stdout(i), b.logs()
    # what a relaunch resumes from: the newest intact checkpoint (the state file's, or a newer
    # one if the chief died between a save's files and its state file)
    latest = newest_intact(str(snap), follow_state=False).prefix
    saved = int(latest.rsplit('-', 1)[1])
    error = [line for line in b.stderr(1).splitlines() if line.startswith('error: ')]
    assert len(error) == 1, b.logs()
    assert error[0].startswith('error: worker:1: lost another worker at step'), error
    assert f'the last checkpoint is {latest}: relaunch every worker' in error[0]
    assert not [p for p in b.tmpdirs[1].iterdir() if p.name.startswith('icnet_tf_')]

    final = saved + 2
    relaunch = args + ['--num_steps', str(final)]
    with Workers(tmp_path, 'c', 'icnet_tf.train', relaunch, readonly=snap) as c:
        assert c.wait(600) == [0, 0], c.logs()
    for i in range(2):
        out = c.stdout(i)
        assert f'resumed from {latest} at step {saved}' in out, c.logs()
        assert f'done: step {final}, checkpoint {snap}/ckpt-{final}' in out
    assert checkpoint_series(snap)[-1] == f'ckpt-{final}'
    assert tf.train.load_checkpoint(str(snap / f'ckpt-{final}')).get_tensor(iterations) == final
    assert set(event_pids(snap)) == {a.pids[0], b.pids[0], c.pids[0]}
    assert not any(n.endswith('_temp') for n in os.listdir(snap))
    assert leftovers(*c.tmpdirs) == []


# One process, two replicas on two logical CPUs: ICNet_BN's batch statistics are per replica
# (as in any MirroredStrategy), so this, not one device, is what 2 workers x 1 replica equal.
TWO_LOCAL_REPLICAS = textwrap.dedent("""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from icnet_tf import cli, train
    train.make_strategy = lambda name: tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    train.define_flags()
    cli.run(train.main)
""")


@pytest.mark.slow
# ICNet_BN against one process of 2 replicas (per-replica BN, bit-identical after 2 steps) was
# checked too; it is left out of the suite for time (about 3 minutes on 2 cores).
@pytest.mark.parametrize('model,steps', [('ICNet', 1)])
def test_two_workers_take_the_steps_of_one_process(toy, tmp_path, model, steps):
    """Same seed and global batch: 2 workers x 1 replica and one process end every step with
    the same weights, BN statistics and momentum (float tolerance). ICNet (no batch norm) is
    compared with one device, for one step (from scratch, without BN, its second step already
    overflows); ICNet_BN with one process of 2 replicas (per-replica BN), for two steps."""
    flags = [
        '--model',
        model,
        '--random_mirror',
        '--random_scale',
        '--update_mean_var',
        '--train_beta_gamma',
        '--learning_rate',
        '0.01',
        '--num_steps',
        str(steps),
        '--save_pred_every',
        '1',
    ]
    multi, single = tmp_path / 'multi', tmp_path / 'single'
    if model == 'ICNet':
        cmd = [sys.executable, '-m', 'icnet_tf.train', '--strategy', 'default']
        replicas = '1 replica(s)'
    else:
        cmd = [sys.executable, '-c', TWO_LOCAL_REPLICAS]
        replicas = '2 replica(s)'
    with (
        Workers(tmp_path, 'w', 'icnet_tf.train', icnet_args(toy, multi, *flags)) as w,
        open(tmp_path / 'one.out', 'w') as out,
        open(tmp_path / 'one.err', 'w') as err,
    ):
        one = subprocess.Popen(
            cmd + icnet_args(toy, single, *flags),
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            assert w.wait(600) == [0, 0], w.logs()
            assert one.wait(600) == 0, (tmp_path / 'one.err').read_text()[-3000:]
        finally:
            if one.poll() is None:
                os.killpg(one.pid, signal.SIGKILL)
    assert f'{replicas}, global batch 2' in (tmp_path / 'one.out').read_text()
    assert '2 replica(s), global batch 2' in w.stdout(0)
    for step in range(1, steps + 1):
        a = tf.train.load_checkpoint(str(multi / f'ckpt-{step}'))
        b = tf.train.load_checkpoint(str(single / f'ckpt-{step}'))
        keys = sorted(k for k in a.get_variable_to_shape_map() if 'OBJECT_GRAPH' not in k)
        assert keys == sorted(k for k in b.get_variable_to_shape_map() if 'OBJECT_GRAPH' not in k)
        for key in keys:  # float32 sums in another order: 1e-4 of the tensor's largest value
            x, y = a.get_tensor(key), b.get_tensor(key)
            assert np.isfinite(y).all(), key
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-4 * np.abs(y).max(), err_msg=key)
    # every step moved the weights by 10x that tolerance or more
    from icnet_tf import build_model

    key = 'conv6_cls/weights'
    path = f'net/params/{key}/.ATTRIBUTES/VARIABLE_VALUE'
    weights = [build_model(model, seed=1234).build().variables_by_key()[key].numpy()]
    for step in range(1, steps + 1):
        weights.append(tf.train.load_checkpoint(str(multi / f'ckpt-{step}')).get_tensor(path))
    for before, after in zip(weights, weights[1:]):
        assert np.abs(after - before).max() > 1e-3 * np.abs(before).max()


@pytest.mark.slow
def test_flownet_pretraining_runs_on_two_workers(toy, tmp_path):
    snap = tmp_path / 'flow'
    snap.mkdir()
    args = [
        '--data_list',
        f'{toy}/list/video_train.txt',
        '--data_dir',
        toy,
        '--videos_json',
        f'{toy}/videos.json',
        '--max_key_distance',
        '2',
        '--batch_size',
        '2',
        '--num_steps',
        '2',
        '--save_pred_every',
        '1',
        '--snapshot_dir',
        str(snap),
    ]
    with Workers(tmp_path, 'flow', 'dff_tf.train_flownet', args, readonly=snap) as w:
        assert w.wait(600) == [0, 0], w.logs()
    assert '2 replica(s), global batch 2' in w.stdout(0)
    assert 'done: step 2' in w.stdout(1) and 'step/s' not in w.stdout(1)
    assert checkpoint_series(snap) == ['ckpt-1', 'ckpt-2']
    assert event_pids(snap) == [w.pids[0]]
    assert leftovers(*w.tmpdirs) == []


# ------------------------------------------------------------- resuming from damaged folders
def snapshot_of(folder):
    """{name: bytes} of every file directly in `folder`."""
    return {
        n: (folder / n).read_bytes() for n in sorted(os.listdir(folder)) if (folder / n).is_file()
    }


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny training folder with ckpt-2, ckpt-4, ckpt-6 and its state file (copied per test)."""
    from tests.test_train import tiny_trainer

    folder = tmp_path_factory.mktemp('trained') / 'snap'
    _, _, trainer, data = tiny_trainer(folder)
    trainer.fit(data, 6)
    return folder


@pytest.fixture
def snap(trained, tmp_path):
    import shutil

    copy = tmp_path / 'snap'
    shutil.copytree(trained, copy)
    return copy


def resume(snap, capfd, **kwargs):
    """A new tiny Trainer over `snap`: (restored prefix, step, its stderr lines, trainer)."""
    from tests.test_train import tiny_trainer

    _, _, trainer, data = tiny_trainer(snap)
    capfd.readouterr()
    restored = trainer.restore(**kwargs)
    return restored, trainer.step, capfd.readouterr().err.strip().splitlines(), (trainer, data)


def damage_data(prefix, how):
    path = f'{prefix}.data-00000-of-00001'
    data = bytearray(open(path, 'rb').read())
    if how == 'truncate':
        data = data[: len(data) // 2]
    else:  # same size, one byte flipped: only TensorFlow's checksum sees it
        data[len(data) // 3] ^= 0xFF
    with open(path, 'wb') as f:
        f.write(bytes(data))


@pytest.mark.parametrize('state', ['garbage', 'empty', 'missing', 'stale'])
def test_a_bad_state_file_resumes_from_the_newest_intact_checkpoint(snap, capfd, state):
    """A state file that is corrupt, empty, missing or names a checkpoint that is not there:
    training resumes from ckpt-6 with one note, keeps the bad state file aside (same bytes),
    writes a new one, and later saves never touch the checkpoints it had."""
    bad = {
        'garbage': b'\x00\xffnot a state{{',
        'empty': b'',
        'stale': b'model_checkpoint_path: "ckpt-9"\n',
    }
    if state == 'missing':
        os.remove(snap / 'checkpoint')
    else:
        (snap / 'checkpoint').write_bytes(bad[state])
    before = snapshot_of(snap)
    restored, step, err, (trainer, data) = resume(snap, capfd)
    assert restored == f'{snap}/ckpt-6' and step == 6
    assert len(err) == 1 and err[0].startswith(f'note: {snap}/checkpoint: '), err
    assert err[0].endswith(
        f'using {snap}/ckpt-6, the newest intact checkpoint'
        + ('' if state == 'missing' else f'; kept aside: {snap}/checkpoint.damaged')
    ), err
    after = snapshot_of(snap)
    if state != 'missing':
        assert after.pop('checkpoint.damaged') == bad[state]
    assert tf.train.latest_checkpoint(str(snap)) == f'{snap}/ckpt-6'  # a valid state file again
    before.pop('checkpoint', None), after.pop('checkpoint')
    assert after == before  # every checkpoint byte-identical
    trainer.fit(data, 8)
    assert trainer.latest_checkpoint == f'{snap}/ckpt-8'
    assert {n: b for n, b in snapshot_of(snap).items() if n in before} == before


@pytest.mark.parametrize('how', ['truncate', 'flip'])
def test_a_damaged_newest_checkpoint_falls_back_and_is_kept_aside(snap, capfd, how):
    """ckpt-6 damaged (truncated: seen from its index; one byte flipped: TensorFlow's
    checksum): resume from ckpt-4, one note naming the damaged file, ckpt-6's files renamed
    *.damaged with their bytes, and the new ckpt-6 written beside them."""
    damage_data(snap / 'ckpt-6', how)
    before = snapshot_of(snap)
    restored, step, err, (trainer, data) = resume(snap, capfd)
    assert restored == f'{snap}/ckpt-4' and step == 4
    damaged = f'{snap}/ckpt-6.data-00000-of-00001' if how == 'truncate' else f'{snap}/ckpt-6'
    assert len(err) == 1 and err[0].startswith(f'note: {damaged}: '), err
    assert f'using {snap}/ckpt-4, the newest intact checkpoint; kept aside: ' in err[0]
    trainer.fit(data, 6)
    after = snapshot_of(snap)
    for name in ('ckpt-6.index', 'ckpt-6.data-00000-of-00001'):
        assert after[name + '.damaged'] == before[name]  # the damaged bytes, kept
    assert after['ckpt-6.data-00000-of-00001'] != before['ckpt-6.data-00000-of-00001']
    assert damage(f'{snap}/ckpt-6') is None  # a new, intact ckpt-6 beside them
    assert {n: after[n] for n in before if n.startswith(('ckpt-2', 'ckpt-4'))} == {
        n: b for n, b in before.items() if n.startswith(('ckpt-2', 'ckpt-4'))
    }
    _, step, err, _ = resume(snap, capfd)
    assert step == 6 and err == []  # the repaired folder resumes without a word


def test_a_checkpoint_newer_than_the_state_file_is_resumed_from(snap, capfd):
    """Killed after a save's files, before its state file: the state file names ckpt-4 but
    ckpt-6 is intact; training resumes from ckpt-6 (a later save of ckpt-6 would overwrite
    it otherwise) and the state file lists both again."""
    (snap / 'checkpoint').write_text(
        'model_checkpoint_path: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-2"\n'
        'all_model_checkpoint_paths: "ckpt-4"\n'
    )
    restored, step, err, _ = resume(snap, capfd)
    assert restored == f'{snap}/ckpt-6' and step == 6
    assert err == [
        f'note: {snap}/checkpoint: names ckpt-4, older than the intact ckpt-6: using '
        f'{snap}/ckpt-6, the newest intact checkpoint'
    ]
    state = tf.train.get_checkpoint_state(str(snap))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        'ckpt-2',
        'ckpt-4',
        'ckpt-6',
    ]


def test_no_intact_checkpoint_is_refused_unless_asked(snap, capfd):
    from converters.errors import UserError

    for step in (2, 4, 6):
        damage_data(snap / f'ckpt-{step}', 'truncate')
    before = snapshot_of(snap)
    with pytest.raises(UserError) as e:
        resume(snap, capfd)
    assert str(e.value).startswith(
        f'{snap}: no intact checkpoint to resume from: {snap}/ckpt-6.data-00000-of-00001: truncated'
    )
    assert '(and 2 more); pass --restart_over_damaged' in str(e.value)
    assert snapshot_of(snap) == before  # refused: nothing touched

    restored, step, err, (trainer, data) = resume(snap, capfd, restart_over_damaged=True)
    assert restored is None and step == 0
    assert len(err) == 1 and 'training starts again from step 0' in err[0], err
    after = snapshot_of(snap)
    assert {n[: -len('.damaged')]: b for n, b in after.items()} == before  # all kept aside
    trainer.fit(data, 2)
    assert snapshot_of(snap)['ckpt-2.index.damaged'] == before['ckpt-2.index']


def test_a_snapshot_dir_that_is_a_file_is_one_line(tmp_path, capfd):
    from converters.errors import UserError

    (tmp_path / 'file').write_text('mine')
    with pytest.raises(UserError, match=r'^--snapshot_dir .*file: exists and is a file'):
        resume(tmp_path / 'file', capfd)
    assert (tmp_path / 'file').read_text() == 'mine'


def test_every_worker_picks_the_same_checkpoint_and_only_the_chief_writes(snap, capfd):
    """A non-chief worker of a multi-worker run makes the chief's choice from the same files
    and changes nothing; the chief then repairs; a worker arriving after sees the same."""
    from tests.test_train import tiny_trainer

    damage_data(snap / 'ckpt-6', 'truncate')
    (snap / 'checkpoint').write_bytes(b'garbage')
    before = snapshot_of(snap)
    _, _, worker, _ = tiny_trainer(snap)
    worker.is_chief = False
    assert worker.restore() == f'{snap}/ckpt-4' and worker.manager is None
    assert snapshot_of(snap) == before
    restored, _, _, _ = resume(snap, capfd)  # the chief
    assert restored == f'{snap}/ckpt-4' and snapshot_of(snap) != before
    _, _, late, _ = tiny_trainer(snap)
    late.is_chief = False
    assert late.restore() == f'{snap}/ckpt-4'


def test_tools_reading_a_folder_take_its_newest_intact_checkpoint_read_only(snap):
    """`--restore_from <snapshot folder>` in inference, evaluate, export, DFF: the newest
    intact checkpoint, one note, nothing renamed or written."""
    from converters.tf_checkpoint import read, resolve_checkpoint

    damage_data(snap / 'ckpt-6', 'truncate')
    before = snapshot_of(snap)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('default', Note)  # as the command-line tools show notes
        assert resolve_checkpoint(str(snap)) == f'{snap}/ckpt-4'
        weights, _ = read(str(snap))
    assert set(weights) == {'c', 'out'}
    said = [str(w.message) for w in caught if issubclass(w.category, Note)]
    assert len(said) == 1, said
    assert said[0].startswith(
        f"{snap}/ckpt-6.data-00000-of-00001: truncated or not this checkpoint's data "
    )
    assert said[0].endswith(f': using {snap}/ckpt-4, the newest intact checkpoint')
    assert snapshot_of(snap) == before
