"""BN folding, the serving-graph rewrites, dynamic pyramid pooling, the exported SavedModel
(`python -m icnet_tf.export`), saved_model_cli, TFLite, and the inference CLI on an export."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from icnet_tf import ICNet, ICNet_BN
from icnet_tf.fold import fold_batch_norm, fold_weights
from icnet_tf.icnet import psp_pool_dynamic, psp_pool_geometry
from icnet_tf.network import resize_bilinear_align_corners
from icnet_tf.predict import Segmenter
from icnet_tf.rewrites import (
    LazyZoomNetwork,
    SparseLabelNetwork,
    serving_network,
    zoom_dilated_conv,
)
from icnet_tf.serving import (
    SegmentationModule,
    export_saved_model,
    load_signature,
    run_tflite,
    sample_image,
    tflite_interpreter,
    xnnpack_partitions,
)
from tests.golden.seeded import seeded_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
NUM_CLASSES = 5
TFLITE_SIZE = (161, 225)


def harsh_bn_weights(net, seed=0):
    """Seeded weights with BN statistics far from the identity (what folding must get right)."""
    weights = seeded_weights(net.param_shapes(), seed=seed)
    rng = np.random.default_rng(seed + 100)
    for _layer, params in weights.items():
        if 'variance' in params:
            c = params['variance'].shape
            params['variance'] = rng.uniform(0.05, 3.0, c).astype(np.float32)
            params['mean'] = rng.normal(0.0, 0.5, c).astype(np.float32)
            params['scale'] = rng.uniform(0.3, 2.0, c).astype(np.float32)
            params['offset'] = rng.normal(0.0, 0.3, c).astype(np.float32)
    return weights


@pytest.fixture(scope='module')
def bn_net():
    net = ICNet_BN(num_classes=NUM_CLASSES).build()
    net.load(harsh_bn_weights(net), verbose=False)
    return net


def images(h, w, seed=0):
    return tf.random.stateless_uniform((1, h, w, 3), [seed, 7], -120.0, 120.0)


def uint8_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (1, h, w, 3)).astype(np.uint8)


# ------------------------------------------------------------------------------ BN folding
def test_folded_network_equals_the_bn_network_in_inference_mode(bn_net):
    net = bn_net
    folded = fold_batch_norm(net)
    assert type(folded) is ICNet and folded.get_config() == net.get_config()
    assert folded.param_shapes() == ICNet(num_classes=NUM_CLASSES).build().param_shapes()
    assert not any(k.endswith('_bn') or k in ('sub4_out', 'sub24_out') for k in folded.params)
    x = images(161, 225)
    ref = net(x, training=False).numpy()
    got = folded(x).numpy()
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= 1e-4 * scale
    assert np.mean(got.argmax(-1) == ref.argmax(-1)) >= 0.9999


def test_fold_weights_formula_and_errors():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    bn = {
        'scale': rng.uniform(0.5, 2, 4),
        'offset': rng.normal(size=4),
        'mean': rng.normal(size=4),
        'variance': rng.uniform(0.1, 2, 4),
    }
    head = {'weights': np.ones((1, 1, 4, 2), np.float32), 'biases': np.zeros(2, np.float32)}
    out = fold_weights(
        {'c': {'weights': w}, 'c_bn': bn, 'conv6_cls': head, 'sub4_out': head, 'sub24_out': head},
        drop=('sub4_out', 'sub24_out'),
    )
    assert sorted(out) == ['c', 'conv6_cls']
    f = bn['scale'] / np.sqrt(bn['variance'] + 1e-5)
    np.testing.assert_allclose(out['c']['weights'], w * f, rtol=1e-6)
    np.testing.assert_allclose(
        out['c']['biases'], bn['offset'] - bn['mean'] * f, rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(out['conv6_cls']['weights'], head['weights'])
    with pytest.raises(ValueError, match='x_bn: batch norm without a convolution'):
        fold_weights({'x_bn': bn})
    with pytest.raises(ValueError, match='c: convolution without bias and without c_bn'):
        fold_weights({'c': {'weights': w}})


# ------------------------------------------------------------------- serving-graph rewrites
def zoom_pad_dilated_conv(x, kernel):
    """The original op sequence: Caffe zoom x2, zero padding 2, 3x3 conv with dilation 2."""
    h, w = x.shape[1:3]
    z = tf.pad(
        resize_bilinear_align_corners(x, (2 * h - 1, 2 * w - 1)), [[0, 0], [2, 2], [2, 2], [0, 0]]
    )
    return tf.nn.atrous_conv2d(z, kernel, 2, 'VALID')


@pytest.mark.parametrize('h,w', [(2, 2), (2, 5), (5, 7), (3, 9), (16, 32)])
def test_zoom_dilated_conv_equals_zoom_pad_conv(h, w):
    rng = np.random.default_rng(h * 100 + w)
    x = tf.constant(rng.normal(size=(2, h, w, 3)).astype(np.float32))
    kernel = tf.constant(rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
    ref = zoom_pad_dilated_conv(x, kernel).numpy()
    dynamic = tf.function(
        zoom_dilated_conv,
        input_signature=[tf.TensorSpec([None, None, None, 3])] + [tf.TensorSpec([3, 3, 3, 4])],
    )
    for got in (zoom_dilated_conv(x, kernel), dynamic(x, kernel)):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-5 * np.abs(ref).max())


def test_serving_network_equals_the_folded_network(bn_net):
    plain = serving_network(bn_net, optimize=False)
    fast = serving_network(bn_net, optimize=True)
    assert isinstance(fast, ICNet) and isinstance(fast, LazyZoomNetwork)
    assert fast.input_order == 'RGB'
    x = images(193, 257, seed=3)
    ref = plain(x).numpy()
    got = fast(tf.reverse(x, axis=[-1])).numpy()  # the fast net takes RGB (minus the mean)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    rgb = tf.constant(uint8_image(160, 300, seed=1))  # padded to 193x320 inside
    a = SegmentationModule(plain).serve(rgb)
    b = SegmentationModule(fast).serve(rgb)
    assert np.mean(a['labels'].numpy() == b['labels'].numpy()) >= 0.9999
    np.testing.assert_allclose(a['probabilities'].numpy(), b['probabilities'].numpy(), atol=1e-4)


def test_labels_only_serving_equals_the_full_resize_and_the_plain_graph(bn_net):
    """sparse_label_upsampling: the labels-only module gives the labels of the same network
    with the full resize + top_k bit for bit, and >= 99.99% of the plain folded graph's."""
    plain = serving_network(bn_net, optimize=False)
    fast = serving_network(bn_net, optimize=True)
    assert isinstance(fast, SparseLabelNetwork)
    for hw, seed in (((160, 300), 1), ((193, 257), 2)):
        rgb = tf.constant(uint8_image(*hw, seed=seed))
        got = SegmentationModule(fast, probabilities=False).serve(rgb)
        assert set(got) == {'labels'} and got['labels'].shape == (1, *hw)
        # the same network and module with probabilities: its labels come from the full resize
        ref = SegmentationModule(fast, probabilities=True).serve(rgb)['labels'].numpy()
        np.testing.assert_array_equal(got['labels'].numpy(), ref)
        base = SegmentationModule(plain, probabilities=False).serve(rgb)['labels'].numpy()
        assert np.mean(got['labels'].numpy() == base) >= 0.9999


# --------------------------------------------------------------- dynamic pyramid pooling
@pytest.mark.parametrize('h,w', [(33, 65), (32, 64), (33, 64), (7, 13), (8, 8), (6, 11)])
@pytest.mark.parametrize('pooling', ['caffe', 'adaptive'])
def test_dynamic_pyramid_pooling_equals_the_static_path(h, w, pooling):
    x = tf.constant(np.random.default_rng(h * w).normal(size=(2, h, w, 4)).astype(np.float32))
    for n_bin in (1, 2, 3, 4, 6):
        if min(h, w) < n_bin:
            continue
        (k_h, k_w), (s_h, s_w) = psp_pool_geometry(h, w, n_bin, pooling)
        ref = tf.nn.avg_pool2d(x, [k_h, k_w], [s_h, s_w], 'VALID').numpy()
        pool = tf.function(
            lambda t, n=n_bin: psp_pool_dynamic(t, n, pooling),
            input_signature=[tf.TensorSpec([None, None, None, 4])],
        )
        got = pool(x).numpy()
        assert got.shape == ref.shape, (n_bin, got.shape, ref.shape)
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_network_with_runtime_shapes_equals_static_shapes(bn_net):
    dynamic = tf.function(
        lambda t: bn_net(t, outputs=['conv5_3_sum', 'conv6_cls']),
        input_signature=[tf.TensorSpec([None, None, None, 3])],
    )
    for hw in ((224, 300),):
        x = images(*hw, seed=5)
        ref = bn_net(x, outputs=['conv5_3_sum', 'conv6_cls'])
        got = dynamic(x)
        for name in ref:
            r = ref[name].numpy()
            assert np.abs(got[name].numpy() - r).max() <= 1e-4 * np.abs(r).max(), (hw, name)


@pytest.mark.slow
def test_runtime_shapes_use_the_prototxt_pooling_at_the_cityscapes_size():
    """conv5_3 = 33x65 (input 1025x2049): the tf.cond picks the prototxt kernels."""
    net = ICNet(num_classes=3)
    x = images(1025, 2049, seed=2)
    ref = net(x, outputs=['conv5_3/relu', 'conv5_3_sum'])
    assert tuple(ref['conv5_3/relu'].shape[1:3]) == (33, 65)
    got = tf.function(
        lambda t: net(t, outputs=['conv5_3_sum']),
        input_signature=[tf.TensorSpec([None, None, None, 3])],
    )(x)
    r = ref['conv5_3_sum'].numpy()
    assert np.abs(got['conv5_3_sum'].numpy() - r).max() <= 1e-4 * np.abs(r).max()
    adaptive = ICNet(num_classes=3, psp_pooling='adaptive')
    adaptive.load(
        {k: {p: v.numpy() for p, v in ps.items()} for k, ps in net.params.items()}, verbose=False
    )
    other = adaptive(x, outputs=['conv5_3_sum'])['conv5_3_sum'].numpy()
    assert np.abs(other - r).max() > 1e-3 * np.abs(r).max()  # the table really matters here


# ------------------------------------------------------------ the exported SavedModel (CLI)
def run_module(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, '-m', module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope='module')
def exported(tmp_path_factory, bn_net):
    tmp = tmp_path_factory.mktemp('export')
    weights = str(tmp / 'bn.npy')
    np.save(
        weights,
        {k: {p: v.numpy() for p, v in ps.items()} for k, ps in bn_net.params.items()},
        allow_pickle=True,
    )
    export_dir = str(tmp / 'saved_model')
    done = run_module(
        'icnet_tf.export',
        '--restore_from',
        weights,
        '--model',
        'ICNet_BN',
        '--num_classes',
        str(NUM_CLASSES),
        '--export_dir',
        export_dir,
        '--tflite',
        '--input_size',
        ','.join(map(str, TFLITE_SIZE)),
    )
    assert done.returncode == 0, done.stderr
    assert 'served as LabelsRGBServingICNet' in done.stdout and 'model.tflite' in done.stdout
    # no absl INFO lines from the SavedModel writer ("I1130 12:00:00.0 ... Function ...")
    assert not re.findall(r'^I\d{4} ', done.stderr, re.MULTILINE), done.stderr[-2000:]
    # the TFLite model is written from the optimised graph, minus the label rewrite
    assert 'rewrites: fold_batch_norm, zoom_before_conv, rgb_input); it runs with' in done.stdout
    return export_dir


@pytest.mark.parametrize('hw', [(193, 257), (160, 300)])
def test_saved_model_round_trip_on_any_size(exported, bn_net, hw):
    signature, _loaded = load_signature(exported)
    rgb = uint8_image(*hw, seed=hw[0])
    out = signature(images=tf.constant(rgb))
    labels, probs = out['labels'].numpy(), out['probabilities'].numpy()
    assert labels.dtype == np.int32 and labels.shape == (1, *hw)
    assert probs.dtype == np.float32 and probs.shape == (1, *hw, NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    expected = Segmenter(bn_net, compiled=False)(rgb)  # in memory, unfolded, eager
    assert np.mean(labels == expected) >= 0.9999


@pytest.mark.slow
def test_labels_only_saved_model_equals_the_plain_folded_graph(bn_net, tmp_path):
    """The exported labels-only SavedModel (sparse label upsampling inside) on images of any
    size: >= 99.99% of the plain folded graph's labels, identical to its own full resize."""
    export_saved_model(bn_net, str(tmp_path / 'labels'), probabilities=False)
    signature, _loaded = load_signature(str(tmp_path / 'labels'))
    plain = SegmentationModule(serving_network(bn_net, optimize=False), probabilities=False)
    full = SegmentationModule(serving_network(bn_net), probabilities=True)
    for hw, seed in (((193, 257), 3), ((224, 320), 4)):
        rgb = tf.constant(uint8_image(*hw, seed=seed))
        got = signature(images=rgb)
        assert set(got) == {'labels'} and got['labels'].shape == (1, *hw)
        np.testing.assert_array_equal(got['labels'].numpy(), full.serve(rgb)['labels'].numpy())
        agree = np.mean(got['labels'].numpy() == plain.serve(rgb)['labels'].numpy())
        assert agree >= 0.9999


def test_saved_model_cli_lists_the_serving_signature(exported):
    done = subprocess.run(
        [os.path.join(BIN, 'saved_model_cli'), 'show', '--dir', exported, '--all'],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    section = text[text.index("signature_def['serving_default']") :]
    section = section[: section.index('Method name is')]
    assert "inputs['images']" in section and 'DT_UINT8' in section
    # any shape is declared: the graph checks it (tests/test_serving.py)
    images = section[section.index("inputs['images']") : section.index('output(s)')]
    assert 'shape: unknown_rank' in images, images
    assert "outputs['labels']" in section and 'DT_INT32' in section
    assert "outputs['probabilities']" in section and 'DT_FLOAT' in section
    assert f'(-1, -1, -1, {NUM_CLASSES})' in section


def test_tflite_model_runs_and_agrees_with_the_saved_model(exported):
    with open(os.path.join(exported, 'model.tflite'), 'rb') as f:
        content = f.read()
    # XNNPACK runs the graph only once the tensors are allocated (run_tflite does that)
    assert xnnpack_partitions(tflite_interpreter(content)) > 0
    bare = tf.lite.Interpreter(model_content=content)
    bare.get_signature_runner()
    assert xnnpack_partitions(bare) == 0
    image = sample_image(*TFLITE_SIZE, seed=4)
    got = run_tflite(content, image)
    signature, _loaded = load_signature(exported)
    ref = signature(images=tf.constant(image))
    assert got['labels'].shape == (1, *TFLITE_SIZE)
    assert np.mean(got['labels'] == ref['labels'].numpy()) >= 0.9999
    np.testing.assert_allclose(got['probabilities'], ref['probabilities'].numpy(), atol=1e-4)


def test_inference_cli_runs_an_exported_saved_model(exported, tmp_path):
    rgb = uint8_image(150, 210, seed=9)[0]
    Image.fromarray(rgb).save(tmp_path / 'frame.png')
    done = run_module(
        'icnet_tf.inference',
        '--img_path',
        str(tmp_path / 'frame.png'),
        '--restore_from',
        exported,
        '--save_dir',
        str(tmp_path / 'out'),
    )
    assert done.returncode == 0, done.stderr
    assert 'exported SavedModel' in done.stdout
    got = np.asarray(Image.open(tmp_path / 'out' / 'frame_trainIds.png'))
    signature, _loaded = load_signature(exported)
    np.testing.assert_array_equal(got, signature(images=tf.constant(rgb[None]))['labels'][0])


def test_export_cli_errors_are_one_line(tmp_path):
    done = run_module(
        'icnet_tf.export',
        '--restore_from',
        str(tmp_path / 'missing.npy'),
        '--num_classes',
        '3',
        '--export_dir',
        str(tmp_path / 'x'),
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error:') and 'missing.npy' in lines[0], (
        done.stderr
    )


def test_input_size_without_tflite_is_refused(tmp_path):
    """--input_size sizes the TFLite model only; without --tflite it would be silently ignored
    (the SavedModel size is --serving_size)."""
    done = run_module(
        'icnet_tf.export',
        '--restore_from',
        str(tmp_path / 'missing.npy'),
        '--export_dir',
        str(tmp_path / 'x'),
        '--input_size',
        '256,512',
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        'error: --input_size is the size of the TFLite model (with --tflite); the SavedModel '
        'takes any size, or one fixed with --serving_size H,W'
    ]
    assert not (tmp_path / 'x').exists()
