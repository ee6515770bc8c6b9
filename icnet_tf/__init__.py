"""icnet_tf: a faithful TensorFlow 2 port of ICNet-tensorflow (and PSPNet-101), chained builder."""

import os

# TF's C++ start-up chatter (CPU feature notices, spurious CUDA-plugin 'errors' of TF 2.15)
# hides the tools' own output; real failures still surface as Python exceptions;
# a value the user set wins.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from icnet_tf.icnet import ICNet, ICNet_BN  # noqa: E402
from icnet_tf.network import Chain, Network, layer  # noqa: E402
from icnet_tf.pspnet import PSPNet101  # noqa: E402

MODELS = {'ICNet_BN': ICNet_BN, 'ICNet': ICNet, 'PSPNet101': PSPNet101}


def build_model(name, **kwargs):
    """A network by its class name (`MODELS`), e.g. `build_model('ICNet_BN', num_classes=19)`."""
    if name not in MODELS:
        raise ValueError(f'unknown model {name!r}; choose one of {", ".join(MODELS)}')
    if name == 'PSPNet101':  # the CLIs' --filter_scale is ICNet's width multiplier
        if kwargs.pop('filter_scale', 1) != 1:
            raise ValueError('filter_scale applies to ICNet models only, not PSPNet101')
    return MODELS[name](**kwargs)


__all__ = ['ICNet', 'ICNet_BN', 'PSPNet101', 'Network', 'Chain', 'layer', 'MODELS', 'build_model']
