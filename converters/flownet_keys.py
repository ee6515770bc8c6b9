"""FlowNetPytorch FlowNetS state dicts -> `dff_tf.flownet.FlowNetS` parameters (a pure key map).

Source: the flat state dict of ClementPinard/FlowNetPytorch `models/FlowNetS.py` (`flownets`,
`flownets_bn`), as `converters.torch_pth.state_dict_of` returns it (NumPy arrays, a DataParallel
`module.` prefix already stripped). Its module names, in state-dict order:

* `conv1` .. `conv6_1` (10 encoder convs), each an `nn.Sequential`: index 0 is the `Conv2d`
  (biased in `flownets`, bias-free in `flownets_bn`), index 1 the `BatchNorm2d` (`flownets_bn`
  only; `flownets` has the LeakyReLU there, which holds no parameters);
* `deconv5` .. `deconv2`: `nn.Sequential(ConvTranspose2d(bias=False), LeakyReLU)`;
* `predict_flow6` .. `predict_flow2`: a bare `Conv2d(bias=False)`;
* `upsampled_flow6_to_5` .. `upsampled_flow3_to_2`: a bare `ConvTranspose2d(bias=False)`.

Target: `{layer: {param: float32 ndarray}}` with the layer names of the PyTorch modules (the BN
of `convX` becomes layer `convX_bn`) and caffe-tensorflow parameter names.

Layouts and the named transforms
--------------------------------
* `conv_oihw_to_hwio`: `Conv2d.weight` is `(out, in, kh, kw)`; TF `conv2d` wants
  `(kh, kw, in, out)`: `transpose(2, 3, 1, 0)`. Both frameworks cross-correlate, so no flip.
* `deconv_iohw_to_hwoi`: `ConvTranspose2d.weight` is `(in, out, kh, kw)`; TF
  `conv2d_transpose` wants `(kh, kw, out, in)`: the same `transpose(2, 3, 1, 0)`, again with
  no spatial flip (both are the adjoint of the same cross-correlation; checked numerically in
  tests/test_flownet.py against a direct NumPy transposed convolution).
* `identity`: biases and the BN vectors `weight`/`bias`/`running_mean`/`running_var` ->
  `scale`/`offset`/`mean`/`variance`, all `(C,)`.
* `num_batches_tracked` (BN bookkeeping, unused at inference and by TF's BN) is dropped on
  purpose: the table maps it to `IGNORED`.

Strictness
----------
* Keys the table does not know are NOT dropped: they are returned under the reserved layer
  `UNMAPPED` (`'<unmapped>'`), with the full PyTorch key as the parameter name. The strict
  loader (`net.load`) therefore reports them as unexpected keys (`<unmapped>/conv_redir.0.weight`)
  and refuses to load; `ignore_missing=True` skips them and says so. We chose this over raising
  here so that lenient loading stays possible and every problem is reported in one message
  together with the missing and wrong-shape keys.
* A state dict of the other variant (BN keys such as `conv1.1.running_mean` with
  `batch_norm=False`, or `conv1.0.bias` with `batch_norm=True`) raises `WeightsMismatchError`
  at once, naming the variant to build: a half-loaded FlowNetS would be useless.
* A tensor whose rank does not fit its transform raises `WeightsMismatchError` naming the key.
Shapes are checked by the loader against the network's variables.
"""

import numpy as np

from converters.errors import WeightsMismatchError
from converters.keys import UNMAPPED

IGNORED = 'ignored'

# Module names of FlowNetPytorch's FlowNetS, in the order of its state dict.
ENCODER_CONVS = (
    'conv1',
    'conv2',
    'conv3',
    'conv3_1',
    'conv4',
    'conv4_1',
    'conv5',
    'conv5_1',
    'conv6',
    'conv6_1',
)
DECONVS = ('deconv5', 'deconv4', 'deconv3', 'deconv2')
FLOW_PREDICTORS = (
    'predict_flow6',
    'predict_flow5',
    'predict_flow4',
    'predict_flow3',
    'predict_flow2',
)
FLOW_UPSAMPLERS = (
    'upsampled_flow6_to_5',
    'upsampled_flow5_to_4',
    'upsampled_flow4_to_3',
    'upsampled_flow3_to_2',
)

# Named transforms: name -> axes of np.transpose (None: the array as it is).
TRANSFORMS = {
    'conv_oihw_to_hwio': (2, 3, 1, 0),
    'deconv_iohw_to_hwoi': (2, 3, 1, 0),
    'identity': None,
}

# Per-module templates: (PyTorch key suffix, target layer suffix, target param, transform).
# A target param of None with transform IGNORED means "known, deliberately not loaded".
PLAIN_CONV = (
    ('.0.weight', '', 'weights', 'conv_oihw_to_hwio'),
    ('.0.bias', '', 'biases', 'identity'),
)
BN_CONV = (
    ('.0.weight', '', 'weights', 'conv_oihw_to_hwio'),
    ('.1.weight', '_bn', 'scale', 'identity'),
    ('.1.bias', '_bn', 'offset', 'identity'),
    ('.1.running_mean', '_bn', 'mean', 'identity'),
    ('.1.running_var', '_bn', 'variance', 'identity'),
    ('.1.num_batches_tracked', '_bn', None, IGNORED),
)
DECONV = (('.0.weight', '', 'weights', 'deconv_iohw_to_hwoi'),)
PREDICT_FLOW = (('.weight', '', 'weights', 'conv_oihw_to_hwio'),)
UPSAMPLE_FLOW = (('.weight', '', 'weights', 'deconv_iohw_to_hwoi'),)


def key_table(batch_norm):
    """`{pytorch_key: (layer, param, transform)}` for one variant, in state-dict order."""
    groups = (
        (ENCODER_CONVS, BN_CONV if batch_norm else PLAIN_CONV),
        (DECONVS, DECONV),
        (FLOW_PREDICTORS, PREDICT_FLOW),
        (FLOW_UPSAMPLERS, UPSAMPLE_FLOW),
    )
    table = {}
    for modules, template in groups:
        for module in modules:
            for suffix, layer_suffix, param, transform in template:
                table[module + suffix] = (module + layer_suffix, param, transform)
    return table


def _variant(batch_norm):
    return (
        "batch-norm FlowNetS (FlowNetPytorch 'flownets_bn')"
        if batch_norm
        else "plain FlowNetS (FlowNetPytorch 'flownets')"
    )


def _check_variant(keys, batch_norm):
    ours, theirs = key_table(batch_norm), key_table(not batch_norm)
    foreign = [k for k in keys if k not in ours and k in theirs]
    if foreign:
        shown = ', '.join(foreign[:4]) + (', ...' if len(foreign) > 4 else '')
        raise WeightsMismatchError(
            f'the state dict is a {_variant(not batch_norm)} ({len(foreign)} keys of that '
            f'variant only: {shown}) but FlowNetS(batch_norm={batch_norm}) was asked for: '
            f'build FlowNetS(batch_norm={not batch_norm})'
        )


def _apply(key, value, transform):
    axes = TRANSFORMS[transform]
    value = np.asarray(value)
    if axes is None:
        if value.ndim != 1:
            raise WeightsMismatchError(f'{key}: expected a vector, got shape {value.shape}')
        return value.astype(np.float32)
    if value.ndim != len(axes):
        raise WeightsMismatchError(
            f'{key}: {transform} needs a {len(axes)}-D kernel, got shape {value.shape}'
        )
    return np.ascontiguousarray(value.transpose(axes), dtype=np.float32)


def convert(state_dict, batch_norm):
    """Pure key map: flat `{pytorch_key: ndarray}` -> `{layer: {param: float32 ndarray}}`.

    Unknown keys come back under `UNMAPPED`; `num_batches_tracked` is dropped; a state dict of
    the other variant raises `WeightsMismatchError` (see the module docstring).
    """
    batch_norm = bool(batch_norm)
    table = key_table(batch_norm)
    _check_variant(state_dict, batch_norm)
    out = {}
    for key, value in state_dict.items():
        rule = table.get(key)
        if rule is None:
            out.setdefault(UNMAPPED, {})[key] = np.asarray(value)
            continue
        layer, param, transform = rule
        if transform == IGNORED:
            continue
        out.setdefault(layer, {})[param] = _apply(key, value, transform)
    return out


def torch_shapes(param_shapes, batch_norm):
    """The PyTorch state-dict `{key: shape}` (in state-dict order) of a FlowNetS whose variables
    have `param_shapes` `{'layer/param': shape}`: the inverse of `convert` on shapes.

    Raises `WeightsMismatchError` unless the table and `param_shapes` cover each other exactly,
    which makes this the check that a network and this key map agree.
    """
    table = key_table(batch_norm)
    targets = {f'{layer}/{param}' for layer, param, t in table.values() if t != IGNORED}
    extra = sorted(set(param_shapes) - targets)
    absent = sorted(targets - set(param_shapes))
    if extra or absent:
        raise WeightsMismatchError(
            f'FlowNetS variables and the key table disagree: not in the '
            f'table {extra}; not in the network {absent}'
        )
    shapes = {}
    for key, (layer, param, transform) in table.items():
        if transform == IGNORED:
            shapes[key] = ()
            continue
        shape = tuple(param_shapes[f'{layer}/{param}'])
        axes = TRANSFORMS[transform]
        if axes is not None:  # invert the permutation: torch axis axes[i] <- tf axis i
            inverse = [0] * len(axes)
            for i, a in enumerate(axes):
                inverse[a] = shape[i]
            shape = tuple(inverse)
        shapes[key] = shape
    return shapes
