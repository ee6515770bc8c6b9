"""The DFF command lines end to end on a tiny toy-city video set: train 3 steps, evaluate,
inference (PNGs + GIF), export (SavedModel round trip), and one-line errors on bad input.

Each CLI runs in a subprocess (absl flags are process-global), ICNet_BN on 193x257 frames.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
H, W = 193, 257

pytestmark = pytest.mark.slow


def run(module, *args, expect=0):
    proc = subprocess.run(
        [sys.executable, '-m', module, *map(str, args)],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == expect, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def one_line_error(proc, *fragments):
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    from data import toycity

    out = str(tmp_path_factory.mktemp('toyvideo'))
    toycity.generate(
        out,
        num_train=0,
        num_val=0,
        height=H,
        width=W,
        num_videos_train=1,
        num_videos_val=1,
        video_frames=12,
        seed=2,
    )
    return out


@pytest.fixture(scope='module')
def snapshot(toy, tmp_path_factory):
    snap = str(tmp_path_factory.mktemp('snap'))
    proc = run(
        'dff_tf.train',
        '--data_list',
        f'{toy}/list/video_train.txt',
        '--data_dir',
        toy,
        '--videos_json',
        f'{toy}/videos.json',
        '--feature_net',
        'icnet_bn',
        '--num_classes',
        19,
        '--batch_size',
        1,
        '--num_steps',
        3,
        '--save_pred_every',
        2,
        '--learning_rate',
        1e-6,
        '--snapshot_dir',
        snap,
        # a light flow network at a quarter of the frame: evaluate, inference and export must
        # rebuild it from dff_config.json (its weights load strictly)
        '--flownet',
        'quarter',
        '--flow_scale',
        0.25,
        # trained in mixed precision: every tool below reads its checkpoint in float32
        '--precision',
        'mixed_bfloat16',
    )
    assert 'done: step 3' in proc.stdout, proc.stdout
    assert 'global batch 1, mixed_bfloat16' in proc.stdout, proc.stdout
    assert 'flownet=quarter, flow_scale=0.25' in proc.stdout, proc.stdout
    return snap


def test_train_writes_checkpoints_and_config(snapshot):
    assert os.path.exists(os.path.join(snapshot, 'ckpt-3.index'))
    with open(os.path.join(snapshot, 'dff_config.json')) as f:
        config = json.load(f)
    assert config['feature_net'] == 'icnet_bn' and config['num_classes'] == 19
    assert config['flownet'] == 'quarter' and config['flow_scale'] == 0.25
    assert glob.glob(os.path.join(snapshot, 'logs', 'events.*'))


def test_evaluate_reports_distances_baseline_and_speed(toy, snapshot, tmp_path):
    proc = run(
        'dff_tf.evaluate',
        '--data_list',
        f'{toy}/list/video_val.txt',
        '--data_dir',
        toy,
        '--restore_from',
        snapshot,
        '--save_dir',
        tmp_path,
    )
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.strip().startswith('IoU (%)'))
    assert header.split()[2:] == ['per-frame', 'd=1', 'd=2', 'd=3', 'd=4', 'd=5', 'd=9', 'l=5']
    assert 'key frames' in out and 'propagated frames' in out and 'key interval 5' in out
    with open(tmp_path / 'dff_metrics.json') as f:
        metrics = json.load(f)
    assert metrics['frames'] == 3  # frames 9, 10, 11 have keys at 1, 5 and 9
    for key in ('per-frame', 'distance_1', 'distance_5', 'distance_9', 'key_interval_5'):
        assert 0 <= metrics[key]['mIoU'] <= 1
    assert metrics['speed']['overall_fps'] > 0


def test_inference_writes_pngs_and_gif_and_reports_bad_frames(toy, snapshot, tmp_path):
    frames = tmp_path / 'frames'
    shutil.copytree(os.path.join(toy, 'leftImg8bit_sequence', 'val', 'toycity'), frames)
    names = sorted(os.listdir(frames))
    (frames / names[4]).write_bytes(b'not a png')  # corrupt frame
    out_dir = tmp_path / 'out'
    proc = run(
        'dff_tf.inference',
        '--frames',
        frames,
        '--restore_from',
        snapshot,
        '--key_interval',
        5,
        '--save_dir',
        out_dir,
        expect=1,
    )
    one_line_error(proc, '1 of 12 frames skipped', names[4], 'not a readable image')
    assert 'key frames' in proc.stdout and 'propagated frames' in proc.stdout
    pngs = sorted(glob.glob(str(out_dir / '*_color.png')))
    assert len(pngs) == 11
    with Image.open(pngs[0]) as img:
        assert img.size == (W, H) and img.mode == 'RGB'
    with Image.open(out_dir / 'video.gif') as gif:
        assert gif.n_frames == 11 and gif.size == (2 * W, H)
    # A second run without --overwrite changes nothing of the first one's outputs, and writing
    # into the frames folder itself is refused (its outputs would be read back as frames).
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    again = run(
        'dff_tf.inference', '--frames', frames, '--restore_from', snapshot,
        '--save_dir', out_dir, expect=1,
    )  # fmt: skip
    one_line_error(again, '_color.png: exists (and 10 more outputs)', '--overwrite')
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    inside = run(
        'dff_tf.inference', '--frames', frames, '--restore_from', snapshot,
        '--save_dir', frames, expect=1,
    )  # fmt: skip
    one_line_error(inside, 'is the folder of the input')


def test_inference_missing_frames_dir(snapshot, tmp_path):
    proc = run(
        'dff_tf.inference', '--frames', tmp_path / 'nope', '--restore_from', snapshot, expect=1
    )
    one_line_error(proc, 'nope', 'no such directory')


def test_export_round_trip(toy, snapshot, tmp_path):
    from dff_tf.model import VideoRunner, load_weights
    from dff_tf.model import build_dff as build_model

    export_dir = tmp_path / 'saved'
    run(
        'dff_tf.export',
        '--restore_from',
        snapshot,
        '--input_size',
        f'{H},{W}',
        '--export_dir',
        export_dir,
    )
    loaded = tf.saved_model.load(str(export_dir))
    assert set(loaded.signatures) == {'key_frame', 'propagate'}
    seq = sorted(glob.glob(os.path.join(toy, 'leftImg8bit_sequence', 'val', 'toycity', '*.png')))
    key, current = (np.asarray(Image.open(seq[i]).convert('RGB')) for i in (0, 4))
    exported_key = loaded.signatures['key_frame'](image=tf.constant(key[None]))
    exported = loaded.signatures['propagate'](
        features=exported_key['features'],
        key_image=tf.constant(key[None]),
        image=tf.constant(current[None]),
    )['labels']
    with open(os.path.join(snapshot, 'dff_config.json')) as f:
        config = json.load(f)
    dff = build_model(dict(config, train_feature_net=False))
    load_weights(dff, snapshot, log=lambda *a: None)
    runner = VideoRunner(dff)
    features, key_labels = runner.key_step(key)
    labels = runner.propagate_step(features, key, current)
    assert exported.dtype == tf.int32
    assert np.mean(exported_key['labels'].numpy()[0] == key_labels) >= 0.9999
    assert np.mean(exported.numpy()[0] == labels) >= 0.9999
    np.testing.assert_allclose(
        exported_key['features'].numpy(),
        features.numpy(),
        atol=1e-4 * np.abs(features.numpy()).max(),
    )
    # inputs of another shape get a message naming the expected one (the signatures check)
    for bad, call in [
        ('image', lambda: loaded.signatures['key_frame'](image=tf.constant(key[None, ..., :1]))),
        ('image', lambda: loaded.signatures['key_frame'](image=tf.constant(key))),
        ('image', lambda: loaded.signatures['key_frame'](image=tf.constant(key[None, :-1]))),
        (
            'features',
            lambda: loaded.signatures['propagate'](
                features=exported_key['features'][:, :-1],
                key_image=tf.constant(key[None]),
                image=tf.constant(current[None]),
            ),
        ),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError) as e:
            call()
        expected = (
            f'image: expected uint8 RGB [1, {H}, {W}, 3]'
            if bad == 'image'
            else 'features: expected float32 [1, '
        )
        assert expected in str(e.value), str(e.value)[:500]


def test_bad_inputs_fail_with_one_line(toy, tmp_path):
    bad_list = tmp_path / 'bad.txt'
    bad_list.write_text('a b c\n')
    proc = run('dff_tf.train', '--data_list', bad_list, '--feature_net', 'icnet_bn', expect=1)
    one_line_error(proc, 'bad.txt:1', 'expected 2 fields')
    proc = run(
        'dff_tf.evaluate',
        '--data_list',
        f'{toy}/list/video_val.txt',
        '--data_dir',
        toy,
        '--restore_from',
        tmp_path / 'missing.npy',
        '--feature_net',
        'icnet_bn',
        expect=1,
    )
    one_line_error(proc, 'missing.npy')
    proc = run(
        'dff_tf.export',
        '--restore_from',
        tmp_path / 'missing.npy',
        '--feature_net',
        'icnet_bn',
        '--input_size',
        '100,100',
        expect=1,
    )
    one_line_error(proc, '--input_size 100x100', 'minimum')


def test_weights_from_parts_equal_the_whole_checkpoint(snapshot, tmp_path):
    """--restore_from <feature-net checkpoint> + --flownet_weights <DFF checkpoint> give the
    same model as --restore_from <DFF checkpoint> (minus ICNet's training-only heads)."""
    from converters.tf_checkpoint import save_weights_checkpoint
    from dff_tf.model import DFF, load_weights

    whole = DFF('icnet_bn', 19, flownet='quarter', seed=5)
    load_weights(whole, snapshot, log=lambda *a: None)
    prefix = save_weights_checkpoint(whole.feature_net, str(tmp_path / 'icnet'))
    parts = DFF('icnet_bn', 19, flownet='quarter', seed=9)
    load_weights(parts, prefix, snapshot, log=lambda *a: None)
    assert len(whole.variables) == len(parts.variables)
    for a, b in zip(whole.variables, parts.variables):
        assert a.name == b.name
        if not a.name.startswith(('sub4_out', 'sub24_out')):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


def test_psp_layout_flag_takes_every_pspnet_layout():
    """`--psp_layout` offers every PSPNet101 layout (caffe, caffe_tf1, mmseg) and passes the
    chosen one to the feature network."""
    code = (
        'import json; from absl import flags; from dff_tf import cli; '
        'cli.define_model_flags(); flags.FLAGS(["x", "--psp_layout", "caffe_tf1"]); '
        'print(json.dumps([flags.FLAGS["psp_layout"].parser.enum_values, '
        'cli.model_config()["feature_net_kwargs"]]))'
    )
    proc = subprocess.run(
        [sys.executable, '-c', code], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    choices, kwargs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert choices == ['caffe', 'caffe_tf1', 'mmseg'] and kwargs == {'layout': 'caffe_tf1'}


def test_model_config_precedence(snapshot, tmp_path):
    """--flownet / --flow_scale: the command line, then dff_config.json of a DFF checkpoint,
    then flownet_config.json next to --flownet_weights, then the defaults."""
    from absl import flags

    from dff_tf import cli as dff_cli

    flow_dir = tmp_path / 'flow'
    flow_dir.mkdir()
    (flow_dir / 'flownet_config.json').write_text('{"flownet": "half", "flow_scale": 0.125}')
    tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(flow_dir / 'ckpt-1'))
    FLAGS = flags.FLAGS
    if 'flownet' not in FLAGS:
        dff_cli.define_model_flags()

    def config(*argv, **kwargs):
        FLAGS.unparse_flags()
        FLAGS(['prog', '--feature_net', 'icnet_bn', *argv])
        try:
            c = dff_cli.model_config(**kwargs)
        finally:
            FLAGS.unparse_flags()
        return c['flownet'], c['flow_scale']

    assert config() == ('plain', 0.5)
    assert config(flownet_weights=str(flow_dir)) == ('half', 0.125)
    assert config(flownet_weights=str(flow_dir / 'ckpt-1')) == ('half', 0.125)
    assert config('--flownet', 'quarter', flownet_weights=str(flow_dir)) == ('quarter', 0.125)
    assert config(restore_from=snapshot, flownet_weights=str(flow_dir)) == ('quarter', 0.25)
    assert config('--flow_scale', '0.5', restore_from=snapshot) == ('quarter', 0.5)
    assert config(flownet_weights=str(tmp_path / 'x.pth')) == ('plain', 0.5)
