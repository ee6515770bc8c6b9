"""FlowNetS (dff_tf.flownet) and its PyTorch key map (converters.flownet_keys).

Parity is checked twice: against a FlowNetPytorch-layout FlowNetS written here in torch (through
real `.pth` files and `net.load`), and against golden tensors of the real FlowNetPytorch code
(tests/golden/make_flownet_golden.py; that check needs no torch).
"""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from converters import flownet_keys
from converters.errors import WeightsMismatchError
from dff_tf.flownet import (
    FLOW_OUTPUTS,
    FLOWNET_VARIANTS,
    FlowNetS,
    build_flownet,
    flownet_config,
)
from icnet_tf.network import Network
from tests.golden.seeded import seeded_torch_state_dict, seeded_uniform

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
PLAIN_PARAMS = 38_675_536


def _rel_err(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _nchw_to_nhwc(x):
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


@pytest.fixture(scope='module')
def nets():
    """One built FlowNetS per variant, shared by the module (38.7M parameters each)."""
    return {bn: FlowNetS(batch_norm=bn).build() for bn in (False, True)}


# ------------------------------------------------------------------------------ structure
@pytest.mark.parametrize('hw', [(80, 112), (97, 131), (64, 64)])
def test_output_shapes_for_sizes_not_divisible_by_64(nets, hw):
    net = nets[False]
    x = tf.zeros((2, *hw, 6))
    flows = net(x, outputs=net.heads)
    assert list(flows) == list(FLOW_OUTPUTS)
    h, w = hw
    for level, name in zip((2, 3, 4, 5, 6), FLOW_OUTPUTS):
        for _ in range(level):  # every stride-2 conv with PyTorch padding: ceil(h / 2)
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        assert tuple(flows[name].shape) == (2, h, w, 2), name
        h, w = hw
    assert net(x).shape == (2, math.ceil(hw[0] / 4), math.ceil(hw[1] / 4), 2)


def test_parameter_inventory(nets):
    plain, bn = nets[False], nets[True]
    assert plain.count_params() == PLAIN_PARAMS
    assert len(plain.trainable_variables) == 10 * 2 + 4 + 5 + 4
    assert len(bn.trainable_variables) == 10 + 10 * 2 + 4 + 5 + 4
    assert {k for k, p in plain.params.items() if 'biases' in p} == set(flownet_keys.ENCODER_CONVS)
    assert not any('biases' in p for p in bn.params.values())
    # BN adds gamma, beta, mean, variance per conv and removes the conv biases
    assert bn.count_params() == PLAIN_PARAMS + 3 * sum(
        bn.params[c]['weights'].shape[-1] for c in flownet_keys.ENCODER_CONVS
    )
    assert plain.params['deconv4']['weights'].shape == (4, 4, 256, 1026)
    assert plain.params['upsampled_flow3_to_2']['weights'].shape == (4, 4, 2, 2)
    assert plain.params['predict_flow2']['weights'].shape == (3, 3, 194, 2)


def test_graph_mode_with_unknown_spatial_size_matches_eager(nets):
    net = nets[True]
    x = seeded_uniform((1, 97, 131, 6), 5, -0.5, 0.5)
    fn = tf.function(lambda t: net(t), input_signature=[tf.TensorSpec([None, None, None, 6])])
    eager = net(x).numpy()
    np.testing.assert_allclose(fn(x).numpy(), eager, atol=1e-5 * np.abs(eager).max())


@pytest.mark.parametrize('bn', [False, True])
def test_every_trainable_variable_gets_a_gradient(nets, bn):
    net = nets[bn]
    x = seeded_uniform((2, 64, 64, 6), 9, -0.5, 0.5)
    with tf.GradientTape() as tape:
        flows = net(x, training=True, outputs=net.heads)
        loss = sum(tf.reduce_mean(tf.square(f)) for f in flows.values())
    grads = tape.gradient(loss, net.trainable_variables)
    dead = [
        v.name for v, g in zip(net.trainable_variables, grads) if g is None or not np.any(g.numpy())
    ]
    assert not dead, dead


# -------------------------------------------------------------------------------- key map
def _np_conv_oihw(x, w, stride, pad):
    """Direct cross-correlation in PyTorch layouts: x (C, H, W), w (O, C, kh, kw)."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    o, _, kh, kw = w.shape
    ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    y = np.zeros((o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw]
            y[:, i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
    return y


def _np_conv_transpose_iohw(x, w, stride, pad):
    """Direct PyTorch ConvTranspose2d: x (C, H, W), w (C, O, kh, kw); scatter, then crop pad."""
    c, h, wd = x.shape
    _, o, kh, kw = w.shape
    full = np.zeros((o, (h - 1) * stride + kh, (wd - 1) * stride + kw))
    for i in range(h):
        for j in range(wd):
            full[:, i * stride : i * stride + kh, j * stride : j * stride + kw] += np.tensordot(
                x[:, i, j], w, axes=([0], [0])
            )
    return full[:, pad : full.shape[1] - pad, pad : full.shape[2] - pad]


class _TinyConvs(Network):
    """A padded stride-2 conv and a ConvTranspose2d(k4, s2, p1) on the builder."""

    input_channels = 3
    output_name = 'up'

    def build_input_shape(self):
        return (1, 5, 6, 3)

    def setup(self, n):
        (
            n.feed('data')
            .zero_padding(1, name='pad')
            .conv(3, 3, 2, 2, 2, relu=False, biased=True, name='conv')
        )
        n.feed('data').conv_transpose(4, 4, 2, 2, 2, crop=1, name='up')


def test_conv_and_transposed_conv_transforms_match_pytorch_layout_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 6)).astype(np.float32)  # C, H, W
    w_conv = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)  # O, I, kh, kw
    b_conv = rng.normal(size=(2,)).astype(np.float32)
    w_up = rng.normal(size=(3, 2, 4, 4)).astype(np.float32)  # I, O, kh, kw (asymmetric)
    sd = {
        'predict_flow6.weight': w_conv,
        'conv1.0.bias': b_conv,
        'upsampled_flow6_to_5.weight': w_up,
    }
    conv = flownet_keys.convert(sd, batch_norm=False)
    assert conv['predict_flow6']['weights'].shape == (3, 3, 3, 2)
    assert conv['upsampled_flow6_to_5']['weights'].shape == (4, 4, 2, 3)
    net = _TinyConvs()
    net.load(
        {
            'conv': {
                'weights': conv['predict_flow6']['weights'],
                'biases': conv['conv1']['biases'],
            },
            'up': {'weights': conv['upsampled_flow6_to_5']['weights']},
        }
    )
    out = net(x.transpose(1, 2, 0)[None], outputs=['conv', 'up'])
    ref_conv = _np_conv_oihw(x, w_conv, 2, 1) + b_conv[:, None, None]
    ref_up = _np_conv_transpose_iohw(x, w_up, 2, 1)
    assert ref_up.shape == (2, 10, 12)
    np.testing.assert_allclose(out['conv'].numpy()[0].transpose(2, 0, 1), ref_conv, atol=1e-5)
    np.testing.assert_allclose(out['up'].numpy()[0].transpose(2, 0, 1), ref_up, atol=1e-5)
    # a spatially flipped kernel would not match: the check above is sensitive to the flip
    assert np.abs(_np_conv_transpose_iohw(x, w_up[:, :, ::-1, ::-1], 2, 1) - ref_up).max() > 0.1


def _bn_state_dict(net):
    shapes = net.torch_state_dict_shapes()
    return {
        k: np.zeros(s, np.int64 if k.endswith('num_batches_tracked') else np.float32)
        for k, s in shapes.items()
    }


def test_key_table_names_and_bn_vectors():
    table = flownet_keys.key_table(batch_norm=True)
    assert table['conv3_1.1.running_var'] == ('conv3_1_bn', 'variance', 'identity')
    assert table['conv3_1.1.weight'] == ('conv3_1_bn', 'scale', 'identity')
    assert table['deconv2.0.weight'] == ('deconv2', 'weights', 'deconv_iohw_to_hwoi')
    assert flownet_keys.key_table(False)['conv6_1.0.bias'] == ('conv6_1', 'biases', 'identity')
    sd = {
        'conv1.1.weight': np.arange(64.0),
        'conv1.1.bias': -np.arange(64.0),
        'conv1.1.running_mean': np.ones(64),
        'conv1.1.running_var': np.full(64, 2.0),
        'conv1.1.num_batches_tracked': np.array(12345, np.int64),
    }
    out = flownet_keys.convert(sd, batch_norm=True)
    assert list(out) == ['conv1_bn']  # num_batches_tracked: ignored, not even "unmapped"
    bn = out['conv1_bn']
    assert set(bn) == {'scale', 'offset', 'mean', 'variance'}
    np.testing.assert_array_equal(bn['offset'], -np.arange(64.0))
    assert all(v.dtype == np.float32 for v in bn.values())


def test_unknown_keys_are_reported_not_dropped(nets, tmp_path):
    sd = _bn_state_dict(nets[True])
    sd['conv_redir.0.weight'] = np.zeros((32, 256, 1, 1), np.float32)  # a FlowNetC key
    out = flownet_keys.convert(sd, batch_norm=True)
    assert list(out[flownet_keys.UNMAPPED]) == ['conv_redir.0.weight']
    with pytest.raises(WeightsMismatchError, match=r'1 unexpected \(<unmapped>/conv_redir'):
        nets[True].load(out, verbose=False)
    report = nets[True].load(out, ignore_missing=True, verbose=False)
    assert report.unexpected == ['<unmapped>/conv_redir.0.weight'] and not report.missing


def test_variant_mismatch_is_named(nets):
    bn_sd = _bn_state_dict(nets[True])
    with pytest.raises(
        WeightsMismatchError,
        match=r"batch-norm FlowNetS \(FlowNetPytorch 'flownets_bn'\).*"
        r'conv1\.1\.weight.*build FlowNetS\(batch_norm=True\)',
    ):
        flownet_keys.convert(bn_sd, batch_norm=False)
    plain_sd = {
        'conv1.0.weight': np.zeros((64, 6, 7, 7), np.float32),
        'conv1.0.bias': np.zeros(64, np.float32),
    }
    with pytest.raises(
        WeightsMismatchError, match=r'plain FlowNetS.*conv1\.0\.bias.*batch_norm=False'
    ):
        flownet_keys.convert(plain_sd, batch_norm=True)


def test_wrong_rank_and_torch_shapes_inverse(nets):
    with pytest.raises(WeightsMismatchError, match='conv2.0.weight: conv_oihw_to_hwio'):
        flownet_keys.convert({'conv2.0.weight': np.zeros((128, 64))}, batch_norm=False)
    shapes = flownet_keys.torch_shapes(nets[False].param_shapes(), False)
    assert shapes['deconv5.0.weight'] == (1024, 512, 4, 4)  # (in, out, kh, kw)
    assert shapes['predict_flow5.weight'] == (2, 1026, 3, 3)  # (out, in, kh, kw)
    assert len(shapes) == 33
    with pytest.raises(WeightsMismatchError, match='disagree'):
        flownet_keys.torch_shapes({'conv1/weights': (7, 7, 6, 64)}, False)


# ---------------------------------------------------- golden: the real FlowNetPytorch code
@pytest.mark.parametrize('variant', ['plain', 'bn'])
def test_golden_parity_with_flownetpytorch(nets, variant):
    golden = np.load(os.path.join(DATA, f'flownet_golden_{variant}.npz'))
    meta = json.loads(str(golden['meta']))
    net = nets[variant == 'bn']
    ours = net.torch_state_dict_shapes()
    assert list(ours) == meta['state_dict_keys']
    assert {k: list(s) for k, s in ours.items()} == meta['state_dict_shapes']
    sd = seeded_torch_state_dict(ours, meta['weight_seed'])
    net.load(net.torch_key_map(sd), verbose=False)
    x = _nchw_to_nhwc(seeded_uniform(meta['input_shape'], meta['input_seed'], *meta['input_range']))
    modes = ['eval'] + (['train'] if variant == 'bn' else [])
    for mode in modes:
        flows = net(x, training=mode == 'train', outputs=net.heads)
        for level, name in zip((2, 3, 4, 5, 6), FLOW_OUTPUTS):
            ref = _nchw_to_nhwc(golden[f'{mode}_flow{level}'])
            assert flows[name].shape == ref.shape
            err = _rel_err(flows[name].numpy(), ref)
            print(f'golden {variant} {mode} flow{level}: max|diff|/max|ref| = {err:.2e}')
            assert err <= 1e-4, (mode, level, err)


# ------------------------------------------------- a FlowNetPytorch-layout model in torch
def _torch_flownets(batch_norm, div=1):
    """FlowNetS in PyTorch with FlowNetPytorch's module names (written for this test); `div`
    divides the channels of every encoder conv and deconv (the light variants)."""
    import torch
    from torch import nn

    def unit(c_in, c_out, k, s):
        layers = [nn.Conv2d(c_in, c_out, k, s, (k - 1) // 2, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        return nn.Sequential(*layers, nn.LeakyReLU(0.1))

    def up(c_in, c_out):
        return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)

    class TorchFlowNetS(nn.Module):
        encoder = (
            ('conv1', 6, 64, 7, 2),
            ('conv2', 64, 128, 5, 2),
            ('conv3', 128, 256, 5, 2),
            ('conv3_1', 256, 256, 3, 1),
            ('conv4', 256, 512, 3, 2),
            ('conv4_1', 512, 512, 3, 1),
            ('conv5', 512, 512, 3, 2),
            ('conv5_1', 512, 512, 3, 1),
            ('conv6', 512, 1024, 3, 2),
            ('conv6_1', 1024, 1024, 3, 1),
        )
        # level, skip module, skip channels, deconv output channels; input channels follow
        decoder = (
            (5, 'conv5_1', 512, 512),
            (4, 'conv4_1', 512, 256),
            (3, 'conv3_1', 256, 128),
            (2, 'conv2', 128, 64),
        )

        def __init__(self):
            super().__init__()
            if div != 1:  # narrower layers: every channel count but the 6 input channels
                self.encoder = tuple(
                    (n, c_in if c_in == 6 else c_in // div, c_out // div, k, s)
                    for n, c_in, c_out, k, s in self.encoder
                )
                self.decoder = tuple(
                    (lv, skip, skip_c // div, deconv_c // div)
                    for lv, skip, skip_c, deconv_c in self.decoder
                )
            for name, c_in, c_out, k, s in self.encoder:
                setattr(self, name, unit(c_in, c_out, k, s))
            features = self.encoder[-1][2]
            for level, _, skip_c, deconv_c in self.decoder:
                setattr(
                    self, f'deconv{level}', nn.Sequential(up(features, deconv_c), nn.LeakyReLU(0.1))
                )
                features = skip_c + deconv_c + 2
            widths = [self.encoder[-1][2]] + [
                skip_c + deconv_c + 2 for _, _, skip_c, deconv_c in self.decoder
            ]
            for level, c_in in zip((6, 5, 4, 3, 2), widths):
                setattr(self, f'predict_flow{level}', nn.Conv2d(c_in, 2, 3, 1, 1, bias=False))
            for level in (6, 5, 4, 3):
                setattr(self, f'upsampled_flow{level}_to_{level - 1}', up(2, 2))

        def forward(self, x):
            outs = {}
            for name, *_ in self.encoder:
                x = outs[name] = getattr(self, name)(x)
            features, flows = x, []
            for level, skip, _, _ in self.decoder:
                s = outs[skip]
                h, w = s.shape[2:]
                flow = getattr(self, f'predict_flow{level + 1}')(features)
                flows.append(flow)
                flow_up = getattr(self, f'upsampled_flow{level + 1}_to_{level}')(flow)
                deconv = getattr(self, f'deconv{level}')(features)
                features = torch.cat([s, deconv[:, :, :h, :w], flow_up[:, :, :h, :w]], 1)
            flows.append(self.predict_flow2(features))
            return flows[::-1]  # flow2 .. flow6

    return TorchFlowNetS()


@pytest.fixture(scope='module')
def torch_models():
    return {}


@pytest.mark.torch
@pytest.mark.parametrize('bn,fmt', [(False, 'zip'), (True, 'zip'), (True, 'legacy_module')])
def test_parity_with_torch_checkpoint(nets, torch_models, tmp_path, bn, fmt):
    import torch

    if bn not in torch_models:
        torch_models[bn] = _torch_flownets(bn).eval()
    model = torch_models[bn]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    net = nets[bn]
    assert net.torch_state_dict_shapes() == shapes
    n_torch = sum(p.numel() for p in model.parameters())
    if not bn:
        assert n_torch == PLAIN_PARAMS == net.count_params()
    else:  # ours also counts the moving statistics (buffers in torch)
        assert net.count_params() == n_torch + 2 * sum(
            v.numel() for k, v in model.state_dict().items() if k.endswith('running_mean')
        )
    # a different seed per case, so that a load that silently did nothing could not pass
    sd = seeded_torch_state_dict(shapes, seed={'zip': 3, 'legacy_module': 4}[fmt] + bn)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    if fmt == 'legacy_module':
        path = tmp_path / 'model_best.pth.tar'
        torch.save(
            {
                'epoch': 1,
                'arch': 'flownets_bn',
                'div_flow': 20,
                'state_dict': {'module.' + k: v for k, v in model.state_dict().items()},
            },
            path,
            _use_new_zipfile_serialization=False,
        )
    else:
        path = tmp_path / 'flownets.pth'
        torch.save(
            {
                'epoch': 1,
                'arch': 'flownets_bn' if bn else 'flownets',
                'div_flow': 20,
                'state_dict': model.state_dict(),
            },
            path,
        )
    x = seeded_uniform((1, 6, 97, 131), 4, -0.5, 0.5)
    with torch.no_grad():
        ref = [f.numpy() for f in model(torch.from_numpy(x))]
    net.load(path, verbose=False)
    flows = net(_nchw_to_nhwc(x), outputs=net.heads)
    for level, name, r in zip((2, 3, 4, 5, 6), FLOW_OUTPUTS, ref):
        r = _nchw_to_nhwc(r)
        assert flows[name].shape == r.shape, name
        err = _rel_err(flows[name].numpy(), r)
        print(f'torch {"bn" if bn else "plain"} {fmt} flow{level}: max|diff|/max|ref| = {err:.2e}')
        assert err <= 1e-4, (name, err)


# ------------------------------------------------------------------ light variants (width)
def _count_flownets_params(div):
    """Parameters of FlowNetPytorch's plain FlowNetS with every encoder conv and deconv `div`
    times narrower, counted from the architecture as FlowNetPytorch writes it (an independent
    count: no code of dff_tf.flownet)."""
    c = [64 // div, 128 // div, 256 // div, 512 // div, 1024 // div]
    encoder = [  # (c_in, c_out, k), all biased
        (6, c[0], 7),
        (c[0], c[1], 5),
        (c[1], c[2], 5),
        (c[2], c[2], 3),
        (c[2], c[3], 3),
        (c[3], c[3], 3),
        (c[3], c[3], 3),
        (c[3], c[3], 3),
        (c[3], c[4], 3),
        (c[4], c[4], 3),
    ]
    concat5, concat4 = c[3] + c[3] + 2, c[3] + c[2] + 2
    concat3, concat2 = c[2] + c[1] + 2, c[1] + c[0] + 2
    deconvs = [(c[4], c[3]), (concat5, c[2]), (concat4, c[1]), (concat3, c[0])]  # 4x4, no bias
    predictors = [c[4], concat5, concat4, concat3, concat2]  # 3x3 -> 2, no bias
    return (
        sum(k * k * i * o + o for i, o, k in encoder)
        + sum(16 * i * o for i, o in deconvs)
        + sum(9 * i * 2 for i in predictors)
        + 4 * 16 * 2 * 2  # upsampled_flow6_to_5 .. upsampled_flow3_to_2
    )


@pytest.fixture(scope='module')
def light():
    return {v: build_flownet(v, seed=1).build() for v in ('half', 'quarter')}


def test_independent_count_of_flownets():
    assert _count_flownets_params(1) == PLAIN_PARAMS  # the count itself is right


@pytest.mark.parametrize('variant,div', [('half', 2), ('quarter', 4)])
def test_light_variant_parameters_and_shapes(light, variant, div):
    net = light[variant]
    assert net.count_params() == _count_flownets_params(div)
    assert net.variant == variant and flownet_config(net) == variant
    assert net.batch_norm is False and net.width == 1 / div
    assert net.params['conv1']['weights'].shape == (7, 7, 6, 64 // div)
    # deconv2 reads concat3 = conv3_1 + out_deconv3 + flow: (256 + 128) / div + 2 channels
    assert net.params['deconv2']['weights'].shape == (4, 4, 64 // div, 384 // div + 2)
    assert net.concat_channels(2) == 192 // div + 2
    # same layers and parameter names as FlowNetS, and the same PyTorch keys
    full = FlowNetS(width=1.0).build()
    assert set(net.param_shapes()) == set(full.param_shapes())
    assert list(net.torch_state_dict_shapes()) == list(full.torch_state_dict_shapes())
    for hw in [(97, 131), (64, 64)]:
        x = tf.zeros((1, *hw, 6))
        flows = net(x, outputs=net.heads)
        ref = full(x, outputs=full.heads)
        for name in FLOW_OUTPUTS:
            assert flows[name].shape == ref[name].shape, (name, hw)


def test_width_one_is_flownets_exactly(nets):
    golden = np.load(os.path.join(DATA, 'flownet_golden_plain.npz'))
    meta = json.loads(str(golden['meta']))
    net = build_flownet({'batch_norm': False, 'width': 1}, seed=3).build()
    assert net.name == 'FlowNetS' and flownet_config(net) == 'plain'
    assert nets[False].variant == 'plain' and nets[True].variant == 'bn'
    assert net.param_shapes() == nets[False].param_shapes()
    shapes = net.torch_state_dict_shapes()
    assert {k: list(v) for k, v in shapes.items()} == meta['state_dict_shapes']
    # the same weights give the same flow as FlowNetS()
    net.load(
        {k: {p: v.numpy() for p, v in ps.items()} for k, ps in nets[False].params.items()},
        verbose=False,
    )
    x = seeded_uniform((1, 64, 96, 6), 2, -0.5, 0.5)
    np.testing.assert_array_equal(net(x).numpy(), nets[False](x).numpy())


@pytest.mark.parametrize('variant', ['half', 'quarter'])
def test_light_variant_gradients_reach_every_variable(light, variant):
    net = light[variant]
    x = seeded_uniform((2, 64, 64, 6), 9, -0.5, 0.5)
    with tf.GradientTape() as tape:
        flows = net(x, training=True, outputs=net.heads)
        loss = sum(tf.reduce_mean(tf.square(f)) for f in flows.values())
    grads = tape.gradient(loss, net.trainable_variables)
    assert len(grads) == 10 * 2 + 4 + 5 + 4
    dead = [
        v.name for v, g in zip(net.trainable_variables, grads) if g is None or not np.any(g.numpy())
    ]
    assert not dead, dead


def test_build_flownet_arguments():
    custom = build_flownet({'batch_norm': True, 'width': 0.5})
    assert custom.variant is None and flownet_config(custom) == {'batch_norm': True, 'width': 0.5}
    assert custom.name == 'FlowNetS_BN_w0_5'
    assert build_flownet(custom) is custom
    with pytest.raises(ValueError, match='flownet must be one of plain, bn, half, quarter'):
        build_flownet('eighth')
    with pytest.raises(ValueError, match=r"unknown FlowNetS arguments \['depth'\]"):
        build_flownet({'depth': 2})
    with pytest.raises(ValueError, match='width must be in'):
        FlowNetS(width=0)
    with pytest.raises(TypeError, match='a name, a dict or a FlowNetS'):
        build_flownet(3)
    assert set(FLOWNET_VARIANTS) == {'plain', 'bn', 'half', 'quarter'}


@pytest.mark.torch
def test_half_width_parity_with_torch_checkpoint(light, tmp_path):
    """The light variant is FlowNetPytorch's FlowNetS with narrower layers: a checkpoint of such
    a torch model loads through the same key map and gives the same flows."""
    import torch

    model = _torch_flownets(False, div=2).eval()
    net = light['half']
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert net.torch_state_dict_shapes() == shapes
    assert sum(p.numel() for p in model.parameters()) == net.count_params()
    sd = seeded_torch_state_dict(shapes, seed=11)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    path = tmp_path / 'flownets_half.pth'
    torch.save({'arch': 'flownets', 'div_flow': 20, 'state_dict': model.state_dict()}, path)
    x = seeded_uniform((1, 6, 97, 131), 4, -0.5, 0.5)
    with torch.no_grad():
        ref = [f.numpy() for f in model(torch.from_numpy(x))]
    net.load(path, verbose=False)
    flows = net(_nchw_to_nhwc(x), outputs=net.heads)
    for name, r in zip(FLOW_OUTPUTS, ref):
        err = _rel_err(flows[name].numpy(), _nchw_to_nhwc(r))
        assert err <= 1e-4, (name, err)
    # and a full-width checkpoint does not fit it: every wrong shape is named
    with pytest.raises(WeightsMismatchError, match='conv1/weights'):
        sd = seeded_torch_state_dict(FlowNetS().torch_state_dict_shapes(), 1)
        net.load(net.torch_key_map(sd), verbose=False)


def test_flownet_weights_are_recognised(nets, light):
    """A FlowNetS snapshot given where another network is expected is named as one (the
    'the file holds ...' hint), with its variant's options."""
    for net in (*nets.values(), *light.values()):
        weights = {}
        for key, shape in net.param_shapes().items():
            layer, param = key.split('/')
            weights.setdefault(layer, {})[param] = np.broadcast_to(np.float32(0), shape)
        options = f'batch_norm={net.batch_norm}, width={net.width}'
        assert Network.describe_weights(weights) == f'holds FlowNetS ({options})'
