"""Read PyTorch checkpoints (``.pth``, ``.pth.tar``, ``.pt``, ``.safetensors``) with only the
standard library and NumPy: torch is never imported.

Public API
----------
``load(path)``: the whole checkpoint as plain Python (``dict``, ``list``, ``tuple``, ``int``,
``float``, ``str``, ...) with every tensor a NumPy array (``OrderedDict`` -> ``dict``,
``torch.Size`` -> ``tuple``, NumPy scalars -> Python numbers). Nothing is unwrapped.

``state_dict_of(obj)``: the flat ``{name: ndarray}`` inside a loaded checkpoint (see its
docstring).

``split_metadata(obj)``: ``(state_dict_of(obj), {top-level entries holding no tensor})``, e.g.
FlowNet's ``epoch``, ``arch``, ``best_EPE``, ``div_flow``.

Every failure is a ``converters.errors.WeightsFileError`` whose one-line message starts with
the path.

Zip format (``torch.save`` since torch 1.6)
-------------------------------------------
A zip archive (records stored uncompressed) whose records all live under one directory ``<a>/``
(``<a>`` is the file's stem; torch 2.13 writes ``data.pkl``, ``.format_version``,
``.storage_alignment``,
``byteorder``, ``data/<key>``, ``version``, ``.data/serialization_id``):

* ``<a>/data.pkl``   the object, pickled (protocol 2) with persistent ids
  ``('storage', storage_class, key, location, numel)``. ``storage_class`` is a global such as
  ``torch.FloatStorage`` naming the element type, or ``torch.storage.UntypedStorage`` (bytes) for
  the
  dtypes torch serialises with ``_rebuild_tensor_v3`` (uint16/32/64, ...); ``numel`` counts
  elements.
* ``<a>/data/<key>`` the storage's raw elements, ``numel * itemsize`` bytes.
* ``<a>/byteorder``  ``little`` or ``big`` (older files lack it: little).

A tensor is ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
backward_hooks[, metadata])``, or ``_rebuild_tensor_v3(..., backward_hooks, dtype[, metadata])`` on
an
untyped storage (offset, size and stride then count elements of ``dtype``); ``_rebuild_parameter
(tensor, requires_grad, hooks[, state])`` wraps a tensor. Offsets and strides count elements, so a
tensor is ``as_strided(storage[offset:], size, stride)``; several tensors may share one storage.

Legacy format (``_use_new_zipfile_serialization=False``; torch < 1.6, e.g. old FlowNetPytorch
``.pth.tar``)
------------------------------------------------------------------------------------------------------------
Five consecutive pickles, then raw storages:

1. the magic number ``0x1950a86a20f9469cfc6c``;  2. the protocol version ``1001``;
3. sys info ``{'protocol_version', 'little_endian', 'type_sizes'}``;
4. the object, with persistent ids ``('storage', storage_class, root_key, location, numel,
   view_metadata)``; ``view_metadata`` is ``None`` (recent torch) or ``(view_key, offset,
   view_numel)``
   for a storage that is a slice of the root storage;
5. the list of root storage keys; then, for each key in that order, its element count as a
   little-endian int64 followed by ``count * itemsize`` little-endian bytes.

The pre-0.4 *tar* format (members ``storages``, ``tensors``, ``pickle``) is detected and refused.

Safetensors
-----------
A little-endian uint64 ``n``, an ``n``-byte JSON header ``{name: {"dtype", "shape", "data_offsets":
[begin, end]}, "__metadata__": {str: str}}``, then the data; offsets are relative to the end of the
header. ``load`` returns ``{name: array}`` plus ``__metadata__`` when present.

Types and safety
----------------
float32/16/64, int64/32/16/8, uint8/16/32/64 and bool become the same NumPy dtype (native byte
order);
bfloat16 becomes float32 (exact, NumPy has no bfloat16). The unpickler only resolves the globals in
``_ALLOWED`` (tensor rebuilders, storage classes, dtypes, ``OrderedDict``, ``torch.Size``, NumPy
scalars,
``_codecs.encode`` for latin-1 only, which is how protocol 2 spells ``bytes``) to local stand-ins
that
build inert references, so no pickle can run code: anything else (``os.system``, ``builtins.eval``,
model classes, ``argparse.Namespace``, sets, NumPy arrays) is refused by name. Tensors are
materialised
only after unpickling, with offset/size/stride checked against the storage's length. ``nn.Module``
state-dict ``_metadata`` (module versions) is dropped; lazy conj/neg tensor views are refused.

Bounds (``converters/budget.py``): nothing is allocated that the file cannot back. Pickles are
pre-scanned (lengths, memo indices, the objects they build); zip records' sizes are checked
against each other, the file and deflate's 1032:1 limit, and read with one bounded read; legacy
storage counts and safetensors headers and offsets are checked against the file, and
safetensors tensors may not overlap. Besides the file itself, arrays and the rest may take at
most 4 x its size + 16 MB (tensor copies: a weight and its transpose both count), or the load is
refused with one line naming what declares too much.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
import sys
import types
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.budget import ReadBudget, ReadLimitError, flat_pairs, human, scan_pickle, short_repr
from converters.errors import WeightsFileError

__all__ = ['load', 'state_dict_of', 'split_metadata']

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_MAX_NDIM = 64  # torch's own limit on tensor dimensions
# Deflate cannot expand more than 1032:1 (a 258-byte match costs at least 2 bits); a zip
# record declaring more than that from its compressed size lies.
_DEFLATE_MAX_RATIO = 1032
# Tensors are copied out of their storages, and several tensors may view one storage (a weight
# and its transpose, strided slices) or widen it (bfloat16 -> float32), so a checkpoint may build
# up to this many times its size in arrays (converters/budget.py; .npy files: 2).
_BUDGET_FACTOR = 4
# torch dtype name -> NumPy storage type (byte order added when reading); bf16 and bool
# post-processed.
_NUMPY = types.MappingProxyType(
    {
        'float32': 'f4',
        'float16': 'f2',
        'bfloat16': 'u2',
        'float64': 'f8',
        'int64': 'i8',
        'int32': 'i4',
        'int16': 'i2',
        'int8': 'i1',
        'uint8': 'u1',
        'bool': 'u1',
        'uint16': 'u2',
        'uint32': 'u4',
        'uint64': 'u8',
    }
)
_STORAGE_CLASSES = types.MappingProxyType(
    {
        'FloatStorage': 'float32',
        'HalfStorage': 'float16',
        'BFloat16Storage': 'bfloat16',
        'DoubleStorage': 'float64',
        'LongStorage': 'int64',
        'IntStorage': 'int32',
        'ShortStorage': 'int16',
        'CharStorage': 'int8',
        'ByteStorage': 'uint8',
        'BoolStorage': 'bool',
    }
)
_SAFETENSORS = types.MappingProxyType(
    {
        'F32': 'float32',
        'F16': 'float16',
        'BF16': 'bfloat16',
        'F64': 'float64',
        'I64': 'int64',
        'I32': 'int32',
        'I16': 'int16',
        'I8': 'int8',
        'U8': 'uint8',
        'BOOL': 'bool',
        'U16': 'uint16',
        'U32': 'uint32',
        'U64': 'uint64',
    }
)


class _FormatError(Exception):
    """Raised inside this module; ``load`` prefixes the path and re-raises a WeightsFileError."""


@dataclass(frozen=True)
class _Marker:
    """Stand-in for a torch storage class or dtype global (not callable, so never reduced)."""

    kind: str  # "storage" or "dtype"
    dtype: str


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: str
    offset: int  # elements into the root storage (legacy storage views), else 0
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    dtype: str
    offset: int
    size: tuple
    stride: tuple


class _OrderedDict(dict):
    """``collections.OrderedDict`` stand-in; ignores pickled attributes (``_metadata``)."""

    def __setstate__(self, state):
        pass


class _NumpyDType:
    """``numpy.dtype`` stand-in: keeps the type code and the byte order from the pickled state."""

    def __init__(self, code, align=False, copy=False):
        if not isinstance(code, str) or len(code) > 8:
            raise _FormatError(f'unsupported NumPy dtype {short_repr(code)} in the pickle')
        self.code, self.order = code, '='

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ('<', '>', '|', '='):
            self.order = state[1]


def _numpy_scalar(dtype, data):
    dt = np.dtype(dtype.code).newbyteorder(dtype.order) if isinstance(dtype, _NumpyDType) else None
    if (
        dt is None
        or dt.kind not in 'biufc'
        or not isinstance(data, bytes)
        or len(data) != dt.itemsize
    ):
        raise _FormatError('malformed NumPy scalar in the pickle')
    return np.frombuffer(data, dt)[0].item()


def _latin1_encode(text, encoding='latin1'):
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise _FormatError(f'refusing _codecs.encode with encoding {short_repr(encoding)}')
    return text.encode('latin1')


def _ints(value, what):
    ok = isinstance(value, (tuple, list)) and len(value) <= _MAX_NDIM
    if not ok or not all(isinstance(v, int) and 0 <= v < 2**63 for v in value):
        raise _FormatError(f'malformed tensor {what} {short_repr(value)} in the pickle')
    return tuple(value)


def _torch_size(value):
    """``torch.Size(list)`` -> tuple of at most _MAX_NDIM ints."""
    ok = isinstance(value, (tuple, list)) and len(value) <= _MAX_NDIM
    if not ok or not all(isinstance(v, int) for v in value):
        raise _FormatError(f'malformed torch.Size {short_repr(value)} in the pickle')
    return tuple(value)


def _rebuild_tensor(
    storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None, *, dtype=None
):
    """``torch._utils._rebuild_tensor`` (torch < 0.4) and ``_rebuild_tensor_v2``: a lazy tensor
    reference."""
    if not isinstance(storage, _StorageRef) or not isinstance(offset, int) or offset < 0:
        raise _FormatError('malformed tensor in the pickle (storage or offset)')
    size, stride = _ints(size, 'size'), _ints(stride, 'stride')
    if len(size) != len(stride):
        raise _FormatError(f'tensor size {size} and stride {stride} differ in length')
    if metadata and any(metadata.values()):
        raise _FormatError(
            f'unsupported tensor metadata {short_repr(metadata)} (lazy conj/neg view)'
        )
    return _TensorRef(storage, dtype or storage.dtype, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    if not (isinstance(dtype, _Marker) and dtype.kind == 'dtype'):
        raise _FormatError('malformed _rebuild_tensor_v3 call (no dtype)')
    return _rebuild_tensor(storage, offset, size, stride, metadata=metadata, dtype=dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    if not isinstance(data, _TensorRef):
        raise _FormatError('malformed parameter in the pickle')
    return data


def _allowed() -> types.MappingProxyType:
    table: dict[tuple[str, str], Any] = {
        ('collections', 'OrderedDict'): _OrderedDict,
        ('torch', 'Size'): _torch_size,
        ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
        ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
        ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
        ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
        ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
        ('torch', 'UntypedStorage'): _Marker('storage', 'uint8'),
        ('torch.storage', 'UntypedStorage'): _Marker('storage', 'uint8'),
        ('numpy', 'dtype'): _NumpyDType,
        ('_codecs', 'encode'): _latin1_encode,
        ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
        ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
    }
    for name, dtype in _STORAGE_CLASSES.items():
        table[('torch', name)] = table[('torch.cuda', name)] = _Marker('storage', dtype)
    for dtype in _NUMPY:
        table[('torch', dtype)] = _Marker('dtype', dtype)
    return types.MappingProxyType(table)


_ALLOWED = _allowed()


class _Unpickler(pickle.Unpickler):
    """Resolves only ``_ALLOWED`` globals; records the storages the persistent ids declare.

    The allowed callables that copy their argument (``OrderedDict(pairs)``, as Python 2 pickles
    it, and ``_codecs.encode``) charge the copy to ``budget``: a memoised argument passed to them
    a million times would otherwise be copied a million times.
    """

    def __init__(self, file, budget):
        super().__init__(file, encoding='utf-8')
        self.storages: dict[str, tuple[str, int]] = {}  # key -> (dtype, numel)
        self.budget = budget
        self._charged = {_OrderedDict: self._ordered_dict, _latin1_encode: self._encode}

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise _FormatError(
                f'refusing to load: the pickle references the disallowed global '
                f"'{module}.{name}' (only tensors, containers and plain values are allowed)"
            )
        value = _ALLOWED[(module, name)]
        return self._charged.get(value, value)

    def _ordered_dict(self, *args):
        if len(args) > 1 or (args and not flat_pairs(args[0])):
            raise _FormatError('malformed OrderedDict in the pickle (only plain keys are read)')
        self.budget.charge(72 * len(args[0]) if args else 0, 'an OrderedDict in the pickle')
        return _OrderedDict(*args)

    def _encode(self, text, encoding='latin1'):
        self.budget.charge(len(text) if isinstance(text, str) else 0, 'a bytes value')
        return _latin1_encode(text, encoding)

    def persistent_load(self, pid):
        tag = pid[0] if isinstance(pid, tuple) and pid else None
        tag = tag.decode('ascii', 'replace') if isinstance(tag, bytes) else tag  # Python 2 pickles
        if tag == 'module':
            raise _FormatError(
                'the checkpoint pickles a whole nn.Module; save its state_dict() instead'
            )
        if tag != 'storage' or len(pid) not in (5, 6):
            raise _FormatError(f'unknown persistent id {short_repr(pid)} in the pickle')
        stype, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(key, (str, bytes, int)):
            raise _FormatError(f'malformed storage id {short_repr(pid)} in the pickle')
        key = key.decode('ascii') if isinstance(key, bytes) else str(key)
        if not (
            isinstance(stype, _Marker)
            and stype.kind == 'storage'
            and isinstance(numel, int)
            and numel >= 0
        ):
            raise _FormatError(f'malformed storage id {short_repr(pid)} in the pickle')
        if self.storages.setdefault(key, (stype.dtype, numel))[0] != stype.dtype:
            raise _FormatError(f'storage {key!r} is declared with two element types')
        if view is None:
            return _StorageRef(key, stype.dtype, 0, numel)
        _view_key, offset, view_numel = view
        if not (
            isinstance(offset, int)
            and isinstance(view_numel, int)
            and 0 <= offset <= offset + view_numel <= numel
        ):
            raise _FormatError(f'storage view {short_repr(view)} lies outside storage {key!r}')
        return _StorageRef(key, stype.dtype, offset, view_numel)


def _itemsize(dtype: str) -> int:
    return np.dtype(_NUMPY[dtype]).itemsize


def _raw_dtype(dtype: str, order: str) -> np.dtype:
    """The NumPy type of stored elements; ``order`` is '<' or '>' (native kept as '=')."""
    native = np.dtype(_NUMPY[dtype])
    return native if (order == '<') == (sys.byteorder == 'little') else native.newbyteorder(order)


def _to_native(view: np.ndarray, dtype: str) -> np.ndarray:
    """Copy a (possibly strided, possibly byte-swapped) storage view into a fresh native array."""
    if dtype == 'bfloat16':  # the top half of a float32: widen the bits, shift, reinterpret
        return np.left_shift(view.astype(np.uint32), np.uint32(16)).view(np.float32)
    if dtype == 'bool':
        return np.not_equal(view, 0)
    return np.array(view, dtype=np.dtype(_NUMPY[dtype]))


def _out_itemsize(dtype: str) -> int:
    """Bytes per element of the array ``_to_native`` returns (bfloat16 widens to float32)."""
    return 4 if dtype == 'bfloat16' else _itemsize(dtype)


def _tensor(ref: _TensorRef | _StorageRef, raws: dict, order: str, budget) -> np.ndarray:
    storage = ref.storage if isinstance(ref, _TensorRef) else ref
    if isinstance(ref, _StorageRef):
        ref = _TensorRef(ref, ref.dtype, 0, (ref.numel,), (1,))
    if storage.key not in raws:
        raise _FormatError(f'storage {storage.key!r} has no data in the file')
    raw, item = raws[storage.key], _itemsize(ref.dtype)
    start = storage.offset * _itemsize(storage.dtype)
    stop = min(len(raw), start + storage.numel * _itemsize(storage.dtype))
    count = max(stop - start, 0) // item
    arr_dtype = _raw_dtype(ref.dtype, order)
    if 0 in ref.size:
        return _to_native(np.empty(ref.size, arr_dtype), ref.dtype)
    extent = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) + 1
    if extent > count:
        raise _FormatError(
            f'a {ref.dtype} tensor of size {list(ref.size)} needs {extent} elements of '
            f'storage {storage.key!r}, which holds {count} (truncated or corrupt file)'
        )
    budget.charge(  # stride-0 or overlapping views can declare far more than their storage
        math.prod(ref.size) * _out_itemsize(ref.dtype),
        f'a tensor of size {list(ref.size)} {ref.dtype}',
    )
    arr = np.frombuffer(raw, arr_dtype, count=count, offset=start)
    view = np.lib.stride_tricks.as_strided(
        arr[ref.offset :], ref.size, [s * item for s in ref.stride]
    )
    return _to_native(view, ref.dtype)


def _materialize(obj, raws: dict, order: str, budget, memo=None):
    """Replace tensor and storage references by arrays; turn dict subclasses into plain dicts.

    ``memo`` (id -> result) keeps the pickle's sharing: an object the pickle references many
    times (memo entries make that cheap: a list of two references to a list of two references
    ... is 2**depth leaves from 4 bytes per level) is converted once, and a tensor referenced
    twice becomes one array.
    """
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, (_TensorRef, _StorageRef)):
        out = memo[id(obj)] = _tensor(obj, raws, order, budget)
    elif isinstance(obj, dict):
        out = memo[id(obj)] = {}
        for k, v in obj.items():
            out[k] = _materialize(v, raws, order, budget, memo)
    elif isinstance(obj, list):
        out = memo[id(obj)] = []
        out.extend(_materialize(v, raws, order, budget, memo) for v in obj)
    elif isinstance(obj, tuple):
        out = memo[id(obj)] = tuple(_materialize(v, raws, order, budget, memo) for v in obj)
    elif isinstance(obj, (_Marker, _NumpyDType)):
        raise _FormatError(f'unsupported object {obj!r} in the pickle')
    else:
        out = obj
    return out


def _read_record(archive, name: str, file_size: int, budget, need=None) -> bytes:
    """The bytes of one zip record (the first ``need`` if given), read with a bounded stream.

    The sizes in the central directory and the record's local header are checked against each
    other and against the file before anything is read: a stored record's data must lie inside
    the file, a deflated one cannot declare more than deflate can expand to, and what a deflated
    record expands to beyond its compressed size is charged to ``budget``. The record is then
    read with one bounded ``read(count)`` (zipfile inflates with ``max_length``), so a stream
    that decompresses to more than its header says is cut at the declared size.
    """
    info = archive.getinfo(name)
    method, packed, size = info.compress_type, info.compress_size, info.file_size
    if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _FormatError(
            f"zip record '{name}' uses compression method {method}; only stored "
            'and deflated records are read'
        )
    archive.fp.seek(info.header_offset)
    local = archive.fp.read(30)
    if len(local) < 30 or local[:4] != b'PK\x03\x04':
        raise _FormatError(f"zip record '{name}' has no local header at byte {info.header_offset}")
    flags, local_method = struct.unpack_from('<HH', local, 6)
    local_packed, local_size, name_len, extra_len = struct.unpack_from('<IIHH', local, 18)
    for what, local_value, value in (('compressed', local_packed, packed), ('', local_size, size)):
        if not flags & 0x08 and local_value not in (value, 0xFFFFFFFF):  # 0x08: sizes follow data
            raise _FormatError(
                f"zip record '{name}': its local header declares {human(local_value)}"
                f'{" " + what if what else ""} but the central directory says {human(value)}'
            )
    if local_method != method:
        raise _FormatError(
            f"zip record '{name}': local header and central directory disagree "
            'on its compression method'
        )
    start = info.header_offset + 30 + name_len + extra_len
    if start + packed > file_size:
        raise ReadLimitError(
            f"zip record '{name}' declares {human(packed)} of data at byte "
            f'{start} but the file has {human(file_size)}'
        )
    if method == zipfile.ZIP_STORED and size != packed:
        raise _FormatError(
            f"stored zip record '{name}' declares {human(size)} uncompressed but "
            f'{human(packed)} stored'
        )
    if method == zipfile.ZIP_DEFLATED and size > _DEFLATE_MAX_RATIO * packed + 1024:
        raise ReadLimitError(
            f"zip record '{name}' declares {human(size)} uncompressed from {human(packed)} "
            f'compressed, more than deflate can expand (at most {_DEFLATE_MAX_RATIO}:1)'
        )
    count = size if need is None else min(size, need)
    if method == zipfile.ZIP_DEFLATED:
        budget.charge(max(count - packed, 0), f"deflated zip record '{name}'")
    with archive.open(info) as stream:
        data = stream.read(count)  # stops at `count` bytes, however far the stream would expand
    if len(data) < count:
        raise _FormatError(f"zip record '{name}' ends after {len(data)} of its {count} bytes")
    return data


def _load_zip(path: str, budget):
    file_size = budget.file_size
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pickles = sorted(n for n in names if n.endswith('/data.pkl') and n.count('/') == 1)
        if len(pickles) != 1:
            raise _FormatError(
                f"zip archive has {len(pickles) or 'no'} '<dir>/data.pkl' records; "
                'not a torch.save checkpoint'
            )
        prefix = pickles[0][: -len('data.pkl')]
        byteorder = 'little'
        if prefix + 'byteorder' in names:
            record = _read_record(archive, prefix + 'byteorder', file_size, budget, need=16)
            byteorder = record.decode('latin1').strip()
        if byteorder not in ('little', 'big'):
            raise _FormatError(f'unknown byteorder record {byteorder!r}')
        data = _read_record(archive, pickles[0], file_size, budget)
        scan_pickle(data, 0, len(data), budget, str_encoding='utf-8')
        unpickler = _Unpickler(io.BytesIO(data), budget)
        obj = unpickler.load()
        del data
        raws = {}
        for key, (dtype, numel) in unpickler.storages.items():
            name = f'{prefix}data/{key}'
            if name not in names:
                raise _FormatError(f"zip archive lacks the storage record '{name}'")
            need, held = numel * _itemsize(dtype), archive.getinfo(name).file_size
            if held < need:
                raise ReadLimitError(
                    f"storage record '{name}' holds {human(held)} but declares "
                    f'{numel} {dtype} elements ({human(need)})'
                )
            raws[key] = _read_record(archive, name, file_size, budget, need=need)
    return _materialize(obj, raws, '<' if byteorder == 'little' else '>', budget)


def _load_legacy(path: str, budget):
    with open(path, 'rb') as f:
        data = f.read()
    stream = io.BytesIO(data)

    def unpickler():
        scan_pickle(data, stream.tell(), len(data), budget, str_encoding='utf-8')
        return _Unpickler(stream, budget)

    if unpickler().load() != _LEGACY_MAGIC:
        raise _FormatError("not a PyTorch checkpoint (a pickle without torch's magic number)")
    if (version := unpickler().load()) != _LEGACY_PROTOCOL:
        raise _FormatError(f'unsupported legacy protocol version {short_repr(version)}')
    sys_info = unpickler().load()
    if isinstance(sys_info, dict) and sys_info.get('little_endian') is False:
        raise _FormatError('legacy checkpoint written on a big-endian machine is unsupported')
    objects = unpickler()
    obj = objects.load()
    keys = unpickler().load()
    if not isinstance(keys, list):
        raise _FormatError('malformed storage key list')
    raws, pos = {}, stream.tell()
    for key in keys:
        if key not in objects.storages:
            raise _FormatError(f'storage key {short_repr(key)} is listed but never used')
        dtype = objects.storages[key][0]
        (numel,) = struct.unpack_from('<q', data, pos) if pos + 8 <= len(data) else (-1,)
        end = pos + 8 + numel * _itemsize(dtype)
        if numel < 0:
            raise _FormatError(f'storage {key!r} is cut short (file truncated at byte {len(data)})')
        if end > len(data):
            raise ReadLimitError(
                f'storage {key!r} declares {numel} {dtype} elements '
                f'({human(numel * _itemsize(dtype))}) at byte {pos + 8} but the file has '
                f'{human(len(data))} (truncated or corrupt file)'
            )
        raws[key], pos = memoryview(data)[pos + 8 : end], end
    return _materialize(obj, raws, '<', budget)


_JSON_BYTES_PER_BYTE = 32  # Python objects json.loads builds per header byte, at most ('[[],[],')


def _load_safetensors(path: str, budget):
    with open(path, 'rb') as f:
        data = f.read()
    (size,) = struct.unpack_from('<Q', data)
    if 8 + size > len(data):
        raise ReadLimitError(
            f'the safetensors header declares {human(size)} but the file has {human(len(data))}'
        )
    budget.charge(_JSON_BYTES_PER_BYTE * size, 'the safetensors header (parsed)')
    header = json.loads(data[8 : 8 + size].decode('utf-8'))
    if not isinstance(header, dict):
        raise _FormatError('safetensors header is not a JSON object')
    body, out, spans = memoryview(data)[8 + size :], {}, []
    for name, info in header.items():
        if name == '__metadata__':
            out[name] = dict(info)
            continue
        dtype = _SAFETENSORS.get(info.get('dtype')) if isinstance(info, dict) else None
        if dtype is None:
            raise _FormatError(
                f'safetensors tensor {name!r} has an unsupported entry {short_repr(info)}'
            )
        shape = _ints(info.get('shape'), 'shape')
        begin, end = _ints(info.get('data_offsets'), 'data_offsets')
        count = math.prod(shape)
        if not begin <= end <= len(body) or end - begin != count * _itemsize(dtype):
            raise _FormatError(
                f'safetensors tensor {name!r}: data_offsets [{begin}, {end}] do not fit '
                f'shape {list(shape)} {dtype} in {len(body)} data bytes'
            )
        spans.append((begin, end, name))
    spans.sort()
    for (_, end_a, name_a), (begin_b, end_b, name_b) in zip(spans, spans[1:]):
        if begin_b < end_a and begin_b < end_b:  # empty tensors overlap nothing
            raise _FormatError(
                f'safetensors tensors {name_a!r} and {name_b!r} overlap in the data '
                f'(their bytes would be read twice)'
            )
    for name, info in header.items():
        if name == '__metadata__':
            continue
        dtype, shape = _SAFETENSORS[info['dtype']], tuple(info['shape'])
        begin, count = info['data_offsets'][0], math.prod(shape)
        budget.charge(count * _out_itemsize(dtype), f'safetensors tensor {name!r}')
        arr_dtype = _raw_dtype(dtype, '<')
        arr = np.frombuffer(body, arr_dtype, count, begin) if count else np.empty(0, arr_dtype)
        out[name] = _to_native(arr.reshape(shape), dtype)
    return out


def _sniff(path: str) -> str:
    try:
        with open(path, 'rb') as f:
            head = f.read(512)
    except OSError as err:
        raise WeightsFileError(f'{path}: cannot read the file ({err.strerror or err})') from None
    if not head:
        raise WeightsFileError(f'{path}: the file is empty')
    if head[:4] in (b'PK\x03\x04', b'PK\x05\x06') or zipfile.is_zipfile(path):
        return 'zip'
    if head[257:262] == b'ustar':
        raise WeightsFileError(
            f'{path}: a tar archive (the pre-0.4 PyTorch tar checkpoint format is '
            'unsupported; re-save it with a recent torch)'
        )
    if len(head) > 8 and head[8:9] == b'{' and head[:1] != b'\x80':
        return 'safetensors'
    return 'legacy'


_LOADERS = types.MappingProxyType(
    {'zip': _load_zip, 'legacy': _load_legacy, 'safetensors': _load_safetensors}
)


def load(path) -> Any:
    """Read a checkpoint into plain containers and NumPy arrays (normally a dict; see the module
    docstring)."""
    path = str(path)
    kind = _sniff(path)
    try:
        return _LOADERS[kind](path, ReadBudget(os.path.getsize(path), _BUDGET_FACTOR))
    except (_FormatError, ReadLimitError) as err:
        raise WeightsFileError(f'{path}: {err}') from None
    except MemoryError:
        raise WeightsFileError(
            f'{path}: not enough memory to read this checkpoint (read as {kind} format)'
        ) from None
    except (
        Exception
    ) as err:  # anything a corrupt file can provoke: pickle, zip, struct, json, EOF...
        what = ' '.join(str(err).split())[:200]
        raise WeightsFileError(
            f'{path}: corrupt, truncated or not a PyTorch checkpoint (read as '
            f'{kind} format; {type(err).__name__}: {what})'
        ) from err


def _holds_array(value) -> bool:
    """Whether an array is reachable from ``value`` (each shared container visited once)."""
    stack, seen = [value], set()
    while stack:
        value = stack.pop()
        if isinstance(value, np.ndarray):
            return True
        if isinstance(value, (dict, list, tuple)) and id(value) not in seen:
            seen.add(id(value))
            stack.extend(value.values() if isinstance(value, dict) else value)
    return False


def state_dict_of(obj, path: str = 'checkpoint') -> dict[str, np.ndarray]:
    """The flat ``{name: array}`` of a loaded checkpoint.

    Descends through ``state_dict`` / ``model`` entries that hold dicts (any nesting), strips a
    leading
    ``module.`` (DataParallel) from each name and drops non-array entries. ``path`` only prefixes
    errors.
    """
    while isinstance(obj, dict):
        inner = next(
            (obj[k] for k in ('state_dict', 'model') if isinstance(obj.get(k), dict)), None
        )
        if inner is None or not _holds_array(inner):
            break
        obj = inner
    if not isinstance(obj, dict):
        raise WeightsFileError(
            f'{path}: the checkpoint holds a {type(obj).__name__}, not a dict of tensors'
        )
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if isinstance(value, np.ndarray):
            name = str(key).removeprefix('module.')
            if name in out:
                raise WeightsFileError(
                    f"{path}: tensor {name!r} appears with and without 'module.'"
                )
            out[name] = value
    if not out:
        raise WeightsFileError(
            f'{path}: no tensors found (top-level keys: {sorted(map(str, obj))[:10]})'
        )
    return out


def split_metadata(obj, path: str = 'checkpoint') -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(state_dict_of(obj), top-level entries holding no array)``, e.g. FlowNet's ``div_flow``."""
    meta = {k: v for k, v in obj.items() if not _holds_array(v)} if isinstance(obj, dict) else {}
    return state_dict_of(obj, path), meta


SUFFIXES = ('.pth', '.pth.tar', '.pt', '.tar', '.safetensors')


def detect(path) -> bool:
    """True for a file with a PyTorch suffix, or a zip archive (what `torch.save` writes)."""
    path = str(path)
    if not os.path.isfile(path):
        return False
    if path.endswith(SUFFIXES):
        return True
    with open(path, 'rb') as f:
        return f.read(4) in (b'PK\x03\x04', b'PK\x05\x06')


if __name__ == '__main__':  # entry point kept for old commands; the tool is icnet_tf.convert
    from icnet_tf.convert import entry_point

    entry_point()
