"""Deep Feature Flow video segmentation on top of icnet_tf's chained builder.

`from dff_tf import DFF` (loaded on first use: importing `dff_tf.flownet` or `dff_tf.warp`
alone does not build the whole model module).
"""

import os
import sys

# Quiet TF's C++ start-up chatter before any CLI of this package imports TF (as icnet_tf does,
# with the same `--verbose` switch).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '0' if '--verbose' in sys.argv[1:] else '3')

__all__ = ['DFF', 'VideoRunner']


def __getattr__(name):
    if name in __all__:
        from dff_tf import model

        return getattr(model, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
