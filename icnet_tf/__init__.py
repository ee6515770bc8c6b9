"""icnet_tf: a faithful TensorFlow 2 port of ICNet-tensorflow (and PSPNet-101), chained builder."""

import os
import sys

# TF's C++ start-up chatter (CPU feature notices, spurious CUDA-plugin 'errors' of TF 2.15)
# hides the tools' own output; real failures still surface as Python exceptions. It must be
# set before TensorFlow is imported, so the command-line tools' `--verbose` flag is looked for
# here; a value the user set in the environment wins.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '0' if '--verbose' in sys.argv[1:] else '3')

from icnet_tf.icnet import ICNet, ICNet_BN  # noqa: E402
from icnet_tf.models import MODELS, build_model, model_class, register_model  # noqa: E402
from icnet_tf.network import Chain, Network, layer  # noqa: E402
from icnet_tf.pspnet import PSPNet101  # noqa: E402

__all__ = [
    'MODELS',
    'Chain',
    'ICNet',
    'ICNet_BN',
    'Network',
    'PSPNet101',
    'build_model',
    'layer',
    'model_class',
    'register_model',
]
