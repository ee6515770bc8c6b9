"""Deep Feature Flow (dff_tf.model, dff_tf.data): flow scaling, the N_feat / N_task split,
frozen feature network, gradients, scale field, key-frame lookup and the training pipeline.

ICNet_BN with 5 classes on 193x257 frames (the smallest Caffe-exact size its pyramid pooling
accepts is 193) keeps this module fast; FlowNetS is built once per module.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from converters.errors import UserError, WeightsMismatchError
from dff_tf import DFF
from dff_tf.data import read_video_list, train_dataset
from dff_tf.flownet import DIV_FLOW, FlowNetS
from dff_tf.model import VideoRunner, build_dff, restore_dff_checkpoint
from icnet_tf import ICNet_BN, PSPNet101
from icnet_tf.network import caffe_bgr_input as to_network_input

H, W = 193, 257  # frames; FlowNetS input 97x129, flow2 25x33, ICNet grid 49x65
GRID = (49, 65)
FLOW_IN = (97, 129)
NUM_CLASSES = 5


@pytest.fixture(scope='module')
def flownet():
    return FlowNetS(seed=3).build()


@pytest.fixture(scope='module')
def dff(flownet):
    net = ICNet_BN(num_classes=NUM_CLASSES, seed=1)
    model = DFF(net, flownet=flownet).build()
    _tame_batch_norm(net)
    return model


def _tame_batch_norm(net):
    """Give every BN layer of a fresh network moving statistics that keep activations O(1)
    (fresh ones are mean 0 / variance 1, so 60 un-normalised layers blow values up to 1e5+)."""
    x = to_network_input(_texture(np.random.default_rng(0), H, W)[None])
    for _ in range(2):  # two passes: deeper layers see already-tamed inputs
        net(x, training=True, update_stats=False)
        for name, params in net.params.items():
            if 'mean' in params:
                act = net.layers[name[:-3]]  # '<conv>_bn' normalises '<conv>'
                params['mean'].assign(tf.reduce_mean(act, axis=[0, 1, 2]))
                params['variance'].assign(tf.math.reduce_variance(act, axis=[0, 1, 2]))
        net(x, training=False)


def _texture(rng, h, w):
    """A smooth-ish random RGB texture (uint8), so shifted crops have structure to match."""
    coarse = rng.uniform(0, 255, (h // 4 + 2, w // 4 + 2, 3))
    img = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32
    )
    return np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def frames():
    rng = np.random.default_rng(7)
    big = _texture(rng, H, W + 64)
    key = big[:, :W][None]
    current = big[:, 8 : 8 + W][None]  # current(x) = key(x + 8): flow +8 frame px in x
    other = _texture(rng, H, W)[None]
    return key, current, other


# ------------------------------------------------------------------------------ flow scaling
def test_flow_input_size_and_raw_flow_shape(dff, frames):
    key, current, _ = frames
    assert dff.flow_input_size(H, W) == FLOW_IN  # ceil(h / 2), like 'full' pooling
    assert dff.flow_input_size(192, 256) == (96, 128)
    flow2, concat2 = dff.raw_flow(key, current)
    assert flow2.shape == (1, 25, 33, 2) and concat2.shape == (1, 25, 33, 194)
    assert dff.key_features(key).shape == (1, *GRID, 128)


def test_grid_flow_rule():
    """resize to the grid, then x * 20 * Gw / flow_input_w and y * 20 * Gh / flow_input_h."""
    model = DFF.__new__(DFF)  # grid_flow uses no state
    raw = np.zeros((1, 3, 5, 2), np.float32)
    raw[..., 0], raw[..., 1] = 0.1, -0.2
    out = DFF.grid_flow(model, raw, (30, 41), (60, 82)).numpy()
    assert out.shape == (1, 30, 41, 2)
    np.testing.assert_allclose(out[..., 0], 0.1 * DIV_FLOW * 41 / 82, rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], -0.2 * DIV_FLOW * 30 / 60, rtol=1e-6)
    # the original DFF: half-size FlowNet input, 1/16 grid -> 2.5 = 20 / 8
    out = DFF.grid_flow(model, np.ones((1, 16, 32, 2), np.float32), (32, 64), (256, 512))
    np.testing.assert_allclose(out.numpy(), 2.5, rtol=1e-6)
    # the field itself is resized with align_corners=True (corners kept)
    ramp = np.zeros((1, 2, 3, 2), np.float32)
    ramp[0, :, :, 0] = [[0, 1, 2], [0, 1, 2]]
    out = DFF.grid_flow(model, ramp, (3, 5), (3 * 4, 3 * 4)).numpy()[0, 0, :, 0]
    np.testing.assert_allclose(out / (DIV_FLOW * 5 / 12), [0, 0.5, 1, 1.5, 2], atol=1e-6)


def test_known_shift_warps_key_features_onto_current_features(flownet, frames):
    """A crop shifted by 8 px + an injected constant raw flow that scales to exactly 2 grid px.

    ICNet_BN's deep branches (global pyramid pooling, receptive fields wider than the frame)
    are not shift-equivariant, so `conv_sub2` is zeroed: N_feat is then the sub1 branch (three
    3x3 stride-2 convs + 1x1, grid 1/8 with output j at pixel 8j on a 32k+1 frame) zoomed x2 by
    Caffe Interp, which is exactly shift-equivariant for shifts of 8 px = 2 cells of the 1/4
    grid. Warped key features must then equal the current frame's own features away from the
    borders; the wrong sign or no flow must not.
    """
    net = ICNet_BN(num_classes=NUM_CLASSES, seed=2)
    model = DFF(net, flownet=flownet).build()
    _tame_batch_norm(net)
    net.params['conv_sub2']['weights'].assign(tf.zeros_like(net.params['conv_sub2']['weights']))
    key, current, _ = frames
    key_feat = model.key_features(key)
    cur_feat = model.key_features(current).numpy()
    assert key_feat.shape == (1, *GRID, 128)
    shift_grid = 2.0  # 8 frame px on the 1/4 grid (align corners: (65 - 1) / (257 - 1))
    raw = np.zeros((1, 25, 33, 2), np.float32)
    raw[..., 0] = shift_grid * FLOW_IN[1] / (DIV_FLOW * GRID[1])  # the spec's scaling, inverted
    flow = model.grid_flow(raw, GRID, FLOW_IN).numpy()
    np.testing.assert_allclose(flow[..., 0], shift_grid, rtol=1e-6)
    assert np.all(flow[..., 1] == 0)

    inner = np.s_[:, :, 3:59]  # receptive field (+-7 px) and interp inside both frames
    warped = model.warp_features(key_feat, key, current, raw_flow=raw).numpy()
    scale = np.abs(cur_feat[inner]).max()
    assert scale > 0.1
    np.testing.assert_allclose(warped[inner], cur_feat[inner], atol=1e-5 * scale)
    for wrong in (-raw, 0 * raw):
        bad = model.warp_features(key_feat, key, current, raw_flow=wrong).numpy()
        assert np.abs(bad[inner] - cur_feat[inner]).mean() > 0.05 * np.abs(cur_feat).mean()
    # logits too: N_task on warped features == N_task on the current frame's features
    logits = model.propagate(key_feat, key, current, raw_flow=raw).numpy()
    np.testing.assert_allclose(
        logits[inner], model.task(cur_feat).numpy()[inner], atol=1e-4 * np.abs(logits).max()
    )


# ------------------------------------------------------------------------- API consistency
def test_key_features_task_equal_the_feature_network(dff, frames):
    key = frames[0]
    per_frame = dff.feature_net(to_network_input(key), training=False)
    np.testing.assert_array_equal(dff.task(dff.key_features(key)).numpy(), per_frame.numpy())
    # float frames in 0..255 are the same input as uint8 ones
    np.testing.assert_array_equal(
        dff.key_features(key.astype(np.float32)).numpy(), dff.key_features(key).numpy()
    )


def test_distance_zero_gives_the_per_frame_logits(dff, frames):
    key = frames[0]
    per_frame = dff.feature_net(to_network_input(key), training=False).numpy()
    features = dff.key_features(key)
    zero = np.zeros((1, 25, 33, 2), np.float32)
    np.testing.assert_array_equal(
        dff.propagate(features, key, key, raw_flow=zero).numpy(), per_frame
    )
    np.testing.assert_array_equal(dff(key, key).numpy(), per_frame)  # eq_flag: unwarped


def test_call_equals_key_features_then_propagate(dff, frames):
    key, current, other = frames
    pairs_key = np.concatenate([key, other])
    pairs_cur = np.concatenate([current, key])
    logits = dff(pairs_key, pairs_cur).numpy()
    assert logits.shape == (2, *GRID, NUM_CLASSES)
    expected = dff.propagate(dff.key_features(pairs_key), pairs_key, pairs_cur).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5 * np.abs(expected).max())
    # a batch mixing distance 0 and a real pair: only the equal pair is taken unwarped
    mixed = dff(np.concatenate([key, key]), np.concatenate([key, current])).numpy()
    np.testing.assert_array_equal(mixed[0], dff(key, key).numpy()[0])
    np.testing.assert_allclose(mixed[1], logits[0], atol=1e-5 * np.abs(logits).max())
    labels = dff.labels(logits, (H, W)).numpy()
    assert labels.shape == (2, H, W) and labels.dtype == np.int32


def test_video_runner_schedule(dff, frames):
    key, current, other = frames
    video = [key[0], current[0], other[0], key[0], current[0]]
    runner = VideoRunner(dff, key_interval=3, compiled=False)
    out = list(runner.run(video))
    assert [k for _, _, k in out] == [True, False, False, True, False]
    assert len(runner.times['key']) == 2 and len(runner.times['propagate']) == 3
    features = dff.key_features(key)
    expected = dff.labels(dff.propagate(features, key, current), (H, W)).numpy()[0]
    np.testing.assert_array_equal(out[1][1], expected)
    np.testing.assert_array_equal(out[4][1], expected)  # frame 4 propagates from frame 3
    speed = runner.speed(key_interval=5)
    assert speed['overall_fps'] == pytest.approx(
        5 / (speed['key_seconds'] + 4 * speed['propagate_seconds'])
    )


# ------------------------------------------------------------------------------ gradients
def _grads(model, frames, variables):
    key, current, _ = frames
    labels = np.random.default_rng(0).integers(0, NUM_CLASSES, (1, H, W, 1))
    with tf.GradientTape() as tape:
        logits = model(key, current, training=True)
        labels_small = tf.image.resize(labels, logits.shape[1:3], method='nearest')[..., 0]
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels_small, logits=logits)
        )
    return tape.gradient(loss, variables)


def test_feature_net_frozen_flownet_and_task_trained(dff, frames):
    net = dff.feature_net
    task = set(map(id, dff.task_variables()))
    feature_vars = [v for v in net.trainable_variables if id(v) not in task]
    trained = dff.trained_variables()
    assert {id(v) for v in trained} == ({id(v) for v in dff.flownet.trainable_variables} | task)
    grads = _grads(dff, frames, feature_vars + trained)
    assert all(g is None for g in grads[: len(feature_vars)])
    trained_grads = grads[len(feature_vars) :]
    missing = [v.name for v, g in zip(trained, trained_grads) if g is None]
    assert not missing, missing
    assert all(np.isfinite(g.numpy()).all() for g in trained_grads)
    assert any(np.abs(g.numpy()).max() > 0 for g in trained_grads[:-2])  # FlowNetS moves


def test_train_feature_net_lets_gradients_reach_it(flownet, frames):
    net = ICNet_BN(num_classes=NUM_CLASSES, seed=1)
    model = DFF(net, flownet=flownet, train_feature_net=True).build()
    _tame_batch_norm(net)
    variables = [net.params['conv1_sub1']['weights'], net.params['conv3_1_3x3']['weights']]
    assert all(any(v is t for t in model.trained_variables()) for v in variables)
    assert all(g is not None for g in _grads(model, frames, variables))


def test_scale_field_starts_at_one(flownet, frames):
    net = ICNet_BN(num_classes=NUM_CLASSES, seed=1)
    plain = DFF(net, flownet=flownet).build()
    scaled = DFF(net, flownet=flownet, scale_field=True).build()
    w, b = scaled.scale_field['weights'], scaled.scale_field['biases']
    assert w.shape == (1, 1, 194, 128) and np.all(w.numpy() == 0)
    assert b.shape == (128,) and np.all(b.numpy() == 1) and not b.trainable
    assert any(v is w for v in scaled.trained_variables())
    assert not any(v is b for v in scaled.trained_variables())
    key, current, _ = frames
    _, concat2 = scaled.raw_flow(key, current)
    np.testing.assert_array_equal(scaled.scale_map(concat2, GRID).numpy(), 1.0)
    features = plain.key_features(key)
    np.testing.assert_array_equal(
        scaled.warp_features(features, key, current).numpy(),
        plain.warp_features(features, key, current).numpy(),
    )
    # S is trained: its weights get a gradient
    assert _grads(scaled, frames, [w])[0] is not None


def test_pspnet_split_matches_the_network(flownet):
    net = PSPNet101(num_classes=3, blocks=(1, 1, 1, 1), width_multiplier=1 / 8, seed=4)
    model = DFF(net, flownet=flownet).build()
    assert (model.feature_layer, model.task_layer, model.feature_channels) == (
        'conv5_4_bn',
        'conv6',
        64,
    )
    frames = np.random.default_rng(1).integers(0, 256, (1, 65, 97, 3), dtype=np.uint8)
    features = model.key_features(frames)
    assert features.shape == (1, 9, 13, 64)
    np.testing.assert_array_equal(model.task(features).numpy(), net(net.preprocess(frames)).numpy())
    logits = model.propagate(features, frames, frames[:, :, ::-1])
    assert logits.shape == (1, 9, 13, 3)


def test_constructor_checks(flownet):
    with pytest.raises(ValueError, match='unknown feature_net'):
        DFF('resnet', flownet=flownet)
    with pytest.raises(ValueError, match='flow_scale'):
        DFF('icnet_bn', flow_scale=0, flownet=flownet)
    model = DFF('icnet_bn', num_classes=4, flownet=flownet, feature_net_kwargs={'filter_scale': 2})
    assert model.feature_channels == 256 and model.get_config()['feature_net'] == 'icnet_bn'
    merged = DFF('icnet', num_classes=4, flownet=flownet)  # BN-merged ICNet: same split
    assert (merged.feature_net_name, merged.feature_layer) == ('icnet', 'sub12_sum_interp')
    with pytest.raises(TypeError, match='feature_net must be one of'):
        DFF(flownet, flownet=flownet)


# ------------------------------------------------------------------------------- data
def _write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope='module')
def cityscapes_like(tmp_path_factory):
    """leftImg8bit_sequence frames 10..19 of one snippet, the annotated frame 19 in
    leftImg8bit/ and gtFine/ (the Cityscapes layout)."""
    root = tmp_path_factory.mktemp('cs')
    rng = np.random.default_rng(0)
    for f in range(10, 20):
        img = np.full((20, 30, 3), f * 10, np.uint8)
        img[:, :, 1] = rng.integers(0, 255, (20, 30))
        _write_png(
            str(root / f'leftImg8bit_sequence/val/ulm/ulm_000000_{f:06d}_leftImg8bit.png'), img
        )
    stem = 'ulm_000000_000019'
    img = np.full((20, 30, 3), 190, np.uint8)
    img[:, :, 1] = rng.integers(0, 255, (20, 30))
    _write_png(str(root / f'leftImg8bit/val/ulm/{stem}_leftImg8bit.png'), img)
    _write_png(
        str(root / f'gtFine/val/ulm/{stem}_gtFine_labelTrainIds.png'),
        rng.integers(0, 3, (20, 30)).astype(np.uint8),
    )
    (root / 'list.txt').write_text(
        f'leftImg8bit/val/ulm/{stem}_leftImg8bit.png '
        f'gtFine/val/ulm/{stem}_gtFine_labelTrainIds.png\n'
    )
    return root


def test_cityscapes_key_frames_come_from_the_sequence_folder(cityscapes_like):
    root = cityscapes_like
    videos = read_video_list(str(root / 'list.txt'), str(root))
    sample = videos.samples[0]
    assert sample.frame == 19
    assert videos.key(sample, 0) == (sample.image, 0)
    path, d = videos.key(sample, 5)
    assert d == 5 and path.endswith(
        os.path.join('leftImg8bit_sequence', 'val', 'ulm', 'ulm_000000_000014_leftImg8bit.png')
    )
    path, d = videos.key(sample, 15)  # before the snippet: clamped to its first frame
    assert d == 9 and path.endswith('ulm_000000_000010_leftImg8bit.png')
    assert videos.exact_key(sample, 9) is not None and videos.exact_key(sample, 15) is None


def _locate(crop, full):
    """(y, x, mirrored) of every place `crop` occurs in `full` or its mirror image."""
    h, w = crop.shape[:2]
    return [
        (y, x, m)
        for m in (False, True)
        for y in range(full.shape[0] - h + 1)
        for x in range(full.shape[1] - w + 1)
        if np.array_equal((full[:, ::-1] if m else full)[y : y + h, x : x + w], crop)
    ]


def test_training_pairs_share_crop_and_mirror(cityscapes_like):
    videos = read_video_list(str(cityscapes_like / 'list.txt'), str(cityscapes_like))
    sample = videos.samples[0]
    ds = train_dataset(
        videos, batch_size=4, crop_size=(12, 16), key_distance=4, random_mirror=True, seed=5
    )
    (key, current), label = next(iter(ds))
    assert key.shape == (4, 12, 16, 3) and current.shape == (4, 12, 16, 3)
    assert label.shape == (4, 12, 16, 1) and label.dtype == tf.int32
    # frame 15 (= 19 - 4) has red 150 everywhere, the labelled frame 19 red 190
    assert np.all(key.numpy()[..., 0] == 150) and np.all(current.numpy()[..., 0] == 190)
    key_full = np.asarray(Image.open(videos.key(sample, 4)[0]))
    cur_full = np.asarray(Image.open(sample.image))
    lab_full = np.asarray(Image.open(sample.label))
    placements = set()
    for b in range(4):  # the random textures make every placement unique
        (where,) = _locate(key.numpy()[b].astype(np.uint8), key_full)
        assert _locate(current.numpy()[b].astype(np.uint8), cur_full) == [where]
        y, x, m = where
        expected = (lab_full[:, ::-1] if m else lab_full)[y : y + 12, x : x + 16]
        np.testing.assert_array_equal(label.numpy()[b, ..., 0], expected)
        placements.add(where)
    assert len(placements) > 1


def test_distance_zero_pairs_are_identical(cityscapes_like):
    videos = read_video_list(str(cityscapes_like / 'list.txt'), str(cityscapes_like))
    ds = train_dataset(videos, batch_size=1, crop_size=(20, 30), key_distance=0, seed=1)
    (key, current), _ = next(iter(ds))
    np.testing.assert_array_equal(key.numpy(), current.numpy())


def test_video_list_errors(tmp_path):
    img = tmp_path / 'frame.png'
    _write_png(str(img), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / 'l.txt').write_text(f'{img} {img}\n')
    with pytest.raises(UserError, match=r'l.txt:1: cannot tell the sequence and frame'):
        read_video_list(str(tmp_path / 'l.txt'))
    with pytest.raises(UserError, match='no such videos.json'):
        read_video_list(str(tmp_path / 'l.txt'), videos_json=str(tmp_path / 'nope.json'))


def test_videos_json_sequences_with_equal_names_stay_apart(tmp_path):
    """The toy city numbers train and val sequences from 0 each (both 'toycity_000000'): a
    training frame's key must come from its own sequence, not from the val one."""
    from data import toycity

    out = str(tmp_path)
    toycity.generate(
        out,
        num_train=0,
        num_val=0,
        height=64,
        width=128,
        num_videos_train=1,
        num_videos_val=1,
        video_frames=3,
        seed=0,
    )
    for split in ('train', 'val'):
        videos = read_video_list(f'{out}/list/video_{split}.txt', out, f'{out}/videos.json')
        for sample in videos.samples[1:]:
            key, distance = videos.key(sample, 1)
            assert distance == 1
            assert key == videos.samples[sample.frame - 1].image
            assert f'/{split}/' in key


# ------------------------------------------------------------------ light flow networks
def test_light_flownet_config_round_trip(frames, tmp_path):
    key, current, _ = frames
    model = DFF(
        'icnet_bn', NUM_CLASSES, flownet='quarter', flow_scale=0.25, scale_field=True, seed=2
    ).build()
    config = json.loads(json.dumps(model.get_config()))
    assert config['flownet'] == 'quarter' and config['flow_scale'] == 0.25
    assert model.flownet.width == 0.25 and not model.flownet.batch_norm
    # the scale field reads concat2, 50 channels in the quarter FlowNetS (194 / 4 rounded + 2)
    assert model.scale_field['weights'].shape == (1, 1, 50, 128)
    flow, concat2 = model.raw_flow(key, current)
    assert model.flow_input_size(H, W) == (49, 65)
    assert flow.shape == (1, 13, 17, 2) and concat2.shape == (1, 13, 17, 50)
    features = model.key_features(key)
    assert model.propagate(features, key, current).shape == (1, *GRID, NUM_CLASSES)
    rebuilt = build_dff(dict(config, train_feature_net=False), seed=7)
    assert rebuilt.get_config() == config
    assert rebuilt.flownet.param_shapes() == model.flownet.param_shapes()
    # a checkpoint of one flow network does not restore into another: the message says so
    prefix = tf.train.Checkpoint(net=model).write(str(tmp_path / 'dff'))
    restore_dff_checkpoint(rebuilt, prefix)
    for a, b in zip(model.flownet.variables, rebuilt.flownet.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    half = build_dff(dict(config, flownet='half', train_feature_net=False))
    with pytest.raises(WeightsMismatchError, match='flownet=half'):
        restore_dff_checkpoint(half, prefix)
    custom = DFF('icnet_bn', NUM_CLASSES, flownet={'batch_norm': True, 'width': 0.25})
    assert custom.get_config()['flownet'] == {'batch_norm': True, 'width': 0.25}
    with pytest.raises(ValueError, match='flownet must be one of'):
        DFF('icnet_bn', NUM_CLASSES, flownet='tiny')


def test_sample_files_name_a_bad_key_frame_by_its_list_line(cityscapes_like, tmp_path):
    """A key frame the pipeline cannot decode, or of another size than its labelled frame,
    is found (`VideoList.sample_files`) and named with the labelled frame's list line."""
    import shutil

    root = tmp_path / 'cs'
    shutil.copytree(cityscapes_like, root)
    (root / 'list.txt').write_text('\n' + (root / 'list.txt').read_text())  # now line 2
    videos = read_video_list(str(root / 'list.txt'), str(root))
    assert videos.samples[0].line == 2
    assert videos.sample_files(9).find_bad() == []
    key = videos.key(videos.samples[0], 5)[0]
    data = open(key, 'rb').read()
    with open(key, 'wb') as f:
        f.write(data[:-40])
    (bad,) = videos.sample_files(9).find_bad()
    assert str(bad[1]).startswith(f'{root}/list.txt:2: {key}: cannot decode (Invalid PNG data')
    assert videos.sample_files(4).find_bad() == []  # frame 14 is 5 frames back: not used
    _write_png(key, np.zeros((20, 31, 3), np.uint8))
    (bad,) = videos.sample_files(9).find_bad()
    assert str(bad[1]) == (
        f'{root}/list.txt:2: {key}: is 20x31 (HxW) but {videos.samples[0].image} of the same '
        'sample is 20x30'
    )
