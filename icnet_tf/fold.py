"""Batch-norm folding: an `ICNet_BN` (bnnomerge) network becomes the `ICNet` (merged) structure.

In inference mode every `<conv>` + `<conv>_bn` pair of ICNet_BN computes

    bn(conv(x, w)) = conv(x, w) * f + (offset - mean * f),   f = scale / sqrt(variance + 1e-5)

per output channel, i.e. one biased convolution with

    w' = w * f   (HWIO kernel, f broadcast over the last axis: the output channels)
    b' = offset - mean * f

and the ReLU that followed the BN becomes the convolution's ReLU. This is how the Caffe
`icnet_cityscapes_train_30k.npy` (merged) models relate to the `*_bnnomerge` ones, and it yields
exactly the layers, names and shapes of `ICNet` (64 biased convolutions). The auxiliary heads
`sub4_out` and `sub24_out` (training-only cascade label guidance: `net.aux_heads`) are dropped.
The arithmetic is done in float64 and rounded once to float32.
"""

import numpy as np

from icnet_tf.network import BN_EPSILON


def fold_weights(weights, epsilon=BN_EPSILON, drop=()):
    """`{layer: {param: array}}` of an ICNet_BN -> the same of the merged ICNet.

    Every layer `X_bn` must follow a bias-free convolution `X` and every bias-free convolution
    must have its `X_bn`; layers in `drop` are left out; other layers (the biased class head
    `conv6_cls`) are copied. Raises `ValueError` naming the layer when the dict does not fit.
    """
    out = {}
    for name, params in weights.items():
        if name in drop:
            continue
        if name.endswith('_bn'):
            conv = name[: -len('_bn')]
            if 'weights' not in weights.get(conv, {}):
                raise ValueError(f'{name}: batch norm without a convolution {conv!r}')
            continue
        params = {k: np.asarray(v) for k, v in params.items()}
        bn = weights.get(f'{name}_bn')
        if bn is None:
            if 'biases' not in params:
                raise ValueError(f'{name}: convolution without bias and without {name}_bn')
            out[name] = {k: v.astype(np.float32) for k, v in params.items()}
            continue
        if 'biases' in params:
            raise ValueError(
                f'{name}: a biased convolution followed by {name}_bn (the bias '
                'would have to be folded too; ICNet_BN convolutions have none)'
            )
        kernel = params['weights'].astype(np.float64)
        stats = {
            k: np.asarray(bn[k], np.float64).reshape(-1)
            for k in ('scale', 'offset', 'mean', 'variance')
        }
        if stats['scale'].shape[0] != kernel.shape[-1]:
            raise ValueError(
                f'{name}_bn has {stats["scale"].shape[0]} channels, {name} has '
                f'{kernel.shape[-1]} outputs'
            )
        factor = stats['scale'] / np.sqrt(stats['variance'] + epsilon)
        out[name] = {
            'weights': (kernel * factor).astype(np.float32),
            'biases': (stats['offset'] - stats['mean'] * factor).astype(np.float32),
        }
    return out


def network_weights(net):
    """`{layer: {param: ndarray}}` of a network's current variables."""
    return {
        layer: {param: var.numpy() for param, var in params.items()}
        for layer, params in net.build().params.items()
    }


def fold_batch_norm(net):
    """A new network without batch norm computing `net(x, training=False)`.

    The structure is the network's own `merged_network()` (ICNet_BN -> the merged `ICNet`, same
    num_classes, filter_scale and pyramid settings); its weights are `fold_weights` of the
    network's current values, without the auxiliary heads (`net.aux_heads`: training only). A
    network without batch norm is copied as it is.
    """
    merged = getattr(net, 'merged_network', None)
    if merged is None:
        raise TypeError(f'{type(net).__name__} declares no merged_network() to fold into')
    folded = merged()
    folded.load(fold_weights(network_weights(net), drop=tuple(net.aux_heads)), verbose=False)
    return folded
