"""PSPNet101 in the Caffe and the mmsegmentation layouts: structure, PyTorch parity, key map."""

import dataclasses
import functools
import json
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from converters import mmseg_keys
from converters.errors import WeightsFileError, WeightsMismatchError
from icnet_tf import MODELS, PSPNet101, build_model
from icnet_tf.network import CAFFE_BGR_MEAN
from icnet_tf.pspnet import (
    CAFFE,
    CAFFE_TF1,
    FIXED_PPM_GRID,
    MMSEG_RGB_MEAN,
    MMSEG_RGB_STD,
    adaptive_avg_pool2d,
    adaptive_windows,
    backbone_side,
    caffe_pool_padding,
    preprocess,
)
from tests.golden.seeded import (
    seeded_images,
    seeded_torch_state_dict,
    seeded_uniform,
    seeded_weights,
)

SMALL = dict(blocks=(1, 1, 2, 1), width_multiplier=1 / 8)  # test-only depth and width


# ------------------------------------------------------------------------ independent counts
def expected_param_count(num_classes, stem, blocks=(3, 4, 23, 3), bins=4, m=1):
    """Parameters of the PSPNet-101 graph counted from its layer table (not from the code)."""

    def conv(k, c_in, c_out, bias=False):
        return k * k * c_in * c_out + (c_out if bias else 0)

    bn_channels = []
    total, c_in = 0, 3
    for c in stem:
        c = int(c * m)
        total += conv(3, c_in, c)
        bn_channels.append(c)
        c_in = c
    for n_blocks, width, out in zip(blocks, (64, 128, 256, 512), (256, 512, 1024, 2048)):
        width, out = int(width * m), int(out * m)
        for i in range(n_blocks):
            if i == 0:
                total += conv(1, c_in, out)
                bn_channels.append(out)
            total += conv(1, c_in, width) + conv(3, width, width) + conv(1, width, out)
            bn_channels += [width, width, out]
            c_in = out
    ppm = int(512 * m)
    total += bins * conv(1, c_in, ppm) + conv(3, c_in + bins * ppm, ppm)
    bn_channels += [ppm] * (bins + 1)
    total += conv(1, ppm, num_classes, bias=True)
    total += 4 * sum(bn_channels)
    return total, total - 2 * sum(bn_channels)  # (all, trainable: moving mean/var are not)


# ------------------------------------------------------------------ the mmseg PyTorch mirror
def mmseg_pspnet(blocks=(3, 4, 23, 3), m=1, num_classes=19, bins=(1, 2, 3, 6)):
    """mmsegmentation `pspnet_r101-d8` (EncoderDecoder) written out in plain PyTorch.

    It mirrors mmseg's modules and their state-dict keys:
    * `backbone` = ResNetV1c (mmseg/models/backbones/resnet.py with deep_stem=True,
      stem_channels=64, style='pytorch', strides (1, 2, 1, 1), dilations (1, 1, 2, 4),
      contract_dilation=True): `stem` = Sequential(conv3x3/2 (32), BN, ReLU, conv3x3 (32), BN,
      ReLU, conv3x3 (64), BN, ReLU), max pool 3x3/2 pad 1, then `layer1..4` of mmseg's
      `Bottleneck` (conv1 1x1, conv2 3x3 carrying the stride and dilation with padding =
      dilation, conv3 1x1, each + bn1/bn2/bn3; `downsample` = Sequential(1x1 conv with the
      stride, BN) on each layer's first block), built like mmseg's `ResLayer` (first block's
      dilation halved when > 1).
    * `decode_head` = PSPHead: `psp_modules.j` = Sequential(AdaptiveAvgPool2d(bin),
      ConvModule(2048, 512, 1)) upsampled with F.interpolate(bilinear, align_corners=False),
      concat [x, pool1, pool2, pool3, pool6], `bottleneck` = ConvModule(3x3, pad 1), Dropout2d,
      `conv_seg` (1x1, bias). ConvModule = `.conv` (no bias) + `.bn` + ReLU, as in mmcv.
    * `auxiliary_head` = FCNHead on layer3 (`convs.0` ConvModule 3x3 -> 256, `conv_seg`):
      present in the weights, unused at inference.
    Widths are multiplied by `m` and block counts set by `blocks` (reduced for tests).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    def w(c):
        return int(c * m)

    class ConvModule(nn.Module):
        def __init__(self, c_in, c_out, k, padding=0):
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, k, padding=padding, bias=False)
            self.bn = nn.BatchNorm2d(c_out)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    class Bottleneck(nn.Module):
        def __init__(self, inplanes, planes, stride, dilation, downsample):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(
                planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
            )
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = downsample

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return F.relu(out + identity)

    def res_layer(inplanes, planes, n_blocks, stride, dilation):
        downsample = None
        if stride != 1 or inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        first = dilation // 2 if dilation > 1 else dilation  # contract_dilation=True
        layers = [Bottleneck(inplanes, planes, stride, first, downsample)]
        layers += [Bottleneck(planes * 4, planes, 1, dilation, None) for _ in range(1, n_blocks)]
        return nn.Sequential(*layers)

    class ResNetV1c(nn.Module):
        def __init__(self):
            super().__init__()
            half, full = w(32), w(64)
            self.stem = nn.Sequential(
                nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(),
                nn.Conv2d(half, half, 3, padding=1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(),
                nn.Conv2d(half, full, 3, padding=1, bias=False),
                nn.BatchNorm2d(full),
                nn.ReLU(),
            )
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            inplanes = full
            for i, (n_blocks, stride, dilation) in enumerate(
                zip(blocks, (1, 2, 1, 1), (1, 1, 2, 4))
            ):
                planes = w(64 * 2**i)
                setattr(
                    self, f'layer{i + 1}', res_layer(inplanes, planes, n_blocks, stride, dilation)
                )
                inplanes = planes * 4

        def forward(self, x):
            x = self.maxpool(self.stem(x))
            outs = []
            for i in range(1, 5):
                x = getattr(self, f'layer{i}')(x)
                outs.append(x)
            return outs

    class PSPHead(nn.Module):
        def __init__(self):
            super().__init__()
            c_in, ch = w(2048), w(512)
            self.psp_modules = nn.ModuleList(
                nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvModule(c_in, ch, 1)) for b in bins
            )
            self.bottleneck = ConvModule(c_in + len(bins) * ch, ch, 3, padding=1)
            self.dropout = nn.Dropout2d(0.1)
            self.conv_seg = nn.Conv2d(ch, num_classes, 1)

        def forward(self, x):
            outs = [x] + [
                F.interpolate(p(x), size=x.shape[2:], mode='bilinear', align_corners=False)
                for p in self.psp_modules
            ]
            return self.conv_seg(self.dropout(self.bottleneck(torch.cat(outs, dim=1))))

    class FCNHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.Sequential(ConvModule(w(1024), w(256), 3, padding=1))
            self.dropout = nn.Dropout2d(0.1)
            self.conv_seg = nn.Conv2d(w(256), num_classes, 1)

        def forward(self, x):
            return self.conv_seg(self.dropout(self.convs(x)))

    class EncoderDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = ResNetV1c()
            self.decode_head = PSPHead()
            self.auxiliary_head = FCNHead()

        def forward(self, img):
            return self.decode_head(self.backbone(img)[3])  # logits at 1/8, not resized

    return EncoderDecoder()


def torch_inference_count(module):
    sd = module.state_dict()
    return sum(
        int(np.prod(v.shape))
        for k, v in sd.items()
        if not k.startswith('auxiliary_head.') and not k.endswith('num_batches_tracked')
    )


# ---------------------------------------------------------------------------- 1. structure
@pytest.mark.torch
@pytest.mark.parametrize('layout', ['caffe', 'mmseg'])
def test_full_size_parameter_counts_layers_and_output_stride(layout):
    net = PSPNet101(num_classes=19, layout=layout).build()
    stem = (64, 64, 128) if layout == 'caffe' else (32, 32, 64)
    total, trainable = expected_param_count(19, stem)
    assert net.count_params() == total
    assert net.count_params(trainable_only=True) == trainable
    assert (total, trainable) == (
        {'caffe': (65818323, 65707475), 'mmseg': (65713523, 65602931)}[layout]
    )
    if layout == 'mmseg':  # the PyTorch model has exactly the same inference tensors
        import torch

        with torch.device('meta'):
            assert torch_inference_count(mmseg_pspnet()) == total
    convs = [k for k, p in net.params.items() if 'weights' in p]
    bns = [k for k in net.params if k.endswith('_bn')]
    assert (len(convs), len(bns)) == (3 + 33 * 3 + 4 + 4 + 2, 3 + 33 * 3 + 4 + 4 + 1)
    assert {k for k, p in net.params.items() if 'biases' in p} == {'conv6'}
    for name in (
        'conv1_1_3x3_s2_bn',
        'conv2_1_1x1_proj',
        'conv3_4_1x1_increase_bn',
        'conv4_23_3x3',
        'conv5_3_1x1_increase_bn',
        'conv5_3_pool6_conv_bn',
        'conv5_4',
        'conv5_4_bn',
        'conv6',
    ):
        assert name in net.params
    assert 'conv4_24_3x3' not in net.params and 'conv2_4_3x3' not in net.params
    assert net.params['conv5_4']['weights'].shape == (3, 3, 4096, 512)
    assert net.params['conv6']['weights'].shape == (1, 1, 512, 19)
    assert net.params['conv1_3_3x3']['weights'].shape[-1] == stem[-1]
    out = net(tf.zeros((1, 97, 129, 3)))
    assert out.shape == (1, 13, 17, 19)  # output stride 8
    assert net.backbone_output == 'conv5_3/relu'
    assert net.layers['conv5_3/relu'].shape == (1, 13, 17, 2048)
    assert net.layers['conv3_1/relu'].shape == (1, 13, 17, 512)
    assert net.layers[net.feature_layer].shape == (1, 13, 17, 512)


@pytest.mark.parametrize('layout', ['caffe', 'mmseg'])
def test_every_trainable_variable_gets_a_gradient(layout):
    net = PSPNet101(num_classes=4, layout=layout, **SMALL)
    x = tf.random.stateless_normal((2, 65, 81, 3), [1, 2]) * 50
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(net(x, training=True)))
    grads = tape.gradient(loss, net.trainable_variables)
    dead = [
        v.name for v, g in zip(net.trainable_variables, grads) if g is None or not np.any(g.numpy())
    ]
    assert not dead, dead
    n_conv = 3 + 5 * 3 + 4 + 4 + 2
    assert len(net.trainable_variables) == n_conv + 1 + 2 * (n_conv - 1)
    total, trainable = expected_param_count(4, net.layout.stem, SMALL['blocks'], m=1 / 8)
    assert (net.count_params(), net.count_params(True)) == (total, trainable)


def expected_logits_side(h, stem_padding):
    """Stem conv /2 (pad 1 or SAME: ceil), 3x3/2 max pool, conv3_1 /2 (ceil)."""
    conv1 = math.ceil(h / 2)
    pool = math.ceil(conv1 / 2)
    if stem_padding == 'caffe' and conv1 % 2 == 0:  # Caffe's ceil mode: one more window
        pool += 1
    return math.ceil(pool / 2)


@pytest.mark.parametrize('layout', ['caffe', 'mmseg'])
@pytest.mark.parametrize('hw', [(65, 81), (100, 140), (72, 57), (713, 71)])
def test_output_stride_8(layout, hw):
    net = PSPNet101(num_classes=3, layout=layout, **SMALL)
    out = net(tf.zeros((1, *hw, 3)))
    mode = net.layout.stem_padding
    assert out.shape == (1, *(expected_logits_side(s, mode) for s in hw), 3)
    if mode == 'pytorch' or all(s % 4 == 1 for s in hw):
        assert out.shape[1:3] == (math.ceil(hw[0] / 8), math.ceil(hw[1] / 8))


# ----------------------------------------------------------------------- 2. mmseg parity
@pytest.mark.torch
def test_mmseg_parity_with_a_pytorch_checkpoint(tmp_path, capsys):
    import torch

    blocks, m, num_classes, bins = SMALL['blocks'], SMALL['width_multiplier'], 5, (1, 2, 3, 6)
    module = mmseg_pspnet(blocks, m, num_classes, bins).eval()
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    sd = seeded_torch_state_dict(shapes, seed=7)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    path = tmp_path / 'pspnet_r101-d8_small.pth'
    torch.save(
        {
            'meta': {'CLASSES': [f'c{i}' for i in range(num_classes)], 'mmseg_version': '1.2.2'},
            'state_dict': module.state_dict(),
        },
        path,
    )

    net = PSPNet101(num_classes=num_classes, layout='mmseg', psp_bins=bins, **SMALL)
    report = net.load(str(path))
    assert report.ok and not report.missing
    assert 'skipped 8 training-only tensors' in capsys.readouterr().out  # auxiliary head

    # 100x140: conv5_3 is 13x18, so the 3- and 6-bin adaptive windows overlap along H.
    rgb = np.floor(seeded_uniform((2, 100, 140, 3), 3, 0, 256)).astype(np.uint8)
    x = preprocess(rgb, 'mmseg').numpy()
    with torch.no_grad():
        ref = module(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    out = net(x).numpy()
    assert net.backbone_output == 'conv5_1/relu'
    assert net.layers[net.backbone_output].shape[1:3] == (13, 18)
    assert out.shape == ref.shape == (2, 13, 18, num_classes)
    err = np.abs(out - ref).max()
    scale = np.abs(ref).max()
    print(f'mmseg parity: max|diff| {err:.3g}, max|ref| {scale:.3g}, rel {err / scale:.3g}')
    assert err <= 1e-4 * scale
    assert np.mean(out.argmax(-1) == ref.argmax(-1)) >= 0.9999
    # N_task alone reproduces the logits from the N_feat features
    np.testing.assert_allclose(
        net.classify(net.layers[net.feature_layer]).numpy(), out, rtol=0, atol=1e-6 * scale
    )


# ------------------------------------------------------------------ 3. adaptive pooling op
def np_adaptive_avg_pool(x, bins):
    """PyTorch's rule by explicit loops: cell i averages [floor(i*H/n), ceil((i+1)*H/n))."""
    b, h, w, c = x.shape
    out = np.zeros((b, bins, bins, c))
    for i in range(bins):
        r0, r1 = math.floor(i * h / bins), math.ceil((i + 1) * h / bins)
        for j in range(bins):
            c0, c1 = math.floor(j * w / bins), math.ceil((j + 1) * w / bins)
            out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


def test_adaptive_windows_by_hand():
    assert adaptive_windows(5, 3) == [(0, 2), (1, 4), (3, 5)]  # overlapping
    assert adaptive_windows(6, 3) == [(0, 2), (2, 4), (4, 6)]
    assert adaptive_windows(13, 6) == [(0, 3), (2, 5), (4, 7), (6, 9), (8, 11), (10, 13)]
    assert adaptive_windows(2, 3) == [(0, 1), (0, 2), (1, 2)]  # fewer rows than bins
    assert adaptive_windows(7, 1) == [(0, 7)]


@pytest.mark.parametrize(
    'hw,bins', [((5, 5), 3), ((5, 7), 3), ((13, 18), 6), ((2, 4), 3), ((9, 9), 1)]
)
def test_adaptive_avg_pool_matches_the_loop(hw, bins):
    x = seeded_images((2, *hw, 3), 5).astype(np.float64)
    got = adaptive_avg_pool2d(tf.constant(x, tf.float32), bins).numpy()
    np.testing.assert_allclose(got, np_adaptive_avg_pool(x, bins), rtol=1e-5, atol=1e-4)
    if hw == (5, 5):  # hand-computed cell (1, 1): rows and columns 1..3
        assert np.isclose(got[0, 1, 1, 0], x[0, 1:4, 1:4, 0].mean(), atol=1e-4)


# ------------------------------------------------------------------------------ 4. key map
def small_mmseg_state_dict(blocks=(1, 1, 2, 1), with_aux=True):
    """A seeded state dict with mmseg's keys, built from the key table (no torch needed)."""
    net = PSPNet101(num_classes=3, layout='mmseg', blocks=blocks, width_multiplier=1 / 8)
    shapes = net.build().param_shapes()
    table = mmseg_keys.key_table(blocks)
    torch_shapes = {}
    for key, (layer, param, transform) in table.items():
        shape = shapes[f'{layer}/{param}']
        torch_shapes[key] = (
            (shape[3], shape[2], shape[0], shape[1]) if transform == 'conv' else shape
        )
    torch_shapes['backbone.stem.1.num_batches_tracked'] = ()
    if with_aux:
        torch_shapes.update(
            {
                'auxiliary_head.convs.0.conv.weight': (32, 128, 3, 3),
                'auxiliary_head.convs.0.bn.weight': (32,),
                'auxiliary_head.conv_seg.weight': (3, 32, 1, 1),
                'auxiliary_head.conv_seg.bias': (3,),
            }
        )
    return net, seeded_torch_state_dict(torch_shapes, 11)


def test_key_table_covers_exactly_the_network():
    for blocks in [(1, 1, 2, 1), (3, 4, 23, 3)]:
        table = mmseg_keys.key_table(blocks)
        targets = {f'{layer}/{param}' for layer, param, _ in table.values()}
        assert len(targets) == len(table)  # one-to-one
        if blocks == (1, 1, 2, 1):
            net = PSPNet101(layout='mmseg', blocks=blocks, width_multiplier=1 / 8).build()
            assert targets == set(net.variables_by_key())
        else:
            assert len(table) == 112 + 1 + 4 * 111  # convs, conv6 bias, BN vectors
    assert mmseg_keys.key_table()['backbone.layer3.22.conv2.weight'] == (
        'conv4_23_3x3',
        'weights',
        'conv',
    )
    assert mmseg_keys.key_table()['backbone.layer2.0.downsample.1.running_var'] == (
        'conv3_1_1x1_proj_bn',
        'variance',
        'vector',
    )
    assert mmseg_keys.key_table(psp_bins=(1, 2, 3, 6))[
        'decode_head.psp_modules.3.1.conv.weight'
    ] == ('conv5_3_pool6_conv', 'weights', 'conv')


def test_bn_mapping_and_ignored_counter():
    _, sd = small_mmseg_state_dict()
    weights = mmseg_keys.convert(sd, blocks=(1, 1, 2, 1))
    bn = weights['conv1_1_3x3_s2_bn']
    for torch_param, param in [
        ('weight', 'scale'),
        ('bias', 'offset'),
        ('running_mean', 'mean'),
        ('running_var', 'variance'),
    ]:
        np.testing.assert_array_equal(bn[param], sd[f'backbone.stem.1.{torch_param}'])
        assert bn[param].dtype == np.float32
    assert set(bn) == {'scale', 'offset', 'mean', 'variance'}  # num_batches_tracked dropped
    assert mmseg_keys.UNMAPPED not in weights
    np.testing.assert_array_equal(weights['conv6']['biases'], sd['decode_head.conv_seg.bias'])


def test_auxiliary_head_is_skipped_and_listed():
    net, sd = small_mmseg_state_dict()
    weights, skipped = mmseg_keys.convert_with_skipped(sd, blocks=(1, 1, 2, 1))
    assert skipped == sorted(k for k in sd if k.startswith('auxiliary_head.'))
    assert not any('auxiliary' in layer for layer in weights)
    assert mmseg_keys.convert(sd, blocks=(1, 1, 2, 1)).keys() == weights.keys()
    assert net.load(net.torch_key_map(sd), verbose=False).ok


def test_unknown_keys_are_reported_not_dropped():
    net, sd = small_mmseg_state_dict()
    sd = dict(
        sd,
        **{
            'backbone.layer5.0.conv1.weight': np.zeros((1, 1, 1, 1), np.float32),
            'decode_head.conv_seg.extra': np.zeros(3, np.float32),
            'neck.bn.num_batches_tracked': np.array(0),
        },
    )
    weights = mmseg_keys.convert(sd, blocks=(1, 1, 2, 1))
    assert set(weights[mmseg_keys.UNMAPPED]) == {
        'backbone.layer5.0.conv1.weight',
        'decode_head.conv_seg.extra',
        'neck.bn.num_batches_tracked',
    }
    with pytest.raises(WeightsMismatchError, match=r'<unmapped>/backbone\.layer5\.0\.conv1'):
        net.load(weights, verbose=False)
    # a deeper checkpoint (real blocks) into a reduced network: its extra blocks are unmapped
    with pytest.raises(WeightsMismatchError, match='unexpected'):
        net.load(
            mmseg_keys.convert(
                dict(
                    sd, **{'backbone.layer3.2.conv1.weight': np.zeros((32, 128, 1, 1), np.float32)}
                ),
                blocks=(1, 1, 2, 1),
            ),
            verbose=False,
        )


def test_conv_transform_numerically():
    rng = np.random.default_rng(0)
    w_oihw = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)  # O=4, I=3, kh=3, kw=2
    x_nchw = rng.normal(size=(1, 3, 6, 5)).astype(np.float32)
    ref = np.zeros((1, 4, 4, 4))  # PyTorch conv2d, VALID
    for o in range(4):
        for y in range(4):
            for xx in range(4):
                ref[0, o, y, xx] = np.sum(w_oihw[o] * x_nchw[0, :, y : y + 3, xx : xx + 2])
    sd = {'decode_head.conv_seg.weight': w_oihw, 'decode_head.conv_seg.bias': np.zeros(4)}
    hwio = mmseg_keys.convert(sd, blocks=(1, 1, 1, 1))['conv6']['weights']
    assert hwio.shape == (3, 2, 3, 4) and hwio.flags['C_CONTIGUOUS']
    got = tf.nn.conv2d(x_nchw.transpose(0, 2, 3, 1), hwio, 1, 'VALID').numpy()
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(WeightsMismatchError, match='4-D'):
        mmseg_keys.convert({'decode_head.conv_seg.weight': np.zeros((4, 3))})


def test_caffe_layout_has_no_pytorch_key_map():
    with pytest.raises(WeightsFileError, match="layout='mmseg'"):
        PSPNet101(layout='caffe', **SMALL).torch_key_map({'backbone.stem.0.weight': 0})


# ---------------------------------------------------------------------------- 5. Caffe layout
def test_caffe_npy_round_trip_and_classify(tmp_path):
    net = PSPNet101(num_classes=6, layout='caffe', **SMALL).build()
    weights = seeded_weights(net.param_shapes(), seed=3)
    path = tmp_path / 'pspnet101_small.npy'
    np.save(path, weights, allow_pickle=True)
    report = net.load(str(path))
    assert report.ok and len(report.loaded) == len(net.variables_by_key())
    for key, var in net.variables_by_key().items():
        layer_name, param = key.split('/')
        np.testing.assert_array_equal(var.numpy(), weights[layer_name][param])
    other = PSPNet101(num_classes=6, layout='caffe', **SMALL)
    other.load(weights)
    x = seeded_images((1, 97, 129, 3), 4)
    out = net(x).numpy()
    np.testing.assert_array_equal(other(x).numpy(), out)
    assert out.shape == (1, 13, 17, 6)
    features = net.layers[net.feature_layer]
    assert features.shape == (1, 13, 17, 64)
    np.testing.assert_allclose(
        net.classify(features).numpy(), out, rtol=0, atol=1e-6 * np.abs(out).max()
    )
    # the classifier is the conv6 1x1 conv on those features
    w6 = weights['conv6']
    manual = np.einsum('bhwc,ck->bhwk', features.numpy(), w6['weights'][0, 0]) + w6['biases']
    np.testing.assert_allclose(out, manual, rtol=1e-4, atol=1e-4 * np.abs(out).max())
    # dropout only when training
    assert not np.allclose(net.classify(features, training=True).numpy(), out)


def test_caffe_canonical_pyramid_at_713():
    net = PSPNet101(num_classes=2, layout='caffe', blocks=(1, 1, 1, 1), width_multiplier=1 / 8)
    out = net(tf.zeros((1, 713, 713, 3)))
    assert out.shape == (1, 90, 90, 2)
    sizes = {b: tuple(net.layers[f'conv5_3_pool{b}'].shape[1:3]) for b in (1, 2, 3, 6)}
    assert sizes == {1: (1, 1), 2: (2, 2), 3: (3, 3), 6: (6, 6)}  # kernels 90/45/30/15
    assert net.layers['conv5_3_pool6_interp'].shape[1:3] == (90, 90)
    concat = net.layers['conv5_3_concat']
    assert concat.shape[-1] == 256 + 4 * 64


def test_caffe_concat_order_and_mmseg_order():
    x = seeded_images((1, 65, 81, 3), 1)
    for layout, order in [('caffe', (6, 3, 2, 1)), ('mmseg', (1, 2, 3, 6))]:
        net = PSPNet101(num_classes=2, layout=layout, **SMALL)
        net(x)
        concat = net.layers['conv5_3_concat'].numpy()
        parts = [net.layers[net.backbone_output]] + [
            net.layers[f'conv5_3_pool{b}_interp'] for b in order
        ]
        np.testing.assert_array_equal(concat, np.concatenate([p.numpy() for p in parts], -1))


def test_stem_padding_modes():
    assert caffe_pool_padding(357) == (1, 1) and caffe_pool_padding(360) == (1, 2)
    shapes = {}
    for mode in ('caffe', 'same', 'pytorch'):
        net = PSPNet101(
            num_classes=2, layout=dataclasses.replace(CAFFE, stem_padding=mode), **SMALL
        )
        net(tf.zeros((1, 100, 100, 3)))
        shapes[mode] = net.layers['pool1_3x3_s2'].shape[1]
    assert shapes == {'caffe': 26, 'same': 25, 'pytorch': 25}  # Caffe's ceil-mode pool
    # At 4k+1 sizes Caffe's pads and the TF1 port's SAME are the same computation.
    assert CAFFE_TF1.stem_padding == 'same'
    tf1_stem = dataclasses.replace(CAFFE, stem_padding=CAFFE_TF1.stem_padding)
    same = PSPNet101(num_classes=3, layout=tf1_stem, **SMALL)
    caffe = PSPNet101(num_classes=3, layout='caffe', **SMALL).build()
    same.load(seeded_weights(caffe.param_shapes(), 2), verbose=False)
    caffe.load(seeded_weights(caffe.param_shapes(), 2), verbose=False)
    x = seeded_images((1, 97, 129, 3), 8)
    np.testing.assert_allclose(same(x).numpy(), caffe(x).numpy(), rtol=1e-5, atol=1e-4)


def test_stride_position_is_a_layout_field():
    """Caffe prototxt (default): conv3_1's stride 2 in conv3_1_3x3; TF1 port: in the 1x1."""
    x = tf.zeros((1, 97, 129, 3))
    three = PSPNet101(num_classes=2, layout='caffe', **SMALL)
    three(x)
    assert three.layers['conv3_1_1x1_reduce_bn'].shape[1:3] == (25, 33)  # Caffe prototxt
    assert three.layers['conv3_1_3x3_bn'].shape[1:3] == (13, 17)
    # The TF1 port's stride; 'floor' pooling because its fixed kernels need a 713x713 input.
    tf1 = dataclasses.replace(CAFFE_TF1, ppm_pooling='floor')
    one = PSPNet101(num_classes=2, layout=tf1, **SMALL)
    one(x)
    assert one.layers['conv3_1_1x1_reduce_bn'].shape[1:3] == (13, 17)  # TF1 port
    assert one.layers['conv3_1_3x3_bn'].shape[1:3] == (13, 17)
    assert one.param_shapes() == three.param_shapes()  # same weights fit


def test_tf1_port_fixed_pyramid_kernels_and_no_dropout():
    """caffe_tf1 pools with the TF1 port's avg_pool(90, 90, 90, 90) ... (45, 30, 15), VALID, at
    every size: at conv5_3 94x126 the cells are floor((side - k) / k) + 1 per axis, each the mean
    of its k x k window; it has no dropout layer; inputs below 713x713 are refused."""
    net = PSPNet101(num_classes=2, layout='caffe_tf1', blocks=(1, 1, 1, 1), width_multiplier=1 / 8)
    assert net.build_input_shape() == (1, 713, 713, 3)
    net(seeded_images((1, 745, 1001, 3), 3))  # SAME stem: ceil(side / 8)
    c5 = net.layers[net.backbone_output].numpy()
    assert c5.shape[1:3] == (94, 126)
    cells = {b: tuple(net.layers[f'conv5_3_pool{b}'].shape[1:3]) for b in (1, 2, 3, 6)}
    assert cells == {1: (1, 1), 2: (2, 2), 3: (3, 4), 6: (6, 8)}  # floor rule: 3x3, 6x6
    pool6 = net.layers['conv5_3_pool6'].numpy()
    np.testing.assert_allclose(pool6[0, 5, 7], c5[0, 75:90, 105:120].mean((0, 1)), rtol=1e-5)
    assert 'conv5_4_dropout' not in net.layers
    x = seeded_images((1, 745, 1001, 3), 4)
    np.testing.assert_array_equal(net(x, training=True), net(x, training=True))  # no dropout
    with pytest.raises(ValueError, match='at least 713x713'):
        net(tf.zeros((1, 97, 129, 3)))


def test_dilations_per_layout():
    net_c = PSPNet101(layout='caffe', **SMALL)
    net_m = PSPNet101(layout='mmseg', **SMALL)
    x = tf.zeros((1, 65, 65, 3))
    net_c(x)
    net_m(x)
    # the zero padding before each 3x3 equals its dilation: conv4_1 2 (Caffe) vs 1 (mmseg)
    pads = {}
    for net in (net_c, net_m):
        h = net.layers['conv4_1_1x1_reduce_bn'].shape[1]
        pads[net.layout.name] = [(net.layers[f'padding{i}'].shape[1] - h) // 2 for i in (3, 4, 5)]
    assert pads == {'caffe': [2, 2, 4], 'mmseg': [1, 2, 2]}  # conv4_1, conv4_2, conv5_1


def test_preprocess_and_registry():
    rgb = np.array([[[[10, 20, 30]]]], np.uint8)
    np.testing.assert_allclose(
        preprocess(rgb, 'caffe').numpy()[0, 0, 0],
        np.array([30, 20, 10]) - np.array(CAFFE_BGR_MEAN),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        preprocess(rgb[0], 'mmseg').numpy()[0, 0],
        (np.array([10, 20, 30]) - np.array(MMSEG_RGB_MEAN)) / np.array(MMSEG_RGB_STD),
        rtol=1e-6,
    )
    assert MODELS['PSPNet101'] is PSPNet101
    assert build_model('PSPNet101', num_classes=3, layout='mmseg').get_config() == {
        'num_classes': 3,
        'layout': 'mmseg',
        'psp_bins': [1, 2, 3, 6],
        'blocks': [3, 4, 23, 3],
        'width_multiplier': 1,
    }
    assert build_model('PSPNet101', layout='caffe_tf1').get_config()['layout'] == 'caffe_tf1'
    np.testing.assert_array_equal(preprocess(rgb, 'caffe_tf1'), preprocess(rgb, 'caffe'))
    with pytest.raises(ValueError, match='layout'):
        PSPNet101(layout='torchvision')
    with pytest.raises(ValueError, match='width_multiplier'):
        PSPNet101(width_multiplier=0.3)
    with pytest.raises(ValueError, match='too small'):
        PSPNet101(layout='caffe', **SMALL)(tf.zeros((1, 33, 33, 3)))


def test_eager_and_tf_function_agree():
    net = PSPNet101(num_classes=4, layout='mmseg', **SMALL)
    x = seeded_images((1, 100, 140, 3), 9) / 60
    eager = net(x).numpy()
    graph = tf.function(lambda t: net(t))(tf.constant(x)).numpy()
    np.testing.assert_allclose(graph, eager, atol=1e-5 * np.abs(eager).max())


# ------------------------------------------------------- 6. the Caffe prototxt, layer by layer
# tests/data/pspnet101_prototxt.json summarises hszhao/PSPNet's pspnet101_cityscapes_713.prototxt
# (tests/golden/make_pspnet_prototxt_golden.py): every layer's parameters and its top shape at
# the prototxt's 713x713 input, computed with Caffe's shape rules.
PROTOTXT = os.path.join(os.path.dirname(__file__), 'data', 'pspnet101_prototxt.json')
BLOCK_LAYER = re.compile(
    r'^conv([2-5])_(\d+)(_1x1_reduce|_1x1_increase|_1x1_proj|_3x3)?(/bn|/relu)?$'
)


@functools.cache
def prototxt():
    with open(PROTOTXT) as f:
        return json.load(f)


def prototxt_layers(blocks=None):
    """The prototxt's layers for a network of `blocks` bottlenecks per stage (each >= 2).

    A block past the n-th of its stage must repeat block n layer for layer (type, parameters and
    top shape equal; names and bottoms renumbered), which is asserted here, so a shallower
    network still answers for every block; such blocks are dropped and whatever read the
    stage's last block reads block n.
    """
    layers = [dict(e) for e in prototxt()['layers']]
    if blocks is None:
        return layers
    by_name = {e['name']: e for e in layers}
    # a block is named by its residual sum convS_i (conv5_4 is the pyramid's 3x3, not a block)
    sums = [e['name'] for e in layers if e['type'] == 'Eltwise']
    depth = {s: sum(name.startswith(f'conv{s}_') for name in sums) for s in (2, 3, 4, 5)}
    keep = {s: n for s, n in zip((2, 3, 4, 5), blocks)}
    assert min(blocks) >= 2 and depth == {2: 3, 3: 4, 4: 23, 5: 3}

    def block_of(name):
        m = BLOCK_LAYER.match(name)
        return (int(m[1]), int(m[2])) if m and f'conv{m[1]}_{m[2]}' in sums else None

    def renumber(name, s, i, n):  # block i -> n and the previous block i-1 -> n-1, at once
        to = {str(i): str(n), str(i - 1): str(n - 1)}
        return re.sub(rf'^conv{s}_({i}|{i - 1})(?=[_/]|$)', lambda m: f'conv{s}_{to[m[1]]}', name)

    out = []
    for e in layers:
        block = block_of(e['name'])
        if block and block[1] > keep[block[0]]:
            (s, i), n = block, keep[block[0]]
            as_n = dict(
                e,
                name=renumber(e['name'], s, i, n),
                bottom=[renumber(b, s, i, n) for b in e['bottom']],
                top=[renumber(t, s, i, n) for t in e['top']],
            )
            assert as_n == by_name[as_n['name']], (e, by_name[as_n['name']])
            continue
        last = {f'conv{s}_{depth[s]}': f'conv{s}_{keep[s]}' for s in keep}
        out.append(dict(e, bottom=[last.get(b, b) for b in e['bottom']]))
    return out


def caffe_channels(net, channels, layer_name):
    """A prototxt channel count in `net`: times width_multiplier, the classes for conv6."""
    if layer_name in ('conv6', 'conv6_interp'):
        return net.num_classes
    value = channels * net.width_multiplier
    assert value == int(value)
    return int(value)


def prototxt_param_mismatches(net, layers):
    """Kernel shapes, biases and batch-norm layers of `net.param_shapes()` vs the prototxt."""
    shapes = net.param_shapes()
    bad, expected = [], set()
    producer = {prototxt()['input']['name']: 3}  # blob -> channels (in `net`)
    for e in layers:
        c_in = [producer[b] for b in e['bottom']]
        if e['type'] == 'Convolution':
            name, c_out = e['name'], caffe_channels(net, e['num_output'], e['name'])
            k = e['kernel']
            want = {f'{name}/weights': (k, k, c_in[0], c_out)}
            if e['bias']:
                want[f'{name}/biases'] = (c_out,)
        elif e['type'] == 'BN':
            name, c_out = e['name'].replace('/bn', '_bn'), c_in[0]
            want = {f'{name}/{p}': (c_out,) for p in ('scale', 'offset', 'mean', 'variance')}
        elif e['type'] == 'Concat':
            c_out, want = sum(c_in), {}
        else:
            c_out, want = c_in[0], {}
        for key, shape in want.items():
            if shapes.get(key) != shape:
                bad.append(f'{key}: {shapes.get(key)} in the network, prototxt {shape}')
        expected |= set(want)
        for t in e['top']:
            producer[t] = c_out
    bad += [f'{key}: not in the prototxt' for key in sorted(set(shapes) - expected)]
    return bad


def caffe_pool(x, e):
    """Caffe's Pooling on NHWC `x`: ceil-mode output size (last window starting inside the
    input or its leading pad), MAX over the window clipped to the input, AVE dividing the
    clipped sum by the window area clipped to input + pad (caffe pooling_layer.cpp)."""
    k, s, p = e['kernel'], e['stride'], e['pad']
    n, h, w, c = x.shape

    def out_size(size):
        o = math.ceil((size + 2 * p - k) / s) + 1
        return o - 1 if p and (o - 1) * s >= size + p else o

    oh, ow = out_size(h), out_size(w)
    out = np.zeros((n, oh, ow, c), np.float64)
    for i in range(oh):
        h0, h1 = i * s - p, min(i * s - p + k, h + p)
        for j in range(ow):
            w0, w1 = j * s - p, min(j * s - p + k, w + p)
            win = x[:, max(h0, 0) : min(h1, h), max(w0, 0) : min(w1, w), :]
            if e['pool'] == 'MAX':
                out[:, i, j] = win.max(axis=(1, 2))
            else:
                out[:, i, j] = win.sum(axis=(1, 2)) / ((h1 - h0) * (w1 - w0))
    return out


def caffe_interp(x, out_h, out_w):
    """Caffe's Interp (caffe_cpu_interp2): source `i * (in-1)/(out-1)`, linear between its
    floor and the next row/column (the last one at the border)."""

    def weights(size_in, size_out):
        r = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        src = r * np.arange(size_out)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, size_in - 1)
        m = np.zeros((size_out, size_in))
        np.add.at(m, (np.arange(size_out), i0), 1 - (src - i0))
        np.add.at(m, (np.arange(size_out), i1), src - i0)
        return m

    rows = np.einsum('ih,nhwc->niwc', weights(x.shape[1], out_h), x, optimize=True)
    return np.einsum('jw,niwc->nijc', weights(x.shape[2], out_w), rows, optimize=True)


def caffe_layer(e, ins, params):
    """One prototxt layer at inference (Caffe TEST phase) on NHWC NumPy inputs."""
    kind, x = e['type'], ins[0]
    if kind == 'Convolution':
        p = params[e['name']]
        y = tf.nn.convolution(
            np.pad(x, [(0, 0), (e['pad'],) * 2, (e['pad'],) * 2, (0, 0)]).astype(np.float32),
            p['weights'],
            strides=e['stride'],
            dilations=e['dilation'],
            padding='VALID',
        ).numpy()
        return y + p['biases'] if e['bias'] else y
    if kind == 'BN':  # frozen: the stored statistics
        p = params[e['name'].replace('/bn', '_bn')]
        return (x - p['mean']) / np.sqrt(p['variance'] + e['eps']) * p['scale'] + p['offset']
    if kind == 'ReLU':
        return np.maximum(x, 0)
    if kind == 'Pooling':
        return caffe_pool(x, e)
    if kind == 'Interp':
        if 'height' in e:
            return caffe_interp(x, e['height'], e['width'])
        z = e['zoom_factor']
        return caffe_interp(x, *(s + (s - 1) * (z - 1) for s in x.shape[1:3]))
    if kind == 'Eltwise':
        assert e['operation'] == 'SUM'
        return sum(ins)
    if kind == 'Concat':
        return np.concatenate(ins, axis=-1)
    if kind == 'Dropout':  # identity in the TEST phase
        return x
    raise AssertionError(f'unhandled layer type {kind}')


def our_output(e, following, ours):
    """The layer of `ours` holding a prototxt layer's result: the Caffe name with '/' -> '_',
    except that a BN followed by an in-place ReLU is one layer here (`X_bn`, ReLU included;
    None for the BN stage), unless the ReLU is separate (`X_bn_relu`, the stem's first)."""
    name = e['name']
    if e['type'] == 'BN':
        base = name[: -len('/bn')]
        relu = following is not None and following['type'] == 'ReLU'
        relu = relu and following['bottom'] == e['top']
        return None if relu and f'{base}_bn_relu' not in ours else f'{base}_bn'
    if e['type'] == 'ReLU':
        base = name[: -len('/relu')]
        return next((c for c in (name, f'{base}_bn_relu') if c in ours), f'{base}_bn')
    return name.replace('/', '_')


def prototxt_forward_mismatches(net, layers, x):
    """Each prototxt layer run with Caffe's semantics on the network's own tensors for its
    bottoms, against the network's tensor for its top: shape (also vs the prototxt's top
    shape) and values. Returns `layer: what` strings, empty when all agree."""
    net(x)
    ours = {k: v.numpy() for k, v in net.layers.items()}
    params = {k: {p: v.numpy() for p, v in ps.items()} for k, ps in net.params.items()}
    value = {prototxt()['input']['name']: np.asarray(x, np.float32)}
    bad = []
    for i, e in enumerate(layers):
        try:
            ref = caffe_layer(e, [value[b] for b in e['bottom']], params)
        except (ValueError, tf.errors.InvalidArgumentError) as err:  # e.g. shapes that differ
            bad.append(f'{e["name"]}: Caffe cannot run it on the network tensors ({err})')
            ref = None
        if e['name'] == 'conv6_interp':  # the evaluation's upsampling, not a layer here
            got = net.upsample_logits(ours['conv6'], x.shape[1:3]).numpy()
        else:
            name = our_output(e, layers[i + 1] if i + 1 < len(layers) else None, ours)
            if name is None:  # BN whose ReLU is fused: checked after the ReLU
                value[e['top'][0]] = ref
                continue
            if name not in ours:
                bad.append(f'{e["name"]}: no layer {name} in the network')
                value[e['top'][0]] = ref
                continue
            got = ours[name]
        c, h, w = e['top_shape']
        want = (x.shape[0], h, w, caffe_channels(net, c, e['name']))
        if got.shape != want:
            bad.append(f'{e["name"]}: shape {got.shape[1:]}, prototxt {want[1:]}')
        if ref is not None:
            if ref.shape != got.shape:
                bad.append(f'{e["name"]}: Caffe gives {ref.shape[1:]} from the same inputs')
            else:
                err = np.abs(got - ref).max()
                if err > 1e-4 * max(np.abs(ref).max(), 1e-3):
                    bad.append(f'{e["name"]}: values differ by {err:.3g}')
        value[e['top'][0]] = got
    return bad


def mismatched_layers(bad):
    return sorted({line.split(':')[0] for line in bad})


def test_prototxt_summary():
    """The summary is the 713x713 Cityscapes network (a sanity check of the generator)."""
    summary = prototxt()
    layers = summary['layers']
    counts = {t: sum(e['type'] == t for e in layers) for t in {e['type'] for e in layers}}
    assert counts == {
        'Convolution': 112,
        'BN': 111,
        'ReLU': 107,
        'Eltwise': 33,
        'Pooling': 5,
        'Interp': 5,
        'Concat': 1,
        'Dropout': 1,
    }
    assert summary['input']['dims'] == [1, 3, 713, 713]
    by_name = {e['name']: e for e in layers}
    assert (by_name['conv3_1_1x1_reduce']['stride'], by_name['conv3_1_3x3']['stride']) == (1, 2)
    assert [by_name[f'conv5_3_pool{b}']['kernel'] for b in (1, 2, 3, 6)] == [90, 45, 30, 15]
    assert by_name['conv6']['top_shape'] == [19, 90, 90]


def test_caffe_runs_only_where_conv5_3_is_90():
    """The prototxt's Interp layers output 90x90, so Caffe runs it only at input sides whose
    conv5_3 is 90 (`backbone_side` agrees with Caffe's shape rules on all of 300..1200). There
    the floor rule gives the prototxt's pools; Caffe's ceil-mode Pooling with the same fixed
    kernels would give other cells at other sizes (not reproduced: no Caffe network runs there)."""
    summary = prototxt()
    ours = [s for s in range(300, 1201) if backbone_side(s, 'caffe') == FIXED_PPM_GRID]
    assert ours == summary['valid_input_sides'] == list(range(711, 719))
    cells = summary['pool_cells']['conv5_3_side']
    floor_rule = {side: [side // (side // n) for n in (1, 2, 3, 6)] for side in (90, 128)}
    assert cells['90'] == floor_rule[90] == [1, 2, 3, 6]
    assert (cells['128'], floor_rule[128]) == ([2, 3, 5, 9], [1, 2, 3, 6])


def test_caffe_layout_kernels_match_the_prototxt_at_full_depth():
    """Every conv kernel (k, k, c_in, c_out), bias and BN of the full-depth network is the
    prototxt's (widths at 1/8); the TF1-port layout takes the same weights."""
    layers = prototxt_layers()
    for layout in ('caffe', 'caffe_tf1'):
        net = PSPNet101(num_classes=19, layout=layout, width_multiplier=1 / 8).build()
        assert prototxt_param_mismatches(net, layers) == [], layout


@pytest.fixture(scope='module')
def at_713():
    """Seeded weights and a seeded 713x713 input for 2-block-per-stage networks at 1/8 width."""
    blocks = (2, 2, 2, 2)
    shapes = PSPNet101(num_classes=19, blocks=blocks, width_multiplier=1 / 8).build()
    weights = seeded_weights(shapes.param_shapes(), seed=5)
    x = seeded_images((1, 713, 713, 3), 6)
    return blocks, weights, x, prototxt_layers(blocks)


def psp_at_713(at_713, layout):
    blocks, weights, x, layers = at_713
    net = PSPNet101(num_classes=19, layout=layout, blocks=blocks, width_multiplier=1 / 8)
    net.load(weights, verbose=False)
    return net, layers, x


def test_caffe_layout_runs_the_prototxt_at_713(at_713):
    """Every prototxt layer (stem, pool1 ceil mode, strides, pads, dilations, projections,
    BN and ReLU placement, pyramid pools 90/45/30/15, Interp to 90x90, concat order, conv5_4,
    dropout, conv6, the x8 zoom) computes what Caffe computes, with the prototxt's shapes."""
    net, layers, x = psp_at_713(at_713, 'caffe')
    assert prototxt_param_mismatches(net, layers) == []
    assert prototxt_forward_mismatches(net, layers, x) == []


def test_tf1_port_layout_differs_from_the_prototxt_where_expected(at_713):
    """The same check fails for the TF1 port's conv3_1 stride (the 1x1 samples every other
    pixel of conv2_3; the 3x3 then has stride 1) and its missing dropout layer; its 'SAME' stem
    and fixed pyramid kernels agree with Caffe at 713."""
    net, layers, x = psp_at_713(at_713, dataclasses.replace(CAFFE, stride_on='1x1'))
    bad = prototxt_forward_mismatches(net, layers, x)
    assert mismatched_layers(bad) == [
        'conv3_1_1x1_reduce',
        'conv3_1_1x1_reduce/relu',
        'conv3_1_3x3',
    ], bad
    assert 'conv3_1_1x1_reduce: shape (90, 90, 16), prototxt (179, 179, 16)' in bad
    net, layers, x = psp_at_713(at_713, 'caffe_tf1')
    bad = prototxt_forward_mismatches(net, layers, x)
    assert mismatched_layers(bad) == [
        'conv3_1_1x1_reduce',
        'conv3_1_1x1_reduce/relu',
        'conv3_1_3x3',
        'conv5_4/dropout',
    ], bad
