"""mmsegmentation `pspnet_r101-d8` state dict -> `PSPNet101(layout='mmseg')` weights (pure).

The map is an explicit table generated from the architecture (`key_table`): every PyTorch key
names its target icnet_tf layer, parameter and transform:

    backbone.stem.{0,3,6}.weight                 conv1_1_3x3_s2, conv1_2_3x3, conv1_3_3x3
    backbone.stem.{1,4,7}.*                      <same>_bn
    backbone.layer{L}.{k}.conv1 / bn1            conv{L+1}_{k+1}_1x1_reduce / _1x1_reduce_bn
    backbone.layer{L}.{k}.conv2 / bn2            conv{L+1}_{k+1}_3x3 / _3x3_bn
    backbone.layer{L}.{k}.conv3 / bn3            conv{L+1}_{k+1}_1x1_increase / _1x1_increase_bn
    backbone.layer{L}.0.downsample.{0,1}         conv{L+1}_1_1x1_proj / _1x1_proj_bn
    decode_head.psp_modules.{j}.1.conv / .1.bn   conv5_3_pool{bins[j]}_conv / _conv_bn
    decode_head.bottleneck.conv / .bn            conv5_4 / conv5_4_bn
    decode_head.conv_seg.weight / .bias          conv6 weights / biases

Transforms: 'conv' = OIHW -> HWIO (`transpose(2, 3, 1, 0)`); 'vector' = as is. BN `weight`,
`bias`, `running_mean`, `running_var` -> `scale`, `offset`, `mean`, `variance`; a BN's
`num_batches_tracked` is ignored. Every array is returned as contiguous float32.

Strictness: a key that is not in the table (and not a known BN's `num_batches_tracked`) is NOT
dropped: it is returned under the reserved layer `UNMAPPED` ('<unmapped>') with its PyTorch key
as parameter name, so the strict loader reports it as unexpected ('<unmapped>/backbone....').
`auxiliary_head.*` (mmseg's training-only FCN head on layer3) is skipped: `convert_with_skipped`
returns the skipped keys as its second value; `convert` drops them silently. Keys must already
be stripped of a `module.` prefix (`converters.torch_pth.state_dict_of` does that).
"""

import numpy as np

from converters.errors import WeightsMismatchError
from converters.keys import UNMAPPED

SKIPPED_PREFIXES = ('auxiliary_head.',)
BN_PARAMS = {'weight': 'scale', 'bias': 'offset', 'running_mean': 'mean', 'running_var': 'variance'}
TRANSFORMS = {
    'conv': lambda a: a.transpose(2, 3, 1, 0),  # OIHW -> HWIO
    'vector': lambda a: a,
}
_NDIM = {'conv': 4, 'vector': 1}

STEM = (
    ('backbone.stem.0', 'backbone.stem.1', 'conv1_1_3x3_s2'),
    ('backbone.stem.3', 'backbone.stem.4', 'conv1_2_3x3'),
    ('backbone.stem.6', 'backbone.stem.7', 'conv1_3_3x3'),
)
BLOCK = (('conv1', 'bn1', '1x1_reduce'), ('conv2', 'bn2', '3x3'), ('conv3', 'bn3', '1x1_increase'))


def key_table(blocks=(3, 4, 23, 3), psp_bins=(1, 2, 3, 6)):
    """`{pytorch_key: (layer, param, transform)}` for every tensor of the inference network
    (no `num_batches_tracked`, no auxiliary head)."""
    table = {}

    def conv(src, dst, bias=False):
        table[f'{src}.weight'] = (dst, 'weights', 'conv')
        if bias:
            table[f'{src}.bias'] = (dst, 'biases', 'vector')

    def bn(src, dst):
        for torch_param, param in BN_PARAMS.items():
            table[f'{src}.{torch_param}'] = (dst, param, 'vector')

    for conv_key, bn_key, name in STEM:
        conv(conv_key, name)
        bn(bn_key, f'{name}_bn')
    for stage, n_blocks in enumerate(blocks, start=1):
        for k in range(n_blocks):
            src, dst = f'backbone.layer{stage}.{k}', f'conv{stage + 1}_{k + 1}'
            for conv_name, bn_name, suffix in BLOCK:
                conv(f'{src}.{conv_name}', f'{dst}_{suffix}')
                bn(f'{src}.{bn_name}', f'{dst}_{suffix}_bn')
            if k == 0:
                conv(f'{src}.downsample.0', f'{dst}_1x1_proj')
                bn(f'{src}.downsample.1', f'{dst}_1x1_proj_bn')
    for j, n_bin in enumerate(psp_bins):
        conv(f'decode_head.psp_modules.{j}.1.conv', f'conv5_3_pool{n_bin}_conv')
        bn(f'decode_head.psp_modules.{j}.1.bn', f'conv5_3_pool{n_bin}_conv_bn')
    conv('decode_head.bottleneck.conv', 'conv5_4')
    bn('decode_head.bottleneck.bn', 'conv5_4_bn')
    conv('decode_head.conv_seg', 'conv6', bias=True)
    return table


def convert_with_skipped(state_dict, blocks=(3, 4, 23, 3), psp_bins=(1, 2, 3, 6)):
    """`(weights, skipped)`: `{layer: {param: float32 array}}` and the skipped training-only
    keys (sorted). Unknown keys are in `weights[UNMAPPED]`; see the module docstring."""
    table = key_table(blocks, psp_bins)
    out, skipped = {}, []
    for key, value in state_dict.items():
        if key.startswith(SKIPPED_PREFIXES):
            skipped.append(key)
            continue
        prefix, _, last = key.rpartition('.')
        if last == 'num_batches_tracked' and f'{prefix}.running_mean' in table:
            continue
        array = np.asarray(value)
        entry = table.get(key)
        if entry is None:
            out.setdefault(UNMAPPED, {})[key] = array
            continue
        layer, param, transform = entry
        if array.ndim != _NDIM[transform]:
            raise WeightsMismatchError(
                f'{key}: expected a {_NDIM[transform]}-D tensor for '
                f'{layer}/{param}, got shape {array.shape}'
            )
        out.setdefault(layer, {})[param] = np.ascontiguousarray(
            TRANSFORMS[transform](array), dtype=np.float32
        )
    return out, sorted(skipped)


def convert(state_dict, blocks=(3, 4, 23, 3), psp_bins=(1, 2, 3, 6)):
    """`{layer: {param: float32 array}}` (the first value of `convert_with_skipped`)."""
    return convert_with_skipped(state_dict, blocks, psp_bins)[0]
