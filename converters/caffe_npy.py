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

import math
import mmap
import os
import pickle
from collections import OrderedDict

import numpy as np

from converters.budget import ReadBudget, ReadLimitError, flat_pairs, human, scan_pickle, short_repr
from converters.errors import WeightsFileError

BN_PARAMS = ('mean', 'variance', 'scale', 'offset')
CONV_PARAMS = ('weights', 'biases')

_MAX_HEADER = 65536  # bytes; NumPy itself refuses .npy headers over 10000 bytes
_ARRAY_KINDS = 'biufc'  # bool, integers, floats, complex: what a weights array may hold


class _NDArrayClass:
    """Stand-in for the `numpy.ndarray` global: only ever the first argument of _reconstruct."""


class _DType:
    """Stand-in for `numpy.dtype(code, align, copy)`: keeps the type code and the byte order of
    the pickled state; `numpy_dtype()` builds the real (plain, unstructured) dtype."""

    def __init__(self, code, align=False, copy=False):
        if not isinstance(code, (str, bytes)) or len(code) > 8:
            raise pickle.UnpicklingError(f'unsupported NumPy dtype {short_repr(code)}')
        self.code = code.decode('latin1') if isinstance(code, bytes) else code
        self.order = '='

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ('<', '>', '|', '='):
            self.order = state[1]

    def numpy_dtype(self):
        dtype = np.dtype(self.code)
        if dtype.kind not in _ARRAY_KINDS + 'O' or dtype.fields or dtype.subdtype:
            raise pickle.UnpicklingError(f'unsupported NumPy dtype {self.code!r}')
        return dtype.newbyteorder(self.order) if self.order in '<>' else dtype


def _numpy_dtype(dtype):
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError('malformed NumPy array (no dtype) in the pickle')
    return dtype.numpy_dtype()


class _Array:
    """What `_reconstruct(ndarray, (0,), b'b')` returns: a placeholder that the pickle's BUILD
    op fills with (version, shape, dtype, fortran_order, data). Numeric data is checked
    against the declared shape and charged to the budget before NumPy allocates the array;
    object arrays (np.save wraps the weights dict in a 0-d one) keep their pickled list."""

    def __init__(self, budget):
        self.budget, self.array, self.items, self.shape = budget, None, None, None

    def __setstate__(self, state):
        if self.shape is not None or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError('malformed NumPy array state in the pickle')
        shape, dtype, fortran, data = state[-4:]
        ok = isinstance(shape, tuple) and len(shape) <= 32
        if not ok or not all(isinstance(d, int) and 0 <= d < 2**63 for d in shape):
            raise pickle.UnpicklingError(f'malformed NumPy array shape {short_repr(shape)}')
        dtype, count = _numpy_dtype(dtype), math.prod(shape)
        what = f'an array of shape {shape} and dtype {dtype}'
        if dtype.kind == 'O':
            if not isinstance(data, list) or len(data) != count:
                held = len(data) if isinstance(data, list) else 0
                raise ReadLimitError(
                    f'{what} declares {count} elements but the pickle holds {held}'
                )
            self.shape, self.items = shape, data
            return
        nbytes = count * dtype.itemsize
        self.budget.charge(nbytes, what)  # before NumPy allocates it
        if not isinstance(data, (bytes, str)) or len(data) != nbytes:
            held = len(data) if isinstance(data, (bytes, str)) else 0
            raise ReadLimitError(f'{what} needs {human(nbytes)} but its data has {human(held)}')
        array = np.ndarray((0,), np.int8)
        array.__setstate__((1, shape, dtype, bool(fortran), data))
        self.shape, self.array = shape, array


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds NumPy arrays, dtypes, scalars, dicts and plain values, nothing else.

    The only globals a caffe-tensorflow .npy pickle needs are NumPy's array/dtype/scalar
    rebuilders (under both the NumPy 1.x and 2.x module names) and the Python 2 builtins that
    map to plain types. Each resolves to a local stand-in that checks its arguments and charges
    what it builds to `budget` (a memoised list handed to dict() a million times would
    otherwise build a million dicts).
    """

    def __init__(self, file, budget):
        super().__init__(file, encoding='latin1')
        self.budget = budget
        self._encoded = set()
        rebuild = {
            'numpy.core.multiarray': self._reconstruct,
            'numpy._core.multiarray': self._reconstruct,
        }
        scalar = {'numpy.core.multiarray': self._scalar, 'numpy._core.multiarray': self._scalar}
        self.allowed = {
            **{(m, '_reconstruct'): f for m, f in rebuild.items()},
            **{(m, 'scalar'): f for m, f in scalar.items()},
            ('numpy', 'ndarray'): _NDArrayClass,
            ('numpy', 'dtype'): _DType,
            ('collections', 'OrderedDict'): self._mapping(OrderedDict),
            ('__builtin__', 'dict'): self._mapping(dict),
            ('builtins', 'dict'): self._mapping(dict),
            # how protocol-2 pickles written by Python 3 carry raw bytes
            ('_codecs', 'encode'): self._latin1_encode,
        }

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise pickle.UnpicklingError(f'refusing to load global {module}.{name}')

    def _reconstruct(self, cls, shape, typecode):
        # np.ndarray.__reduce__ always writes _reconstruct(ndarray, (0,), b'b') + a BUILD.
        if cls is not _NDArrayClass or shape != (0,) or typecode not in (b'b', 'b'):
            raise pickle.UnpicklingError('unexpected numpy _reconstruct call in the pickle')
        return _Array(self.budget)

    def _scalar(self, dtype, data=None):
        dtype = _numpy_dtype(dtype)
        if dtype.kind not in _ARRAY_KINDS or not isinstance(data, (bytes, str)):
            raise pickle.UnpicklingError('unsupported NumPy scalar in the pickle')
        data = data.encode('latin1') if isinstance(data, str) else data
        if len(data) != dtype.itemsize:
            raise pickle.UnpicklingError('malformed NumPy scalar in the pickle')
        return np.frombuffer(data, dtype)[0]

    def _mapping(self, kind):
        def build(*args):
            if len(args) > 1 or (args and not flat_pairs(args[0])):
                raise pickle.UnpicklingError(
                    f'unexpected {kind.__name__} call in the pickle (only plain keys are read)'
                )
            self.budget.charge(72 * len(args[0]) if args else 0, f'a {kind.__name__}')
            return kind(*args)

        return build

    def _latin1_encode(self, text, encoding='latin1'):
        if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
            raise pickle.UnpicklingError(
                f'refusing _codecs.encode with encoding {short_repr(encoding)}'
            )
        if id(text) in self._encoded:  # the first copy of each pickled str is its file bytes
            self.budget.charge(len(text), 'a repeated _codecs.encode call')
        self._encoded.add(id(text))
        return text.encode('latin1')


def _check_npy_header(f, size):
    """Refuse a header length the file cannot hold before NumPy reads that many bytes."""
    head = f.read(8)
    if len(head) < 8 or head[:6] != b'\x93NUMPY' or head[6] not in (1, 2, 3):
        raise ValueError('not a .npy file (no \\x93NUMPY magic and version)')
    field = f.read(2 if head[6] == 1 else 4)
    length = int.from_bytes(field, 'little')
    if length > min(_MAX_HEADER, size - f.tell()):
        raise ReadLimitError(
            f'the .npy header declares {human(length)} but the file has {human(size)}'
        )
    f.seek(0)


def _read_pickled_npy(f, size, budget):
    _check_npy_header(f, size)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype != np.dtype(object) or shape != ():
        nbytes = math.prod(shape) * dtype.itemsize
        raise ValueError(
            f'expected one pickled dict, found an array of shape {shape} and dtype {dtype} '
            f'({human(nbytes)} declared, the file has {human(size)})'
        )
    start = f.tell()
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        scan_pickle(data, start, size, budget, str_encoding='latin1')
    obj = _RestrictedUnpickler(f, budget).load()
    if isinstance(obj, _Array) and obj.items is not None and obj.shape == ():
        obj = obj.items[0]  # np.save pickles the 0-d object array that wraps the dict
    return obj


def _array_of(value):
    """The NumPy array behind a parameter placeholder, or None if it is not a numeric array."""
    if isinstance(value, _Array) and value.array is not None:
        return value.array
    return value if isinstance(value, np.ndarray) else None


def load(path):
    """Read a caffe-tensorflow `.npy` into `{op_name: {param_name: ndarray}}`.

    Raises `WeightsFileError` (message starting with the path) for a missing, truncated,
    corrupt or unsafe file, one that is not a dict of dicts of numeric arrays, or one that
    declares more data than it holds (see converters/budget.py: besides the file, at most
    2 x its size + 16 MB is allocated, each array checked before it is built).
    """
    if not os.path.isfile(path):
        raise WeightsFileError(f'{path}: no such weights file')
    try:
        with open(path, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            obj = _read_pickled_npy(f, size, ReadBudget(size))
    except ReadLimitError as e:
        raise WeightsFileError(f'{path}: {e}') from None
    except pickle.UnpicklingError as e:
        raise WeightsFileError(f'{path}: not a valid caffe-tensorflow .npy ({e})') from None
    except MemoryError:
        raise WeightsFileError(f'{path}: not enough memory to read this .npy file') from None
    except (OverflowError, RecursionError) as e:
        raise WeightsFileError(
            f'{path}: not a readable caffe-tensorflow .npy weights file '
            f'(a size or nesting in it is out of range: {type(e).__name__}: {e})'
        ) from None
    except (ValueError, EOFError, OSError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise WeightsFileError(
            f'{path}: not a readable caffe-tensorflow .npy weights file '
            f'(truncated or corrupt?): {e}'
        ) from None
    if not isinstance(obj, dict):
        found = 'an array' if isinstance(obj, _Array) else type(obj).__name__
        raise WeightsFileError(
            f'{path}: expected a dict {{layer: {{param: array}}}}, found {found}'
        )
    done = set()  # a pickle may share one params dict between layers: fill each once
    for op_name, params in obj.items():
        if not isinstance(params, dict):
            raise WeightsFileError(f'{path}: layer {short_repr(op_name)} is not a dict of arrays')
        if id(params) in done:
            continue
        done.add(id(params))
        for name, value in params.items():
            array = _array_of(value)
            if array is None:
                raise WeightsFileError(
                    f'{path}: layer {short_repr(op_name)} is not a dict of arrays'
                )
            params[name] = array
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
