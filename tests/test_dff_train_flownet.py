"""FlowNetS pretraining on known flow (dff_tf.train_flownet, dff_tf.data.flow_pairs /
known_flow / flow_dataset): the target's sign and mask against the toy city's pixel-exact
panning, mirroring, the multiscale target and loss against NumPy, learning, and the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dff_tf.data import flow_dataset, flow_pairs, known_flow, read_video_list
from dff_tf.flownet import DIV_FLOW, FlowNetS, build_flownet
from dff_tf.model import saved_flownet_config
from dff_tf.train_flownet import (
    SCALE_WEIGHTS,
    epe_px,
    make_loss_fn,
    multiscale_epe,
    target_pyramid,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 64, 128


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    from data import toycity

    out = str(tmp_path_factory.mktemp('toyflow'))
    toycity.generate(
        out,
        num_train=0,
        num_val=0,
        height=H,
        width=W,
        num_videos_train=2,
        num_videos_val=1,
        video_frames=8,
        seed=5,
    )
    return out


@pytest.fixture(scope='module')
def pairs(toy):
    videos = read_video_list(f'{toy}/list/video_train.txt', toy, f'{toy}/videos.json')
    return flow_pairs(videos, f'{toy}/videos.json', toy, max_distance=4)


def test_known_flow_on_a_hand_computed_grid():
    # 4x6 frame, dx = -2: columns 0, 1 sample outside the key; hood from row 3;
    # box [x0, y0, x1, y1) = [3, 0, 5, 2) unsupervised; an all-zero padding box is empty.
    flow, valid = known_flow((4, 6, 3), -2.0, 3, [[3, 0, 5, 2], [0, 0, 0, 0]])
    expected = np.array(
        [[0, 0, 1, 0, 0, 1], [0, 0, 1, 0, 0, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], np.float32
    )
    np.testing.assert_array_equal(valid.numpy()[..., 0], expected)
    np.testing.assert_array_equal(flow.numpy()[..., 0], np.full((4, 6), -2.0))
    np.testing.assert_array_equal(flow.numpy()[..., 1], np.zeros((4, 6)))


def test_flow_pairs_cover_sequences_and_distances(pairs):
    # 2 training sequences of 8 frames, distances 1..4: per sequence 7 + 6 + 5 + 4 pairs.
    assert len(pairs.current) == 2 * (7 + 6 + 5 + 4)
    assert all(len(b) == len(pairs.boxes[0]) for b in pairs.boxes)
    assert any(dx != 0 for dx in pairs.dx)


def _check_static_pixels_match(key, cur, flow, valid):
    """Where supervised, current[y, x] == key[y, x + flow_x] exactly (flow_y == 0)."""
    ys, xs = np.nonzero(valid[..., 0] > 0)
    assert ys.size > 0.3 * valid[..., 0].size
    np.testing.assert_array_equal(flow[..., 1], 0)
    x_key = xs + flow[ys, xs, 0].astype(int)
    np.testing.assert_array_equal(cur[ys, xs], key[ys, x_key])
    return x_key


def test_known_flow_maps_current_pixels_onto_the_key_frame(pairs):
    """The toy city's panning is pixel-exact on static content: the target flow must send
    every supervised pixel to an identical key pixel; the opposite sign must not."""
    batches = flow_dataset(pairs, batch_size=len(pairs.current), shuffle_buffer=1)
    (key, cur), (flow, valid) = next(iter(batches))
    key, cur, flow, valid = (v.numpy() for v in (key, cur, flow, valid))
    wrong_sign = 0
    for i in range(len(key)):
        _check_static_pixels_match(key[i], cur[i], flow[i], valid[i])
        dx = int(flow[i, 0, 0, 0])
        if dx:
            ys, xs = np.nonzero(valid[i, ..., 0] > 0)
            ok = (xs - dx >= 0) & (xs - dx < W)
            wrong_sign += 1
            assert np.mean(cur[i][ys[ok], xs[ok]] != key[i][ys[ok], xs[ok] - dx]) > 0.3
    assert wrong_sign > 0


def test_mirrored_pairs_keep_the_correspondence(pairs):
    ds = flow_dataset(pairs, batch_size=4, random_mirror=True, seed=3)
    for (key, cur), (flow, valid) in ds.take(6):
        for i in range(4):
            _check_static_pixels_match(
                key[i].numpy(), cur[i].numpy(), flow[i].numpy(), valid[i].numpy()
            )


def test_mirroring_happens_and_negates_the_flow(pairs):
    single = pairs.subset([next(i for i, dx in enumerate(pairs.dx) if dx != 0)])
    plain = next(iter(flow_dataset(single, batch_size=1)))
    signs = set()
    for (_key, cur), (flow, _valid) in flow_dataset(
        single, batch_size=1, random_mirror=True, seed=1
    ).take(12):
        same = np.array_equal(cur.numpy(), plain[0][1].numpy())
        flipped = np.array_equal(cur.numpy(), plain[0][1].numpy()[:, :, ::-1])
        assert same or flipped
        sign = float(flow[0, 0, 0, 0] / plain[1][0][0, 0, 0, 0])
        assert sign == (1.0 if same else -1.0)
        signs.add(sign)
    assert signs == {1.0, -1.0}


def test_target_pyramid_averages_supervised_pixels_only():
    # Frame 8x8, flow_scale 0.5 -> FlowNetS input 4x4; an output cell of a 2x2 grid covers
    # 4x4 frame pixels. Cell (0, 0): 12 of 16 supervised (x = 40 px there, 99 elsewhere).
    flow = np.zeros((1, 8, 8, 2), np.float32)
    flow[..., 0] = 99.0
    valid = np.zeros((1, 8, 8, 1), np.float32)
    valid[0, :4, :3] = 1
    flow[0, :4, :3, 0] = 40.0
    valid[0, 4:, 4:] = 1  # cell (1, 1): fully supervised, 99 px
    valid[0, 0, 4] = 1  # cell (0, 1): 1 of 16 -> not supervised
    [(target, mask)] = target_pyramid(tf.constant(flow), tf.constant(valid), (8, 8), [(2, 2)], 0.5)
    scale = 4 / 8 / DIV_FLOW  # flow-input pixels per frame pixel, over DIV_FLOW
    np.testing.assert_array_equal(mask.numpy()[0, ..., 0], [[1, 0], [0, 1]])
    np.testing.assert_allclose(target.numpy()[0, 0, 0], [40 * scale, 0], rtol=1e-6)
    np.testing.assert_allclose(target.numpy()[0, 1, 1], [99 * scale, 0], rtol=1e-6)


def test_multiscale_epe_against_numpy():
    rng = np.random.default_rng(0)
    sizes = [(8, 16), (4, 8), (2, 4), (1, 2), (1, 1)]
    outs = [rng.normal(size=(2, *s, 2)).astype(np.float32) for s in sizes]
    targets = [
        (
            rng.normal(size=(2, *s, 2)).astype(np.float32),
            (rng.random((2, *s, 1)) < 0.7).astype(np.float32),
        )
        for s in sizes
    ]
    total, first = multiscale_epe(
        [tf.constant(o) for o in outs], [(tf.constant(t), tf.constant(m)) for t, m in targets], 2.0
    )
    sums = [
        np.sum(np.sqrt(np.sum((t - o) ** 2, -1, keepdims=True)) * m) / 2
        for o, (t, m) in zip(outs, targets)
    ]
    np.testing.assert_allclose(
        float(total), sum(w * s for w, s in zip(SCALE_WEIGHTS, sums)), rtol=1e-5
    )
    np.testing.assert_allclose(float(first), sums[0], rtol=1e-5)


def test_a_few_steps_lower_the_loss(pairs):
    flownet = FlowNetS(seed=0).build()
    loss_fn = make_loss_fn(
        flownet, frame_size=(H, W), flow_scale=0.5, global_batch=4.0, weight_decay=0.0
    )
    batch = next(iter(flow_dataset(pairs, batch_size=4, seed=0)))
    opt = tf.keras.optimizers.Adam(1e-4)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss, _ = loss_fn(batch)
        grads = tape.gradient(loss, flownet.trainable_variables)
        opt.apply_gradients(zip(grads, flownet.trainable_variables))
        return loss

    first = float(step())
    for _ in range(15):
        last = float(step())
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize('variant', ['half', 'quarter'])
def test_a_few_steps_of_a_light_variant_lower_the_epe(pairs, variant):
    flownet = build_flownet(variant, seed=0).build()
    loss_fn = make_loss_fn(
        flownet, frame_size=(H, W), flow_scale=1.0, global_batch=4.0, weight_decay=0.0
    )
    batch = next(iter(flow_dataset(pairs, batch_size=4, seed=1)))
    opt = tf.keras.optimizers.Adam(1e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss, _ = loss_fn(batch)
        grads = tape.gradient(loss, flownet.trainable_variables)
        opt.apply_gradients(zip(grads, flownet.trainable_variables))
        return loss

    before = epe_px(flownet, [batch], (H, W), 1.0)
    zero = float(
        tf.reduce_sum(tf.norm(batch[1][0], axis=-1, keepdims=True) * batch[1][1])
        / tf.reduce_sum(batch[1][1])
    )
    for _ in range(15):
        step()
    after = epe_px(flownet, [batch], (H, W), 1.0)
    print(f'{variant}: EPE {before:.2f} px -> {after:.2f} px (zero flow {zero:.2f} px)')
    assert after < 0.7 * before and after < 0.9 * zero, (before, after, zero)


@pytest.mark.slow
def test_cli_trains_validates_and_feeds_dff_train(toy, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
    snap = tmp_path / 'flow'
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'dff_tf.train_flownet',
            '--data_list',
            f'{toy}/list/video_train.txt',
            '--data_dir',
            toy,
            '--videos_json',
            f'{toy}/videos.json',
            '--val_list',
            f'{toy}/list/video_val.txt',
            '--val_pairs',
            '4',
            '--batch_size',
            '2',
            '--num_steps',
            '2',
            '--save_pred_every',
            '2',
            '--snapshot_dir',
            str(snap),
            '--flownet',
            'quarter',
            '--precision',  # the strict float32 load below reads its checkpoint
            'mixed_bfloat16',
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'validation EPE' in proc.stdout and 'done: step 2' in proc.stdout, proc.stdout
    assert '--flownet quarter (2,436,160 parameters)' in proc.stdout, proc.stdout
    assert 'global batch 2, mixed_bfloat16' in proc.stdout, proc.stdout
    report = build_flownet('quarter').build().load(str(snap), verbose=False)  # strict
    assert not report.missing and not report.unexpected
    with open(snap / 'flownet_config.json') as f:
        assert json.load(f) == {'flownet': 'quarter', 'flow_scale': 0.5}
    # the DFF tools pick the flow network up from there (dff_tf.cli.model_config)
    assert saved_flownet_config(str(snap)) == {'flownet': 'quarter', 'flow_scale': 0.5}
    assert saved_flownet_config(tf.train.latest_checkpoint(str(snap)))['flownet'] == 'quarter'
    bad = subprocess.run(
        [
            sys.executable,
            '-m',
            'dff_tf.train_flownet',
            '--data_list',
            f'{toy}/list/video_train.txt',
            '--data_dir',
            toy,
            '--videos_json',
            str(tmp_path / 'missing.json'),
            '--snapshot_dir',
            str(tmp_path / 'x'),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode != 0 and len(lines) == 1 and 'missing.json' in lines[0], bad.stderr
    other = subprocess.run(  # resuming a snapshot folder with another flow network
        [
            sys.executable,
            '-m',
            'dff_tf.train_flownet',
            '--data_list',
            f'{toy}/list/video_train.txt',
            '--data_dir',
            toy,
            '--videos_json',
            f'{toy}/videos.json',
            '--snapshot_dir',
            str(snap),
            '--flownet',
            'half',
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in other.stderr.splitlines() if line.strip()]
    assert other.returncode != 0 and len(lines) == 1, other.stderr
    assert 'flownet_config.json' in lines[0] and '--flownet quarter' in lines[0], lines[0]


def test_crops_keep_the_correspondence_inside_the_crop(pairs):
    for (key, cur), (flow, valid) in flow_dataset(
        pairs, batch_size=4, crop_size=(40, 64), random_mirror=True, seed=2
    ).take(4):
        assert key.shape == (4, 40, 64, 3) and valid.shape == (4, 40, 64, 1)
        for i in range(4):
            x_key = _check_static_pixels_match(
                key[i].numpy(), cur[i].numpy(), flow[i].numpy(), valid[i].numpy()
            )
            assert x_key.min() >= 0 and x_key.max() < 64


def test_a_bad_frame_is_found_named_and_skipped_on_request(toy, pairs, tmp_path):
    """`FlowPairs.sample_files` names a frame the pipeline cannot decode by its sequence and
    frames; `--skip_bad_files` trains on without the pairs that use it."""
    import dataclasses
    import shutil

    assert pairs.sample_files().find_bad() == []
    root = tmp_path / 'toy'
    shutil.copytree(toy, root)
    frame = sorted((root / 'leftImg8bit_sequence' / 'train' / 'toycity').iterdir())[3]
    frame.write_bytes(frame.read_bytes()[:-500])
    videos = read_video_list(f'{root}/list/video_train.txt', str(root), f'{root}/videos.json')
    bad = flow_pairs(videos, f'{root}/videos.json', str(root), 2).sample_files().find_bad()
    with open(root / 'videos.json') as f:
        seq = json.load(f)['sequences'][0]['name']
    # frame 3 of the first sequence: the current frame of 2 pairs, the key of 2 others
    assert [str(b) for _, b in bad] == [
        f'{root}/videos.json: sequence {seq} frames {t} and {k}: {frame}: cannot decode '
        f'(Invalid PNG data, size {frame.stat().st_size})'
        for t, k in ((3, 2), (3, 1), (4, 3), (5, 3))
    ]
    assert dataclasses.fields(pairs)[-1].name == 'place'

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, '-m', 'dff_tf.train_flownet', '--data_list',
         f'{root}/list/video_train.txt', '--data_dir', str(root), '--videos_json',
         f'{root}/videos.json', '--max_key_distance', '2', '--batch_size', '2', '--num_steps',
         '2', '--save_pred_every', '2', '--snapshot_dir', str(tmp_path / 'snap'), '--flownet',
         'quarter', '--skip_bad_files'],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'done: step 2' in proc.stdout
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f'skipped 4 sample(s) with a bad file (--skip_bad_files): {root}/videos.json: sequence '
        )
    )
