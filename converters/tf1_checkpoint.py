"""TF1 `tf.train.Saver` checkpoints (as written by the original ICNet-tensorflow) -> weights dicts.

The original `train.py` saves `tf.train.Saver(var_list=tf.global_variables(), max_to_keep=5)`
every `SAVE_PRED_EVERY` steps as `<snapshot dir>/model.ckpt-<step>` (`.index`,
`.data-00000-of-00001`, `.meta`) and updates the `checkpoint` state file next to them. The
published ADE20K model (`model.ckpt-27150`: ICNet_BN, filter_scale 2, 150 classes) is such a
checkpoint. The keys are the graph's variable names:

    TF1 variable name                      ours: params[layer][param]
    <layer>/weights  (conv kernel, HWIO)   <layer>/weights
    <layer>/biases   (merged ICNet, heads) <layer>/biases
    <layer>/gamma                          <layer>/scale      (tf.layers.batch_normalization
    <layer>/beta                           <layer>/offset      momentum=0.95, epsilon=1e-5,
    <layer>/moving_mean                    <layer>/mean        name=<layer>, e.g.
    <layer>/moving_variance                <layer>/variance    conv1_1_3x3_s2_bn)

Every other key is skipped and listed (never silently dropped): optimizer slots
(`<variable>/Momentum` of MomentumOptimizer, `<variable>/Adam`, `Adam_1`, `beta1_power`, ...),
`global_step`, and anything unrecognised. Layer names are already ours (`network.py` of the
original and icnet_tf share the caffe-tensorflow names), so no layer is renamed.

API (a bottom-layer reader: files -> NumPy; imports nothing from icnet_tf/dff_tf):

* `resolve(path) -> prefix`: a prefix `model.ckpt-N`; one of its `.index`, `.meta`,
  `.data-NNNNN-of-NNNNN` files; a `checkpoint` / `checkpoint.txt` state file; or a folder, where
  the state file `checkpoint` (else `checkpoint.txt`) names the checkpoint and, without one, the
  `*.index` with the highest `-<step>` number is taken (equal or missing numbers: the newest file).
  A path in a state file is looked up in the folder first (as written relative to it, then by its
  last component: the folder may have been moved, and train.py writes paths relative to the
  working directory, `./snapshots/model.ckpt-N`), then as written if it is absolute.
  A folder's checkpoint must be intact (`damage`): when the one named is damaged (a truncated
  index or data file, a missing index), or the state file is corrupt or names a checkpoint that
  is not there, the newest intact one is taken instead, with a `converters.errors.Note` warning
  (printed by the command-line tools as one `note:` line).
* `newest_intact(folder, follow_state=True, verify=None) -> FolderCheckpoints`: that choice,
  read-only, with what was passed over and why (training repairs its folder from it:
  `icnet_tf.training.Trainer.restore`); `folder_prefixes(folder)`, `read_state_file(path)`.
* `detect(path) -> bool`: the checkpoint's index holds TF1 Saver names, i.e. at least one
  `<layer>/<param>` key of the table above and no trace of a TF2 object-based checkpoint (no
  `_CHECKPOINTABLE_OBJECT_GRAPH` key, no `.ATTRIBUTES/` in a key). Reads the `.index` only.
* `read(path, key_map=None) -> (weights, skipped)`: `{layer: {param: float32 ndarray}}` and the
  sorted list of skipped keys.

Hostile or damaged files. The index is a TensorFlow table (LevelDB layout: blocks of prefix-
compressed key/value entries, an index block, a 48-byte footer) mapping each key to a
`BundleEntryProto` (dtype, shape, data shard, offset, size, crc32c). TensorFlow's own reader
aborts the whole process on some declared shapes (e.g. a shape whose element count overflows
int64) and allocates a tensor of the declared shape before reading its bytes. So the index is
parsed here first, in Python, and every entry is checked before TensorFlow sees the file: a
known dtype, at most 254 non-negative dimensions, `size == elements * itemsize` for fixed-size
dtypes, and `offset + size` within its data file (so no tensor can be bigger than the bytes on
disk); partitioned variables (`slices`) are refused. Only then are the parameter tensors read,
one by one, with `tf.train.load_checkpoint(prefix).get_tensor(key)`, which also verifies each
tensor's crc32c. Any failure is a one-line `WeightsFileError` starting with the path.
"""

import os
import re
import struct
import warnings
from dataclasses import dataclass

import numpy as np

from converters.errors import Note, WeightsFileError

STATE_FILES = ('checkpoint', 'checkpoint.txt')

# TF1 Saver parameter names -> icnet_tf (caffe-tensorflow) parameter names.
PARAM_NAMES = {
    'weights': 'weights',
    'biases': 'biases',
    'gamma': 'scale',
    'beta': 'offset',
    'moving_mean': 'mean',
    'moving_variance': 'variance',
}
OBJECT_GRAPH_KEY = '_CHECKPOINTABLE_OBJECT_GRAPH'  # present in every TF2 tf.train.Checkpoint

# Bounds on the index file itself (a real one is a few kB per hundred variables; ICNet_BN with
# Momentum slots: 516 entries, about 40 kB). They bound the memory a hostile index can claim.
MAX_INDEX_BYTES = 32 << 20
MAX_ENTRIES = 200_000
MAX_KEY_BYTES = 64 << 20  # sum of the decoded key lengths (keys are prefix-compressed)
MAX_DIMS = 254  # TensorShape::MaxDimensions()
MAX_SHARDS = 100_000

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_BYTES = 48  # two block handles padded to 40 bytes + 8-byte magic
_BLOCK_TRAILER_BYTES = 5  # compression type (1 byte) + masked crc32c (4 bytes)
_DATA_SUFFIX = re.compile(r'\.data-\d{5}-of-\d{5}$')
_STEP = re.compile(r'-(\d+)$')
# a checkpoint's own files: <prefix>.index, <prefix>.data-NNNNN-of-NNNNN
_CHECKPOINT_FILE = re.compile(r'^(.+?)(?:\.index|\.data-\d{5}-of-\d{5})$')
MAX_STATE_BYTES = 1 << 20  # a `checkpoint` state file: a few hundred bytes per checkpoint

# tensorflow/core/framework/types.proto: DataType -> bytes per element (None: variable size).
_ITEMSIZE = {
    1: 4,  # float32
    2: 8,  # float64
    3: 4,  # int32
    4: 1,  # uint8
    5: 2,  # int16
    6: 1,  # int8
    7: None,  # string
    8: 8,  # complex64
    9: 8,  # int64
    10: 1,  # bool
    11: 1,  # qint8
    12: 1,  # quint8
    13: 4,  # qint32
    14: 2,  # bfloat16
    15: 2,  # qint16
    16: 2,  # quint16
    17: 2,  # uint16
    18: 16,  # complex128
    19: 2,  # float16
    20: None,  # resource
    21: None,  # variant
    22: 4,  # uint32
    23: 8,  # uint64
}
_FLOAT_DTYPES = {1: 'float32', 2: 'float64', 14: 'bfloat16', 19: 'float16'}


class _Corrupt(Exception):
    """The index does not parse (reported as a WeightsFileError with the file name)."""


# ---------------------------------------------------------------------------------- names
def saver_key(name):
    """The default key map: a TF1 variable name -> `(layer, param)` in our names, or None.

    `<layer>/<tf1 param>` with exactly one '/' and a parameter of `PARAM_NAMES`; everything
    else (optimizer slots `<layer>/<param>/Momentum`, `global_step`, ...) is None (skipped).
    """
    parts = name.split('/')
    if len(parts) == 2 and parts[0] and parts[1] in PARAM_NAMES:
        return parts[0], PARAM_NAMES[parts[1]]
    return None


def _is_tf2_key(name):
    return name == OBJECT_GRAPH_KEY or '.ATTRIBUTES/' in name


# ------------------------------------------------------------------------------- resolve
def resolve(path):
    """A TF1 checkpoint prefix from a prefix, one of its files, a state file or a folder.

    A folder gives its newest intact checkpoint (`newest_intact`; a fallback is a `Note`
    warning). Raises `WeightsFileError` (one line naming `path`) when no checkpoint is found.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return resolve_folder(path)
    if os.path.basename(path) in STATE_FILES and os.path.isfile(path):
        return _from_state_file(path)
    prefix = path
    for suffix in ('.index', '.meta'):
        if path.endswith(suffix):
            prefix = path[: -len(suffix)]
            break
    else:
        m = _DATA_SUFFIX.search(path)
        if m:
            prefix = path[: m.start()]
    if os.path.isfile(prefix + '.index'):
        return prefix
    if os.path.exists(path):
        raise WeightsFileError(
            f'{path}: not a TF checkpoint (no {os.path.basename(prefix)}.index next to it)'
        )
    raise WeightsFileError(f'{path}: no such file, folder or checkpoint prefix')


def read_state_file(state):
    """The `CheckpointState` proto of a `checkpoint` state file, parsed as TensorFlow parses it
    (`tf.train.get_checkpoint_state`); a one-line `WeightsFileError` naming the file when it is
    unreadable, too large, not text, does not parse or names no checkpoint."""
    from google.protobuf import text_format
    from tensorflow.python.training.checkpoint_state_pb2 import CheckpointState

    try:
        size = os.path.getsize(state)
        if size > MAX_STATE_BYTES:
            raise WeightsFileError(
                f'{state}: {size} bytes, implausibly large for a checkpoint state file'
            )
        with open(state, 'rb') as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except OSError as e:
        raise WeightsFileError(f'{state}: unreadable checkpoint state file ({e})') from None
    try:
        proto = text_format.Merge(data.decode('utf-8'), CheckpointState())
    except (text_format.ParseError, UnicodeDecodeError) as e:
        reason = ' '.join(str(e).split())[:120]
        raise WeightsFileError(f'{state}: corrupt checkpoint state file ({reason})') from None
    if not proto.model_checkpoint_path:
        raise WeightsFileError(f'{state}: not a checkpoint state file (no model_checkpoint_path)')
    return proto


def _named_candidates(folder, named):
    """Where a path written in a state file may be: relative to its folder, by its last
    component in its folder (the folder was moved; train.py writes paths relative to its working
    directory), then as written if absolute."""
    candidates = []
    if not os.path.isabs(named):
        candidates.append(os.path.join(folder, named))
    candidates.append(os.path.join(folder, re.split(r'[\\/]', named)[-1]))
    if os.path.isabs(named):
        candidates.append(named)
    return candidates


def _from_state_file(state):
    """The checkpoint a `checkpoint` state file given by name names (no fallback)."""
    folder = os.path.dirname(state) or '.'
    named = read_state_file(state).model_checkpoint_path
    for prefix in _named_candidates(folder, named):
        if os.path.isfile(prefix + '.index'):
            return prefix
    raise WeightsFileError(
        f'{state}: names checkpoint {named!r}, which is not in {folder} '
        f'(give one of its checkpoints instead, e.g. {os.path.join(folder, "model.ckpt-N")})'
    )


# -------------------------------------------------------------- a folder of checkpoints
def folder_prefixes(folder):
    """Every checkpoint prefix in `folder`, from its `.index` and `.data-NNNNN-of-NNNNN` files
    (a checkpoint that lost its index is listed too), newest first: the highest `-<step>`,
    then the most recently modified file, then the name."""
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise WeightsFileError(f'{folder}: unreadable folder ({e})') from None
    modified = {}
    for name in names:
        m = _CHECKPOINT_FILE.match(name)
        path = os.path.join(folder, name)
        if not m or not os.path.isfile(path):
            continue
        try:
            mtime = os.path.getmtime(path)
        except OSError:  # gone meanwhile
            continue
        modified[m.group(1)] = max(mtime, modified.get(m.group(1), mtime))

    def rank(prefix):
        m = _STEP.search(prefix)
        return (int(m.group(1)) if m else -1, modified[prefix], prefix)

    return [os.path.join(folder, p) for p in sorted(modified, key=rank, reverse=True)]


@dataclass(frozen=True)
class FolderCheckpoints:
    """What `newest_intact` found in a folder of checkpoints."""

    folder: str
    prefix: str | None  # the checkpoint to use; None when no checkpoint is intact
    damaged: tuple  # ((prefix, one-line reason naming the file), ...) passed over, newest first
    prefixes: tuple  # every checkpoint prefix in the folder, newest first
    state_file: str | None  # the state file (`checkpoint`, else `checkpoint.txt`), if any
    state: object  # its CheckpointState proto, if it parsed
    state_problem: str | None  # why the state file was not followed (one line), else None

    def note(self):
        """One line saying which checkpoint is used instead of the state file's, and why;
        None when nothing was passed over."""
        if self.prefix is None:
            return None
        parts = ([self.state_problem] if self.state_problem else []) + [
            reason for _, reason in self.damaged
        ]
        if not parts:
            return None
        return f'{"; ".join(parts)}: using {self.prefix}, the newest intact checkpoint'

    def error(self):
        """The one-line `WeightsFileError` when no checkpoint is intact."""
        if not self.prefixes:
            return WeightsFileError(
                f'{self.folder}: folder holds no TF checkpoint (no *.index file'
                f'{", and its state file names none of its files" if self.state_file else ""})'
            )
        more = f' (and {len(self.damaged) - 1} more damaged)' if len(self.damaged) > 1 else ''
        return WeightsFileError(f'{self.folder}: no intact checkpoint: {self.damaged[0][1]}{more}')


def damage(prefix):
    """None if the checkpoint `prefix` is intact as far as its files tell (`checked_index`:
    the index parses and every tensor lies within its data file), else one line naming the
    damaged file."""
    if not os.path.isfile(prefix + '.index'):
        return f'{prefix}.index: missing (the checkpoint has only data files)'
    try:
        checked_index(prefix)
    except WeightsFileError as e:
        return str(e)
    return None


def newest_intact(folder, *, follow_state=True, verify=None):
    """The newest intact checkpoint of `folder` -> `FolderCheckpoints` (never raises for a
    damaged checkpoint; `prefix` None when none is intact).

    Candidates: with `follow_state` (tools reading a folder), the checkpoint the state file
    names and then the older ones, as TensorFlow's `latest_checkpoint` would, but falling back
    when it is damaged; when the state file is missing, corrupt or names a checkpoint that is
    not there, every checkpoint of the folder, newest first. Without `follow_state`
    (training, which resumes its own folder): every checkpoint, newest first, and a state file
    that is missing or names an older one is a problem to repair. A candidate is intact when
    `damage()` finds nothing and `verify(prefix)` (optional: e.g. a restore) does not raise
    `WeightsFileError`. Reads only; nothing in the folder is changed.
    """
    folder = os.fspath(folder)
    prefixes = folder_prefixes(folder)
    state_file = next(
        (p for p in (os.path.join(folder, n) for n in STATE_FILES) if os.path.isfile(p)), None
    )
    state = named = problem = None
    if state_file:
        try:
            state = read_state_file(state_file)
        except WeightsFileError as e:
            problem = str(e)
        else:
            written = state.model_checkpoint_path
            candidates = _named_candidates(folder, written)
            named = next((p for p in candidates if p in prefixes), None)
            if named is None and os.path.isabs(written) and os.path.isfile(written + '.index'):
                named = written  # a checkpoint elsewhere, named by its absolute path
                prefixes.insert(0, written)
            if named is None:
                problem = f'{state_file}: names checkpoint {written!r}, which is not in {folder}'
    elif prefixes and not follow_state:
        problem = f'{os.path.join(folder, STATE_FILES[0])}: missing'
    order = prefixes[prefixes.index(named) :] if follow_state and named else prefixes
    chosen, damaged = None, []
    for prefix in order:
        reason = damage(prefix)
        if reason is None and verify is not None:
            try:
                verify(prefix)
            except WeightsFileError as e:
                reason = str(e)
        if reason is None:
            chosen = prefix
            break
        damaged.append((prefix, reason))
    if chosen and named and not follow_state and prefixes.index(chosen) < prefixes.index(named):
        problem = (
            f'{state_file}: names {os.path.basename(named)}, older than the intact '
            f'{os.path.basename(chosen)}'
        )
    return FolderCheckpoints(
        folder, chosen, tuple(damaged), tuple(prefixes), state_file, state, problem
    )


def resolve_folder(folder):
    """The newest intact checkpoint of a folder (`newest_intact`, following its state file);
    a fallback is a `Note` warning; a one-line `WeightsFileError` naming the folder when none
    is intact."""
    found = newest_intact(folder)
    if found.prefix is None:
        raise found.error()
    note = found.note()
    if note:
        warnings.warn(note, Note, stacklevel=2)
    return found.prefix


# --------------------------------------------------------------------- index (table) parsing
def _varint(buf, pos, end):
    """A LEB128 varint from `buf[pos:end]` -> (value, next position)."""
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Corrupt('bad varint')
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _block_handle(buf, pos, end):
    offset, pos = _varint(buf, pos, end)
    size, pos = _varint(buf, pos, end)
    return (offset, size), pos


def _block(buf, handle):
    """(start, end) of a block's contents; only uncompressed blocks (all TF writes)."""
    offset, size = handle
    if offset + size + _BLOCK_TRAILER_BYTES > len(buf) - _FOOTER_BYTES:
        raise _Corrupt('block outside the file')
    if buf[offset + size] != 0:
        raise _Corrupt('compressed table block (TensorFlow writes checkpoint indexes uncompressed)')
    return offset, offset + size


def _block_entries(buf, start, end, budget):
    """(key, value) of one block: shared/non-shared/value-length varints, key delta, value."""
    if end - start < 4:
        raise _Corrupt('block too short')
    (n_restarts,) = struct.unpack_from('<I', buf, end - 4)
    limit = end - 4 - 4 * n_restarts
    if limit < start:
        raise _Corrupt('bad restart array')
    pos, key = start, b''
    while pos < limit:
        shared, pos = _varint(buf, pos, limit)
        non_shared, pos = _varint(buf, pos, limit)
        value_len, pos = _varint(buf, pos, limit)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise _Corrupt('bad block entry')
        key = key[:shared] + bytes(buf[pos : pos + non_shared])
        pos += non_shared
        budget[0] -= len(key) + value_len
        budget[1] -= 1
        if budget[0] < 0 or budget[1] < 0:
            raise _Corrupt(f'implausibly many or long keys (more than {MAX_ENTRIES} entries)')
        yield key, bytes(buf[pos : pos + value_len])
        pos += value_len


def _table(buf):
    """All (key, value) pairs of a TF table (lib/io/table: footer -> index block -> blocks)."""
    if len(buf) < _FOOTER_BYTES:
        raise _Corrupt('too short for a checkpoint index')
    footer = len(buf) - _FOOTER_BYTES
    lo, hi = struct.unpack_from('<II', buf, len(buf) - 8)
    if (hi << 32) | lo != _TABLE_MAGIC:
        raise _Corrupt('not a TensorFlow table (bad magic number)')
    _, pos = _block_handle(buf, footer, len(buf) - 8)  # metaindex (unused by TF)
    index_handle, _ = _block_handle(buf, pos, len(buf) - 8)
    budget = [MAX_KEY_BYTES, MAX_ENTRIES]
    start, end = _block(buf, index_handle)
    for _, value in list(_block_entries(buf, start, end, budget)):
        handle, _ = _block_handle(value, 0, len(value))
        yield from _block_entries(buf, *_block(buf, handle), budget)


def _read_index(prefix):
    """`{key: BundleEntryProto}` and the BundleHeaderProto of `<prefix>.index`, unvalidated."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import tensor_bundle_pb2

    index = prefix + '.index'
    try:
        size = os.path.getsize(index)
        if size > MAX_INDEX_BYTES:
            raise WeightsFileError(
                f'{index}: {size} bytes, implausibly large for a checkpoint index '
                f'(limit {MAX_INDEX_BYTES})'
            )
        with open(index, 'rb') as f:
            buf = f.read()
    except OSError as e:
        raise WeightsFileError(f'{index}: unreadable checkpoint index ({e})') from None
    header, entries = None, {}
    try:
        for key, value in _table(memoryview(buf)):
            if key == b'':
                header = tensor_bundle_pb2.BundleHeaderProto.FromString(value)
            else:
                entries[key.decode('utf-8')] = tensor_bundle_pb2.BundleEntryProto.FromString(value)
    except (_Corrupt, DecodeError, UnicodeDecodeError, struct.error) as e:
        raise WeightsFileError(
            f'{index}: not a readable TF checkpoint index (truncated or corrupt?): {e}'
        ) from None
    if header is None:
        raise WeightsFileError(f'{index}: not a TF checkpoint index (no bundle header)')
    return header, entries


def index_keys(prefix):
    """The tensor names in `<prefix>.index`, read in Python (unvalidated; nothing allocated)."""
    return set(_read_index(prefix)[1])


def checked_index(prefix):
    """`{key: BundleEntryProto}` of `<prefix>.index` after every entry was checked against its
    data file (dtype, shape, size, bounds), in Python: call it before any TensorFlow reader
    opens a checkpoint, TF1 or TF2 (TF's own reader aborts the process on some declared
    shapes). One-line `WeightsFileError` naming the file otherwise."""
    header, entries = _read_index(prefix)
    _validate(prefix, header, entries)
    return entries


def _validate(prefix, header, entries):
    """Check every entry against its data file before TensorFlow reads the index (see top)."""
    index = prefix + '.index'
    if not 1 <= header.num_shards <= MAX_SHARDS:
        raise WeightsFileError(f'{index}: bad number of data shards {header.num_shards}')
    shard_sizes = {}
    for key, entry in entries.items():
        where = f'{index}: tensor {key!r}'
        if entry.slices:
            raise WeightsFileError(f'{where} is a partitioned variable (not supported)')
        if entry.dtype not in _ITEMSIZE:
            raise WeightsFileError(f'{where} has an unknown dtype ({entry.dtype})')
        dims = [d.size for d in entry.shape.dim]
        if entry.shape.unknown_rank or len(dims) > MAX_DIMS or any(d < 0 for d in dims):
            raise WeightsFileError(f'{where} declares an invalid shape {dims}')
        elements = int(np.prod(dims, dtype=object)) if dims else 1
        itemsize = _ITEMSIZE[entry.dtype]
        if itemsize is None:  # strings etc.: at least one length byte per element
            if elements > entry.size:
                raise WeightsFileError(f'{where} declares shape {dims} for {entry.size} bytes')
        elif elements * itemsize != entry.size:
            raise WeightsFileError(
                f'{where} declares shape {dims} ({elements * itemsize} bytes) '
                f'but stores {entry.size} bytes'
            )
        if entry.shard_id >= header.num_shards:
            raise WeightsFileError(f'{where} lives in a missing data shard {entry.shard_id}')
        if entry.shard_id not in shard_sizes:
            data = f'{prefix}.data-{entry.shard_id:05d}-of-{header.num_shards:05d}'
            try:
                shard_sizes[entry.shard_id] = (data, os.path.getsize(data))
            except OSError:
                raise WeightsFileError(f'{data}: checkpoint data file is missing') from None
        data, data_size = shard_sizes[entry.shard_id]
        if entry.offset + entry.size > data_size:
            raise WeightsFileError(
                f"{data}: truncated or not this checkpoint's data ({data_size} bytes; "
                f'tensor {key!r} needs bytes {entry.offset}..{entry.offset + entry.size})'
            )


# ------------------------------------------------------------------------- detect / read
def detect(path):
    """True if `path` resolves to a TF1 Saver checkpoint with network parameter names.

    Reads only the `.index`. A TF2 object-based checkpoint (`tf.train.Checkpoint`, e.g. the ones
    this project writes) is not detected, nor is anything that is not a checkpoint.
    """
    try:
        _, entries = _read_index(resolve(path))
    except (WeightsFileError, OSError):
        return False
    if any(_is_tf2_key(key) for key in entries):
        return False
    return any(saver_key(key) is not None for key in entries)


def read(path, key_map=None):
    """Read a TF1 Saver checkpoint -> `(weights, skipped)`.

    `weights`: `{layer: {param: float32 ndarray}}` in icnet_tf names; `skipped`: the sorted
    source keys that are not network parameters (optimizer slots, `global_step`, anything
    `key_map` does not recognise). `key_map(name) -> (layer, param) | None` defaults to
    `saver_key`. Tensors are read one at a time after the index has been validated.
    """
    import tensorflow as tf

    key_map = key_map or saver_key
    prefix = resolve(path)
    header, entries = _read_index(prefix)
    if any(_is_tf2_key(key) for key in entries):
        raise WeightsFileError(
            f'{prefix}: a TF2 object-based checkpoint (tf.train.Checkpoint), '
            'not a TF1 tf.train.Saver checkpoint'
        )
    _validate(prefix, header, entries)
    weights, skipped = {}, []
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in sorted(entries):
            target = key_map(key)
            if target is None:
                skipped.append(key)
                continue
            entry = entries[key]
            if entry.dtype not in _FLOAT_DTYPES:
                raise WeightsFileError(
                    f'{prefix}: tensor {key!r} has dtype {entry.dtype}, expected a float tensor'
                )
            layer, param = target
            if param in weights.get(layer, {}):
                raise WeightsFileError(f'{prefix}: two tensors map to {layer}/{param}')
            value = np.asarray(reader.get_tensor(key), dtype=np.float32)
            if value.shape != tuple(d.size for d in entry.shape.dim):
                raise WeightsFileError(f'{prefix}: tensor {key!r} does not have its declared shape')
            weights.setdefault(layer, {})[param] = value
    except (tf.errors.OpError, ValueError, TypeError) as e:
        if isinstance(e, WeightsFileError):
            raise
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise WeightsFileError(
            f'{prefix}: unreadable TF checkpoint (truncated or corrupt?): {lines[0]}'
        ) from None
    if not weights:
        raise WeightsFileError(
            f'{prefix}: TF1 checkpoint holds no network parameters '
            f'(no <layer>/weights, biases, gamma, beta, moving_mean or moving_variance among '
            f'{len(entries)} tensors)'
        )
    return weights, sorted(skipped)
