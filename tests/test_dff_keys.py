"""Whole PyTorch DFF state dicts (net_feat./flownet./net_task.) routed onto dff_tf.DFF."""

import numpy as np
import pytest

from converters import dff_keys, flownet_keys, mmseg_keys
from converters.errors import WeightsMismatchError
from dff_tf import DFF
from dff_tf.flownet import FlowNetS
from icnet_tf.pspnet import PSPNet101
from tests.golden.seeded import seeded_torch_state_dict

BLOCKS = (1, 1, 1, 1)


@pytest.fixture(scope='module')
def dff():
    feature = PSPNet101(num_classes=5, layout='mmseg', blocks=BLOCKS)
    return DFF(feature, flownet=FlowNetS(batch_norm=True)).build()


def torch_shapes(dff):
    """PyTorch-layout shapes of a whole DFF, from the key tables (OIHW for convs)."""
    ours = dff.feature_net.param_shapes()
    shapes = {}
    for key, (layer, param, transform) in mmseg_keys.key_table(BLOCKS).items():
        shape = ours[f'{layer}/{param}']
        shapes[f'net_feat.{key}'] = (
            (shape[3], shape[2], shape[0], shape[1]) if (transform == 'conv') else shape
        )
    shapes['net_feat.auxiliary_head.conv_seg.weight'] = (5, 256, 1, 1)
    for key, shape in flownet_keys.torch_shapes(dff.flownet.param_shapes(), True).items():
        shapes[f'flownet.{key}'] = shape
    shapes['net_task.weight'], shapes['net_task.bias'] = (5, 512, 1, 1), (5,)
    return shapes


def test_whole_dff_state_dict_loads_every_part(dff):
    sd = seeded_torch_state_dict(torch_shapes(dff), 21)
    reports, notes = dff_keys.load_into_dff(dff, sd)
    assert all(r.ok for r in reports)
    assert any('auxiliary' in n for n in notes)
    assert any('replaced by net_task' in n for n in notes)
    np.testing.assert_array_equal(
        dff.feature_net.params['conv6']['weights'].numpy(),
        sd['net_task.weight'].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        dff.feature_net.params['conv6']['biases'].numpy(), sd['net_task.bias']
    )
    np.testing.assert_array_equal(
        dff.flownet.params['conv1_bn']['mean'].numpy(), sd['flownet.conv1.1.running_mean']
    )
    np.testing.assert_array_equal(
        dff.feature_net.params['conv2_1_3x3']['weights'].numpy(),
        sd['net_feat.backbone.layer1.0.conv2.weight'].transpose(2, 3, 1, 0),
    )


def test_unknown_prefix_and_score_map_task_are_refused(dff):
    sd = seeded_torch_state_dict(torch_shapes(dff), 22)
    sd['decoder.extra.weight'] = np.zeros((3, 3), np.float32)
    with pytest.raises(WeightsMismatchError, match=r'unexpected.*decoder\.extra\.weight'):
        dff_keys.load_into_dff(dff, sd)
    del sd['decoder.extra.weight']
    sd['net_task.weight'] = np.zeros((5, 5, 1, 1), np.float32)  # warps score maps: refused
    with pytest.raises(WeightsMismatchError, match=r'net_task.weight has shape \(5, 5, 1, 1\)'):
        dff_keys.convert(sd, BLOCKS)
    with pytest.raises(WeightsMismatchError, match='not a whole DFF state dict'):
        dff_keys.convert({k: v for k, v in sd.items() if not k.startswith('flownet.')}, BLOCKS)
