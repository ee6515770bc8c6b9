"""Parity with the ORIGINAL TF1 ICNet graph (hellochick/ICNet-tensorflow 90a85c4 under
tf.compat.v1), via golden tensors made by tests/golden/make_icnet_golden.py.

Weights and inputs are regenerated here from tests/golden/seeded.py, exactly as the generator
fed them to the TF1 graph through its own `load_npy`. Tolerance (BUILD.md, fidelity notes): max abs
difference <= 1e-4 * max |reference| and identical argmax on >= 99.99% of pixels.
"""

import json
import os

import numpy as np
import pytest

from icnet_tf import ICNet, ICNet_BN
from tests.golden.seeded import seeded_images, seeded_weights

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
RTOL = 1e-4  # of max |reference|
ARGMAX_AGREEMENT = 0.9999

# case file -> how the TF1 graph was configured, in this port's terms
CASES = {
    # TF1 ICNet_BN: adaptive pyramid with h/1, h/2, h/3, h/4 (psp_bins=(1, 2, 3, 4)).
    'bn_eval_193x385': (ICNet_BN, dict(num_classes=19, psp_bins=(1, 2, 3, 4))),
    'bn_eval_192x384': (ICNet_BN, dict(num_classes=19, psp_bins=(1, 2, 3, 4))),
    'bn_fs2_nc5_129x257': (ICNet_BN, dict(num_classes=5, filter_scale=2, psp_bins=(1, 2, 3, 4))),
    # TF1 ICNet (merged BN) outside Cityscapes evaluation: adaptive h/n with bins 1, 2, 3, 6.
    'icnet_train_193x385': (ICNet, dict(num_classes=19, psp_pooling='adaptive')),
}


def load_case(name):
    with np.load(os.path.join(DATA, f'icnet_golden_{name}.npz')) as z:
        golden = {k: z[k] for k in z.files}
    return golden, json.loads(str(golden.pop('meta'))), json.loads(str(golden.pop('param_shapes')))


def build(cls, kwargs, param_shapes):
    net = cls(**kwargs).build()
    ours = {k: list(v) for k, v in net.param_shapes().items()}
    assert ours == param_shapes, 'variable names/shapes differ from the TF1 graph'
    net.load(seeded_weights(param_shapes, seed=0))
    return net


def assert_close(name, got, ref, rtol=RTOL):
    scale = np.abs(ref).max()
    diff = np.abs(got - ref).max()
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    assert diff <= rtol * scale, f'{name}: max diff {diff:.3g} > {rtol} x {scale:.3g}'
    return diff / scale


def assert_argmax(got, ref):
    agree = np.mean(np.argmax(got, -1) == np.argmax(ref, -1))
    assert agree >= ARGMAX_AGREEMENT, agree


@pytest.mark.parametrize('case', list(CASES))
def test_inference_matches_tf1(case):
    golden, meta, shapes = load_case(case)
    cls, kwargs = CASES[case]
    net = build(cls, kwargs, shapes)
    images = seeded_images(meta['input_shape'], seed=1)
    names = [k.replace('__', '/') for k in golden]
    out = net(images, training=False, outputs=names)
    for key, name in zip(golden, names):
        assert_close(name, out[name].numpy(), golden[key])
    assert_argmax(out['conv6_cls'].numpy(), golden['conv6_cls'])


@pytest.mark.slow
def test_cityscapes_eval_graph_with_prototxt_pooling_matches_tf1():
    """ICNet (merged BN) at 1025x2049 with the prototxt pyramid kernels (TF1 'eval' mode)."""
    golden, meta, shapes = load_case('icnet_eval_cityscapes_1025x2049')
    net = build(ICNet, dict(num_classes=19), shapes)
    out = net(seeded_images(meta['input_shape'], seed=1), outputs=['conv6_cls', 'conv5_3_sum'])
    for name in ('conv6_cls', 'conv5_3_sum'):
        got = out[name].numpy()[0]
        idx = golden[f'{name}_sample_idx']
        sample = got[idx[:, 0], idx[:, 1], idx[:, 2]]
        scale = float(golden[f'{name}_max_abs'])
        assert abs(np.abs(got).max() - scale) <= RTOL * scale
        assert np.abs(sample - golden[f'{name}_sample']).max() <= RTOL * scale
    agree = np.mean(np.argmax(out['conv6_cls'].numpy()[0], -1) == golden['conv6_cls_argmax'])
    assert agree >= ARGMAX_AGREEMENT, agree


def test_training_mode_batch_statistics_and_moving_average_update_match_tf1():
    golden, meta, shapes = load_case('bn_training_b2_129x257')
    net = build(ICNet_BN, dict(num_classes=19, psp_bins=(1, 2, 3, 4)), shapes)
    images = seeded_images(meta['input_shape'], seed=1)
    got = net(images, training=True).numpy()
    # Batch-statistics BN amplifies float noise (oneDNN vs plain kernels move this case by
    # ~8e-5 of max|ref| in the TF1 graph itself), hence a looser bound than inference.
    assert_close('conv6_cls (training mode)', got, golden['conv6_cls'], rtol=1e-3)
    layers = sorted({k.split('/')[1] for k in golden if k.startswith('after_update/')})
    for layer in layers:  # training mode alone must not move the statistics
        for stat in ('mean', 'variance'):
            np.testing.assert_array_equal(
                net.params[layer][stat].numpy(), golden[f'before_update/{layer}/{stat}']
            )
    net(images, training=True, update_stats=True)
    for layer in layers:
        for stat in ('mean', 'variance'):
            np.testing.assert_allclose(
                net.params[layer][stat].numpy(),
                golden[f'after_update/{layer}/{stat}'],
                rtol=1e-4,
                atol=1e-5,
            )
