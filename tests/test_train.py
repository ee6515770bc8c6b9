"""Training: learning, BN switches, resume, NaN stop, kill -9 safety, 2-replica equivalence."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from icnet_tf import ICNet_BN
from icnet_tf.data import read_list, train_dataset
from icnet_tf.losses import PolyLR, TF1Momentum
from icnet_tf.network import caffe_bgr_input
from icnet_tf.training import Trainer, TrainingDiverged, make_loss_fn, trained_variables
from tests.test_network import Tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    from data import toycity

    out = tmp_path_factory.mktemp('toy')
    toycity.generate(
        str(out),
        num_train=6,
        num_val=2,
        height=224,
        width=320,
        num_videos_train=0,
        num_videos_val=0,
        seed=3,
    )
    return str(out)


def icnet_trainer(
    toy, tmp_path, *, update_mean_var=False, train_beta_gamma=False, lr=1e-2, num_classes=19
):
    net = ICNet_BN(num_classes=num_classes, seed=1).build()
    opt = TF1Momentum(PolyLR(lr, 100, 0.9), momentum=0.9)
    loss_fn = make_loss_fn(
        net, ignore_label=255, weight_decay=1e-4, update_mean_var=update_mean_var
    )
    trainer = Trainer(
        strategy=tf.distribute.get_strategy(),
        model=net,
        optimizer=opt,
        variables=trained_variables(net, train_beta_gamma),
        loss_fn=loss_fn,
        snapshot_dir=str(tmp_path),
        save_every=1000,
    )
    pairs = read_list(os.path.join(toy, 'list', 'train.txt'), toy)
    ds = train_dataset(
        pairs,
        preprocess=caffe_bgr_input,
        batch_size=2,
        crop_size=(193, 193),
        random_mirror=True,
        seed=0,
    )
    return net, trainer, iter(ds)


@pytest.mark.slow
def test_thirty_steps_lower_the_loss(toy, tmp_path):
    net, trainer, batches = icnet_trainer(
        toy, tmp_path, update_mean_var=True, train_beta_gamma=True
    )
    losses = [trainer.train_step(next(batches))['conv6_cls'] for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses


@pytest.mark.parametrize('update_mean_var,train_beta_gamma', [(False, False), (True, True)])
def test_bn_switches(toy, tmp_path, update_mean_var, train_beta_gamma):
    net, trainer, batches = icnet_trainer(
        toy, tmp_path, update_mean_var=update_mean_var, train_beta_gamma=train_beta_gamma
    )
    layer = net.params['conv3_1_1x1_reduce_bn']
    before = {k: v.numpy().copy() for k, v in layer.items()}
    conv_before = net.params['conv3_1_1x1_reduce']['weights'].numpy().copy()
    for _ in range(2):
        trainer.train_step(next(batches))
    changed = {k: not np.array_equal(before[k], v.numpy()) for k, v in layer.items()}
    assert changed == {
        'mean': update_mean_var,
        'variance': update_mean_var,
        'scale': train_beta_gamma,
        'offset': train_beta_gamma,
    }
    assert not np.array_equal(conv_before, net.params['conv3_1_1x1_reduce']['weights'].numpy())


def tiny_trainer(snapshot_dir, loss_scale=None, save_every=2):
    net = Tiny(
        lambda n: n.feed('data').conv(3, 3, 4, 1, 1, name='c').batch_normalization(name='out'),
        seed=2,
    )
    net.build()
    opt = TF1Momentum(0.1)
    step_source = opt.iterations

    def loss_fn(batch):
        loss = tf.reduce_mean(tf.square(net(batch, training=True) - 1.0))
        if loss_scale is not None:  # NaN from the given step on
            loss = tf.where(step_source >= loss_scale, tf.constant(np.nan), loss)
        return loss, {}

    trainer = Trainer(
        strategy=tf.distribute.get_strategy(),
        model=net,
        optimizer=opt,
        variables=net.trainable_variables,
        loss_fn=loss_fn,
        snapshot_dir=str(snapshot_dir),
        save_every=save_every,
    )
    data = tf.data.Dataset.from_tensors(tf.random.stateless_normal((2, 8, 8, 3), [1, 1])).repeat()
    return net, opt, trainer, data


def test_resume_restores_weights_step_and_optimizer_slots(tmp_path):
    net, opt, trainer, data = tiny_trainer(tmp_path)
    trainer.fit(data, 3)
    assert trainer.step == 3 and trainer.manager.latest_checkpoint.endswith('ckpt-3')
    net2, opt2, trainer2, _ = tiny_trainer(tmp_path)
    assert trainer2.restore().endswith('ckpt-3')
    assert trainer2.step == 3
    for a, b in zip(opt.variables, opt2.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(np.any(v.numpy()) for v in opt2.accumulators)
    for a, b in zip(net.variables, net2.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    trainer2.fit(data, 5)
    assert trainer2.step == 5


def test_an_interrupt_says_the_step_and_the_checkpoint_to_resume_from(tmp_path):
    _, _, trainer, data = tiny_trainer(tmp_path, save_every=2)

    def interrupt(step, writer):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        trainer.fit(data, 10, hooks=[interrupt], hook_every=1)
    assert str(caught.value) == (
        f'at step 3; the last checkpoint is {tmp_path}/ckpt-2: the same command resumes from it'
    )


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    _, _, trainer, data = tiny_trainer(tmp_path, loss_scale=4, save_every=2)
    with pytest.raises(TrainingDiverged, match=r'nan at step 5.*ckpt-4'):
        trainer.fit(data, 10)
    assert trainer.manager.latest_checkpoint.endswith('ckpt-4')
    assert not any(name.startswith('ckpt-5') for name in os.listdir(tmp_path))


def _train_cli(toy, snapshot, *extra):
    return [
        sys.executable,
        '-m',
        'icnet_tf.train',
        '--data_list',
        os.path.join(toy, 'list', 'train.txt'),
        '--data_dir',
        toy,
        '--batch_size',
        '1',
        '--input_size',
        '193,193',
        '--snapshot_dir',
        snapshot,
        *extra,
    ]


@pytest.mark.slow
def test_kill_9_never_breaks_the_latest_checkpoint_and_resume_works(toy, tmp_path):
    snapshot = str(tmp_path / 'snap')
    proc = subprocess.Popen(
        _train_cli(toy, snapshot, '--num_steps', '400', '--save_pred_every', '2'),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        if os.path.exists(snapshot) and any(
            f.startswith('ckpt-6.index') for f in os.listdir(snapshot)
        ):
            break
        time.sleep(0.2)
    time.sleep(0.7)  # land somewhere inside a later step or save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = tf.train.latest_checkpoint(snapshot)
    assert latest is not None
    tf.train.load_checkpoint(latest).get_variable_to_shape_map()  # readable, not broken
    saved = int(latest.rsplit('-', 1)[1])
    r = subprocess.run(  # resumed under mixed precision: same checkpoint layout
        _train_cli(toy, snapshot, '--num_steps', str(saved + 1), '--precision', 'mixed_bfloat16'),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert f'resumed from {latest} at step {saved}' in r.stdout
    assert 'global batch 1, mixed_bfloat16' in r.stdout, r.stdout
    tags = set()  # TensorBoard: losses, learning rate, and the image panels
    for events in os.listdir(os.path.join(snapshot, 'logs')):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(snapshot, 'logs', events)):
            tags |= {v.tag for v in event.summary.value}
    assert {
        'loss/loss',
        'loss/conv6_cls',
        'learning_rate',
        'input',
        'label',
        'prediction',
    } <= tags, tags


def test_bad_list_is_one_line_and_nonzero(toy, tmp_path):
    bad = tmp_path / 'bad.txt'
    bad.write_text(open(os.path.join(toy, 'list', 'train.txt')).readline() + 'one_field\n')
    cmd = _train_cli(toy, str(tmp_path / 's'))
    cmd[cmd.index('--data_list') + 1] = str(bad)
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f'error: {bad}:2: expected 2 fields "<image> <label>", found 1: \'one_field\''
    ]


def test_input_size_below_the_networks_minimum_is_one_line(toy, tmp_path):
    cmd = _train_cli(toy, str(tmp_path / 's'))
    cmd[cmd.index('--input_size') + 1] = '100,150'
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-1000:]
    assert r.stderr.strip().splitlines() == [
        'error: --input_size 100,150 is below the smallest input ICNet_BN takes (193x193: '
        'its pyramid pooling needs that much)'
    ]
    assert not os.path.exists(tmp_path / 's' / 'checkpoint')


TWO_REPLICAS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from icnet_tf import ICNet
    from icnet_tf.losses import TF1Momentum
    from icnet_tf.training import make_loss_fn, trained_variables
    from icnet_tf.training import Trainer

    images = tf.random.stateless_normal((4, 193, 193, 3), [5, 6]) * 60
    labels = tf.random.stateless_uniform((4, 193, 193, 1), [7, 8], 0, 4, tf.int32)
    labels = tf.where(tf.random.stateless_uniform(labels.shape, [9, 9]) < 0.3, 255, labels)
    result = {}
    for name, strategy in [('one', tf.distribute.OneDeviceStrategy('/cpu:0')),
                           ('two', tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))]:
        with strategy.scope():
            net = ICNet(num_classes=4, seed=3).build()
            opt = TF1Momentum(0.01)
        trainer = Trainer(strategy=strategy, model=net, optimizer=opt,
                          variables=trained_variables(net, True),
                          loss_fn=make_loss_fn(net, ignore_label=255, weight_decay=1e-3,
                                               update_mean_var=False),
                          snapshot_dir=sys.argv[1] + '/' + name, save_every=100)
        ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
        it = iter(strategy.experimental_distribute_dataset(ds))
        losses = [trainer.train_step(next(it))['loss'] for _ in range(2)]
        result[name] = {'replicas': strategy.num_replicas_in_sync, 'losses': losses,
                        'weights': {k: v.numpy().tolist() for k, v in
                                    net.variables_by_key().items() if 'conv6_cls' in k or
                                    'conv1_1_3x3_s2' in k}}
    print(json.dumps(result))
""")


@pytest.mark.slow
def test_two_replicas_equal_one_device_with_the_same_global_batch(tmp_path):
    r = subprocess.run(
        [sys.executable, '-c', TWO_REPLICAS, str(tmp_path)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert (res['one']['replicas'], res['two']['replicas']) == (1, 2)
    np.testing.assert_allclose(res['two']['losses'], res['one']['losses'], rtol=1e-5)
    for key, one in res['one']['weights'].items():
        np.testing.assert_allclose(
            res['two']['weights'][key], one, rtol=1e-4, atol=1e-6, err_msg=key
        )


def test_pspnet101_trains_on_its_single_output(toy):
    """--model PSPNet101: the loss is the masked cross entropy of `conv6` alone (weight 1.0)
    plus the L2 term; a few steps lower it. Narrow, shallow PSPNet keeps this fast."""
    from icnet_tf import PSPNet101
    from icnet_tf.losses import masked_xent_sum

    net = PSPNet101(num_classes=19, width_multiplier=1 / 8, blocks=(1, 1, 1, 1), seed=2).build()
    loss_fn = make_loss_fn(net, ignore_label=255, weight_decay=1e-4, update_mean_var=True)
    pairs = read_list(os.path.join(toy, 'list', 'train.txt'), toy)
    images, labels = next(
        iter(
            train_dataset(
                pairs, preprocess=caffe_bgr_input, batch_size=2, crop_size=(97, 97), seed=0
            )
        )
    )
    total, parts = loss_fn((images, labels))
    assert set(parts) == {'conv6', 'weight_decay'}
    logits = net.layers['conv6']  # of that very call (training mode has dropout)
    xent, count = masked_xent_sum(logits, labels, 19, 255)
    np.testing.assert_allclose(float(parts['conv6']), float(xent / count), rtol=1e-5)
    np.testing.assert_allclose(
        float(total), float(parts['conv6'] + parts['weight_decay']), rtol=1e-6
    )
    opt = TF1Momentum(0.01, momentum=0.9)
    variables = trained_variables(net, True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss, parts = loss_fn((images, labels))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return parts['conv6']

    losses = [float(step()) for _ in range(20)]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_filter_scale_is_refused_for_pspnet101():
    from icnet_tf import build_model

    with pytest.raises(ValueError, match='ICNet models only'):
        build_model('PSPNet101', filter_scale=2)
    assert build_model('PSPNet101', filter_scale=1, num_classes=3).num_classes == 3


def _tiny_cli(data_list, snapshot, *extra):
    """icnet_tf.train on TinyNet (tests/test_models.py): a few fast steps."""
    cmd = _train_cli('', snapshot, '--model', 'tests.test_models:TinyNet', *extra)
    cmd[cmd.index('--data_list') + 1] = str(data_list)
    cmd[cmd.index('--batch_size') + 1] = '2'
    cmd[cmd.index('--input_size') + 1] = '32,32'
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def test_a_bad_image_mid_training_names_its_list_line_or_is_skipped(toy, tmp_path):
    """A truncated image passes the checks before training (they read headers) and breaks the
    input pipeline later: training stops with one line naming the list line and the file,
    the last checkpoint untouched; with --skip_bad_files it trains on and lists the skip."""
    pairs = read_list(os.path.join(toy, 'list', 'train.txt'), toy)
    bad = tmp_path / 'truncated.png'
    with open(pairs[2][0], 'rb') as f:
        bad.write_bytes(f.read()[:-3000])
    good_list, bad_list = tmp_path / 'good.txt', tmp_path / 'bad.txt'
    good_list.write_text(''.join(f'{a} {b}\n' for a, b in pairs))
    lines = [f'{bad if i == 2 else a} {b}\n' for i, (a, b) in enumerate(pairs)]
    bad_list.write_text('\n' + ''.join(lines))  # the bad image is on line 4
    snap = tmp_path / 'snap'
    r = _tiny_cli(good_list, snap, '--num_steps', '2', '--save_pred_every', '2')
    assert r.returncode == 0, r.stderr[-2000:]
    kept = {n: (snap / n).read_bytes() for n in os.listdir(snap) if n.startswith('ckpt-')}

    r = _tiny_cli(bad_list, snap, '--num_steps', '40', '--save_pred_every', '20')
    assert r.returncode == 1, r.stderr[-2000:]
    assert f'resumed from {snap}/ckpt-2 at step 2' in r.stdout
    error = r.stderr.strip().splitlines()
    assert len(error) == 1, r.stderr
    assert error[0].startswith(
        f'error: {bad_list}:4: {bad}: cannot decode (Invalid PNG data, size '
        f'{bad.stat().st_size}); training stopped at step '
    ), error
    assert error[0].endswith(
        f'last checkpoint kept: {snap}/ckpt-2; fix or remove it, or pass --skip_bad_files to '
        'train without such samples'
    )
    assert {n: (snap / n).read_bytes() for n in os.listdir(snap) if n.startswith('ckpt-')} == kept

    r = _tiny_cli(bad_list, snap, '--num_steps', '6', '--save_pred_every', '2', '--skip_bad_files')
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'done: step 6, checkpoint {snap}/ckpt-6' in r.stdout
    assert r.stderr.strip().splitlines()[-1] == (
        f'skipped 1 sample(s) with a bad file (--skip_bad_files): {bad_list}:4: {bad}: cannot '
        f'decode (Invalid PNG data, size {bad.stat().st_size})'
    )


def test_a_snapshot_folder_without_an_intact_checkpoint_is_refused(toy, tmp_path):
    snap = tmp_path / 'snap'
    snap.mkdir()
    (snap / 'ckpt-4.index').write_bytes(b'not an index')
    (snap / 'ckpt-4.data-00000-of-00001').write_bytes(b'\0' * 100)
    (snap / 'checkpoint').write_text('model_checkpoint_path: "ckpt-4"\n')
    before = {n: (snap / n).read_bytes() for n in os.listdir(snap)}
    data_list = os.path.join(toy, 'list', 'train.txt')
    r = _tiny_cli(data_list, snap, '--data_dir', toy, '--num_steps', '1')
    assert r.returncode == 1
    error = r.stderr.strip().splitlines()
    assert len(error) == 1, r.stderr
    assert error[0].startswith(
        f'error: {snap}: no intact checkpoint to resume from: {snap}/ckpt-4.index: not a '
        'readable TF checkpoint index'
    )
    assert error[0].endswith(
        '; pass --restart_over_damaged to keep them aside (renamed *.damaged) and train from '
        'step 0, or choose another --snapshot_dir'
    )
    assert {n: (snap / n).read_bytes() for n in os.listdir(snap)} == before
    r = _tiny_cli(data_list, snap, '--data_dir', toy, '--num_steps', '1', '--restart_over_damaged')
    assert r.returncode == 0, r.stderr[-2000:]
    after = {n: (snap / n).read_bytes() for n in os.listdir(snap) if n.endswith('.damaged')}
    assert after == {f'{n}.damaged': b for n, b in before.items()}


def _run(cmd, timeout=300):
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_from_scratch_notes_frozen_batch_norm_and_a_resume_keeps_its_dataset(toy, tmp_path):
    """Training ICNet_BN from scratch without --update_mean_var says that its batch-norm
    statistics stay at their start; resuming with other dataset flags is refused (one line)
    and the recorded dataset.json stays byte-identical."""
    snap = str(tmp_path / 'snap')
    r = _run(_train_cli(toy, snap, '--num_steps', '1'), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'note: training from scratch without --update_mean_var' in r.stderr
    record = os.path.join(snap, 'dataset.json')
    before = open(record, 'rb').read()
    r = _run(
        _train_cli(toy, snap, '--num_steps', '2', '--dataset', 'others', '--num_classes', '19'),
        timeout=300,
    )
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # no TF warning before it
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f'error: {record}: the checkpoints here were trained with another dataset (name '
            "'cityscapes', now 'others'"
        )
    ), r.stderr
    assert open(record, 'rb').read() == before
    # another class count: the checkpoint does not fit; one line, no TF warnings before it
    r = _run(_train_cli(toy, snap, '--num_steps', '2', '--dataset', 'ade20k'), timeout=300)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f'error: {snap}/ckpt-1: '), r.stderr
    assert open(record, 'rb').read() == before
    assert sorted(n for n in os.listdir(snap) if n.startswith('ckpt-1')) == [
        'ckpt-1.data-00000-of-00001',
        'ckpt-1.index',
    ]


def test_help_lists_the_shared_flags():
    """`--help` shows the tool's flags, including the groups shared through icnet_tf.cli."""
    r = _run([sys.executable, '-m', 'icnet_tf.train', '--help'], timeout=120)
    for flag in ('--batch_size', '--data_list', '--snapshot_dir', '--model', '--dataset'):
        assert f'  {flag}:' in r.stdout, flag
    assert 'python -m icnet_tf.train --data_list list/train.txt --data_dir DIR \\\n' in r.stdout
