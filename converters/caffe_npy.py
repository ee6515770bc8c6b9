"""Caffe-converted weights (caffe-tensorflow `.npy`) -> icnet_tf networks and TF checkpoints.

The file format (ethereon/caffe-tensorflow, as shipped for ICNet and PSPNet): a `.npy` holding one
pickled object, a dict `{op_name: {param_name: ndarray}}`, written by Python 2. Parameter names:
conv `weights` (already HWIO, i.e. [k_h, k_w, c_in, c_out]) and `biases`; batch norm `mean`,
`variance`, `scale`, `offset` (statistics already divided by Caffe's scale factor; vectors may
carry singleton dims, which are squeezed). Layer names are the Caffe names with '/' replaced by
'_' (`conv1_1_3x3_s2_bn`), i.e. exactly the names of the icnet_tf layers. The Caffe deploy graphs
have no `sub4_out`/`sub24_out`, so those heads are absent from the files.

`load(path)` reads such a file WITHOUT executing arbitrary pickled code (a restricted unpickler
that only rebuilds NumPy arrays, dicts and scalars); `convert(npy)` is the pure key map onto
icnet_tf parameter keys. The command-line tool is `python -m icnet_tf.convert` (this module
still runs as `python -m converters.caffe_npy --npy F.npy ...`, the same tool).
"""

import io
import os
import pickle

import numpy as np

from converters.errors import WeightsFileError

BN_PARAMS = ('mean', 'variance', 'scale', 'offset')
CONV_PARAMS = ('weights', 'biases')

# The only globals a caffe-tensorflow .npy pickle needs: NumPy array/dtype/scalar rebuilders
# (under both the NumPy 1.x and 2.x module names) and Python 2 builtins that map to plain types.
_ALLOWED_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('collections', 'OrderedDict'),
    ('__builtin__', 'dict'),
    ('builtins', 'dict'),
    ('_codecs', 'encode'),  # how protocol-2 pickles written by Python 3 carry raw bytes
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'refusing to load global {module}.{name}')


def _read_pickled_npy(f):
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype != np.dtype(object) or shape != ():
        raise ValueError(
            f'expected one pickled dict, found an array of shape {shape} and dtype {dtype}'
        )
    obj = _RestrictedUnpickler(f, encoding='latin1').load()
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()  # np.save pickles the 0-d object array that wraps the dict
    return obj


def load(path):
    """Read a caffe-tensorflow `.npy` into `{op_name: {param_name: ndarray}}`.

    Raises `WeightsFileError` (message starting with the path) for a missing, truncated,
    corrupt or unsafe file, or one that is not a dict of dicts of arrays.
    """
    if not os.path.isfile(path):
        raise WeightsFileError(f'{path}: no such weights file')
    try:
        with open(path, 'rb') as f:
            obj = _read_pickled_npy(io.BufferedReader(f))
    except pickle.UnpicklingError as e:
        raise WeightsFileError(f'{path}: not a valid caffe-tensorflow .npy ({e})') from None
    except (ValueError, EOFError, OSError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise WeightsFileError(
            f'{path}: not a readable caffe-tensorflow .npy weights file '
            f'(truncated or corrupt?): {e}'
        ) from None
    if not isinstance(obj, dict):
        raise WeightsFileError(
            f'{path}: expected a dict {{layer: {{param: array}}}}, found {type(obj).__name__}'
        )
    for op_name, params in obj.items():
        if not isinstance(params, dict) or not all(
            isinstance(v, np.ndarray) for v in params.values()
        ):
            raise WeightsFileError(f'{path}: layer {op_name!r} is not a dict of arrays')
    return obj


def convert(npy):
    """Pure key map: `{op: {param: array}}` -> icnet_tf `{layer: {param: float32 array}}`.

    Layer and parameter names map 1:1 (caffe-tensorflow names are ours); batch-norm vectors
    are squeezed to 1-D. Unknown parameter names are kept as they are, so the strict loader
    reports them as unexpected rather than this function hiding them.
    """
    out = {}
    for op_name, params in npy.items():
        layer = {}
        for param, value in params.items():
            value = np.asarray(value, dtype=np.float32)
            if param in BN_PARAMS and sum(d != 1 for d in value.shape) <= 1:
                value = value.reshape(-1)  # (1, 1, 1, C) or (C, 1) -> (C,)
            layer[param] = value
        out[str(op_name)] = layer
    return out


def detect(path):
    """True for a file named `.npy` or starting with NumPy's magic string."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    if path.endswith('.npy'):
        return True
    with open(path, 'rb') as f:
        return f.read(6) == b'\x93NUMPY'


def read(path, key_map=None):
    """`(convert(load(path)), [])`: the weights-format row of `converters.formats`."""
    del key_map
    return convert(load(os.fspath(path))), []


if __name__ == '__main__':  # entry point kept for old commands; the tool is icnet_tf.convert
    from icnet_tf.convert import entry_point

    entry_point()
