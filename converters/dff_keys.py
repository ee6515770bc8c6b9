"""Whole PyTorch DFF state dicts -> `dff_tf.DFF` parts, by prefix routing (pure functions).

A DFF model saved from the PyTorch reference holds three sub-modules:

| prefix      | what                                    | mapped by                               |
|-------------|-----------------------------------------|-----------------------------------------|
| `net_feat.` | mmsegmentation `pspnet_r101-d8` (N_feat) | `mmseg_keys` -> PSPNet101(layout=mmseg) |
| `flownet.`  | FlowNetPytorch FlowNetS (plain or BN)    | `flownet_keys` (variant detected)       |
| `net_task.` | N_task, one 1x1 conv `[C, 512, 1, 1]`    | PSPNet101's classifier `conv6`          |

N_task replaces the feature network's own per-frame classifier (`decode_head.conv_seg`), which
is then reported as skipped; the auxiliary head is skipped as in `mmseg_keys`. Keys with any
other prefix are returned under `'<unmapped>'` so the strict loader reports them. A `net_task`
whose input is not the 512-channel PSP feature (e.g. a `[C, C, 1, 1]` conv applied to warped
score maps) is refused: dff_tf warps features, not score maps.
"""

import numpy as np

from converters import flownet_keys, mmseg_keys
from converters.errors import WeightsMismatchError
from converters.keys import UNMAPPED

PREFIXES = {'net_feat.': 'feature_net', 'flownet.': 'flownet', 'net_task.': 'task'}
TASK_LAYER = 'conv6'
FEATURE_CHANNELS = 512


def split(state_dict):
    """`{prefix part: {key without prefix: array}}`; unknown prefixes under 'unmapped'."""
    parts = {'feature_net': {}, 'flownet': {}, 'task': {}, 'unmapped': {}}
    for key, value in state_dict.items():
        part = next((p for prefix, p in PREFIXES.items() if key.startswith(prefix)), None)
        if part is None:
            parts['unmapped'][key] = value
        else:
            parts[part][key.split('.', 1)[1]] = value
    return parts


def is_batch_norm_flownet(flownet_state_dict):
    """FlowNetPytorch 'flownets_bn' has BN modules at index 1 of each encoder conv."""
    return any(k.endswith('.1.running_mean') for k in flownet_state_dict)


def convert(state_dict, blocks=(3, 4, 23, 3)):
    """`(parts, notes)`: parts = {'feature_net': {layer: {param: array}}, 'flownet': {...}}."""
    parts = split(state_dict)
    if not parts['feature_net'] or not parts['flownet']:
        raise WeightsMismatchError(
            'not a whole DFF state dict: expected keys under net_feat., flownet. and '
            f'net_task.; found prefixes {sorted({k.split(".")[0] for k in state_dict})}'
        )
    feature, skipped = mmseg_keys.convert_with_skipped(parts['feature_net'], blocks)
    notes = [f'skipped {len(skipped)} auxiliary-head keys (training only)'] if skipped else []
    task = parts['task']
    if task:
        weight = np.asarray(task.pop('weight', np.zeros((0,))))
        if weight.ndim != 4 or weight.shape[1] != FEATURE_CHANNELS or weight.shape[2:] != (1, 1):
            raise WeightsMismatchError(
                f'net_task.weight has shape {tuple(weight.shape)}; dff_tf.DFF needs a 1x1 conv '
                f'on the {FEATURE_CHANNELS}-channel PSP features [C, {FEATURE_CHANNELS}, 1, 1] '
                '(a model that warps score maps cannot be loaded)'
            )
        if TASK_LAYER in feature:
            notes.append(
                'net_feat.decode_head.conv_seg (the per-frame classifier) is replaced by net_task'
            )
        feature[TASK_LAYER] = {'weights': mmseg_keys.TRANSFORMS['conv'](weight).astype(np.float32)}
        if 'bias' in task:
            feature[TASK_LAYER]['biases'] = np.asarray(task.pop('bias'), np.float32)
        for key, value in task.items():
            feature.setdefault(UNMAPPED, {})[f'net_task.{key}'] = value
    for key, value in parts['unmapped'].items():
        feature.setdefault(UNMAPPED, {})[key] = value
    flownet = flownet_keys.convert(
        parts['flownet'], batch_norm=is_batch_norm_flownet(parts['flownet'])
    )
    return {'feature_net': feature, 'flownet': flownet}, notes


def load_into_dff(dff, state_dict, *, ignore_missing=False, skip=(), source_name=None):
    """Strictly load a whole PyTorch DFF state dict into a built `dff_tf.DFF`; returns reports.

    `source_name`: the file the state dict came from, named in reports and errors."""
    parts, notes = convert(state_dict, dff.feature_net.blocks)
    options = dict(ignore_missing=ignore_missing, skip=skip, verbose=False, source_name=source_name)
    reports = [
        dff.feature_net.load(parts['feature_net'], **options),
        dff.flownet.load(parts['flownet'], **options),
    ]
    return reports, notes
