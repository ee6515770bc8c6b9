"""Whole-network checks of ICNet_BN and ICNet: structure, gradients, output sizes, modes."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from icnet_tf import ICNet, ICNet_BN, build_model
from icnet_tf.icnet import PROTOTXT_PSP_POOLS, psp_pool_geometry

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


@pytest.mark.parametrize('cls', [ICNet_BN, ICNet])
@pytest.mark.parametrize('filter_scale', [1, 2])
def test_parameter_counts_equal_the_tf1_graph(cls, filter_scale):
    # Counted in the original TF1 graph (tests/golden/make_icnet_golden.py).
    with open(os.path.join(DATA, 'icnet_param_counts.json')) as f:
        ref = json.load(f)[f'{cls.__name__}_fs{filter_scale}']
    net = cls(num_classes=19, filter_scale=filter_scale).build()
    assert net.count_params() == ref['total']
    assert net.count_params(trainable_only=True) == ref['trainable']
    n_conv = sum('weights' in p for p in net.params.values())
    n_bn = sum('mean' in p for p in net.params.values())
    assert (n_conv, n_bn) == (ref['conv_layers'], ref['bn_layers'])


def test_layer_inventory():
    bn = ICNet_BN().build()
    convs = [k for k, p in bn.params.items() if 'weights' in p]
    assert len(convs) == 66 and len([k for k in bn.params if k.endswith('_bn')]) == 63
    assert {k for k, p in bn.params.items() if 'biases' in p} == {
        'conv6_cls',
        'sub4_out',
        'sub24_out',
    }
    merged = ICNet().build()
    assert len(merged.params) == 64 and all('biases' in p for p in merged.params.values())
    assert set(merged.params) == set(convs) - {'sub4_out', 'sub24_out'}
    # filter_scale doubles every width except the class heads
    wide = ICNet_BN(num_classes=7, filter_scale=2).build()
    assert wide.params['conv1_1_3x3_s2']['weights'].shape == (3, 3, 3, 64)
    assert wide.params['conv6_cls']['weights'].shape == (1, 1, 256, 7)
    assert wide.params['sub4_out']['weights'].shape == (1, 1, 512, 7)


@pytest.mark.parametrize('cls', [ICNet_BN, ICNet])
def test_every_trainable_variable_gets_a_gradient(cls):
    net = cls(num_classes=4)
    x = tf.random.stateless_normal((2, 193, 193, 3), [1, 2]) * 50
    with tf.GradientTape() as tape:
        out = net(x, training=True, outputs=list(net.loss_weights))
        loss = sum(tf.reduce_mean(tf.square(v)) for v in out.values())
    grads = tape.gradient(loss, net.trainable_variables)
    dead = [
        v.name for v, g in zip(net.trainable_variables, grads) if g is None or not np.any(g.numpy())
    ]
    assert not dead, dead
    assert len(net.trainable_variables) == (66 + 2 * 63 + 3 if cls is ICNet_BN else 2 * 64)


@pytest.mark.slow
@pytest.mark.parametrize(
    'hw,heads',
    [
        ((1025, 2049), {'sub4_out': (65, 129), 'sub24_out': (129, 257), 'conv6_cls': (257, 513)}),
        # Even sizes: Caffe's size rules give branches one pixel apart; `add` resizes (see
        # BUILD.md).
        ((1024, 2048), {'sub4_out': (63, 127), 'sub24_out': (127, 255), 'conv6_cls': (255, 511)}),
    ],
)
def test_output_sizes_at_cityscapes_resolution(hw, heads):
    net = ICNet_BN(num_classes=19)
    out = net(tf.zeros((1, *hw, 3)), outputs=list(heads))
    assert {k: tuple(v.shape[1:3]) for k, v in out.items()} == heads
    assert tuple(net.layers['conv5_3/relu'].shape[1:3]) == ((33, 65) if hw[0] == 1025 else (32, 64))


def test_eager_and_tf_function_agree():
    net = ICNet_BN(num_classes=5)
    x = tf.random.stateless_normal((1, 161, 225, 3), [3, 4]) * 50
    eager = net(x).numpy()
    graph = tf.function(lambda t: net(t))(x).numpy()
    np.testing.assert_allclose(graph, eager, atol=1e-5 * np.abs(eager).max())


def test_pyramid_geometry():
    assert psp_pool_geometry(33, 65, 2) == ((17, 33), (16, 32))
    assert psp_pool_geometry(33, 65, 6) == ((8, 15), (5, 10))
    assert psp_pool_geometry(33, 65, 6, 'adaptive') == ((5, 10), (5, 10))
    assert psp_pool_geometry(33, 65, 4) == ((8, 16), (8, 16))  # no prototxt entry for bin 4
    assert psp_pool_geometry(7, 13, 3) == ((2, 4), (2, 4))
    for n_bin, (k, s) in PROTOTXT_PSP_POOLS[(33, 65)].items():
        assert ((33 - k[0]) // s[0] + 1, (65 - k[1]) // s[1] + 1) == (n_bin, n_bin)
    with pytest.raises(ValueError, match='at least 193x193'):
        psp_pool_geometry(4, 9, 6)


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match='too small'):
        ICNet_BN()(tf.zeros((1, 97, 97, 3)))


def test_constructor_validation_and_registry():
    with pytest.raises(ValueError, match='filter_scale'):
        ICNet_BN(filter_scale=3)
    with pytest.raises(ValueError, match='psp_pooling'):
        ICNet(psp_pooling='max')
    with pytest.raises(ValueError, match='unknown model'):
        build_model('ICNet_XL')
    assert build_model('ICNet', num_classes=3).get_config() == {
        'num_classes': 3,
        'filter_scale': 1,
        'psp_bins': [1, 2, 3, 6],
        'psp_pooling': 'caffe',
    }
