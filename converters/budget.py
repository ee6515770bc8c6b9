"""Bounded reading of weights files: a memory budget per file and a pickle pre-scan.

Every reader in `converters/` keeps what it allocates proportional to the file it reads, so a
file of a few hundred bytes cannot make it allocate gigabytes, whatever it declares.

The budget
----------
Besides the bytes of the file itself (read once), a reader allocates at most
``factor x the file size + MARGIN`` (MARGIN = 16 MB) for everything it builds: arrays, Python
objects a pickle creates, copies made by the few callables a restricted unpickler allows, the
bytes a deflate-compressed zip record expands to beyond its compressed size. The factor is 2 for
caffe-tensorflow `.npy` files and 4 for PyTorch checkpoints (see below). Each allocation is charged
to a `ReadBudget` BEFORE it is made; one that does not fit raises `ReadLimitError`, which the
readers turn into a one-line `WeightsFileError` starting with the path.

Why these factors: a float32 checkpoint needs 1 x (each stored byte backs one output byte). A
caffe-tensorflow `.npy` holds its array bytes inside the pickle, so the pickled bytes (1 x) and
the arrays built from them (1 x) coexist: 2 x. A PyTorch checkpoint's tensors are copied out of
their storages, bfloat16 widened to float32 (2 x), and several tensors may view one storage (a
weight, its transpose and a strided slice of it need 2.5 x): 4 x. Hostile files stay bounded
all the same: a 500-byte file may make a reader allocate 16 MB, not the 40 GB it declares.
MARGIN covers the per-object overhead of pickles of small files and small shared views.

The pickle pre-scan
-------------------
CPython's C unpickler trusts the lengths it reads: a BINBYTES8 op declaring 4 GB allocates 4 GB
before reading, and a LONG_BINPUT op with index 2**28 grows the memo to 2**29 pointers (4 GB,
written to) from an 11-byte pickle. `scan_pickle` walks the opcodes first without building
anything: every length must fit in the bytes that follow, memo indices must be sequential (as
every pickler writes them), and the Python objects the pickle would build (estimated per op,
upper bounds for 64-bit CPython 3.11) are charged to the budget. It also bounds CPU: CPython does
not cache tuple hashes, so a tuple made of memo references to tuples of memo references (a few
bytes per level) used as a dict key or set element would take 2**depth steps to hash; the scan
counts the nodes of every tuple and refuses one of more than MAX_HASHED_NODES used that way.
Values taken from a pickle are shown in messages with `short_repr`, which is bounded for the same
reason.
"""

import pickletools
import reprlib

MARGIN = 16 * 10**6
MAX_HASHED_NODES = 10**5  # nodes of a tuple a pickle may use as a dict key or set element
_FLAT = (str, bytes, int, float, bool, type(None))


class ReadLimitError(Exception):
    """A file declares more than its bytes can back; the message does not name the file."""


def human(n):
    """`n` bytes for a message: '312 bytes', '4.0 GB' (decimal units)."""
    if n < 1000:
        return f'{n} bytes'
    if n >= 10**21:
        return f'about 2^{n.bit_length() - 1} bytes'
    value, units = n / 1000, ['kB', 'MB', 'GB', 'TB', 'PB', 'EB']
    while value >= 999.95:
        value, units = value / 1000, units[1:]
    return f'{value:.1f} {units[0]}'


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40
_REPR.maxtuple = _REPR.maxlist = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 4


def short_repr(value, limit=80):
    """repr() of a value from a file, bounded in time and length (reprlib, depth 3, 4 items)."""
    return _REPR.repr(value)[:limit]


def flat_pairs(arg):
    """Whether `arg`, an argument a pickle passes to dict() or OrderedDict(), is a dict or a
    list/tuple of (key, value) pairs with plain keys (str, bytes, numbers, None), so building
    the dict hashes nothing deep."""
    if isinstance(arg, dict):
        return True
    return isinstance(arg, (list, tuple)) and all(
        isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], _FLAT) for p in arg
    )


class ReadBudget:
    """What a reader may still allocate for one file: `factor` x its size + MARGIN in total."""

    def __init__(self, file_size, factor=2):
        self.file_size, self.factor = file_size, factor
        self.limit = factor * file_size + MARGIN
        self.used = 0

    def charge(self, nbytes, what):
        """Record an allocation of `nbytes` for `what` (e.g. 'a [3, 4] float32 tensor') before
        it is made; raise ReadLimitError if it does not fit."""
        if self.used + nbytes <= self.limit:
            self.used += nbytes
            return
        if nbytes > self.limit:
            raise ReadLimitError(
                f'{what} declares {human(nbytes)} but the file has {human(self.file_size)}'
            )
        raise ReadLimitError(
            f'{what} declares {human(nbytes)} after {human(self.used)} already built, more than '
            f'a {human(self.file_size)} file can back (at most {self.factor} x its size + '
            f'{human(MARGIN)})'
        )


# ------------------------------------------------------------------------------ pickle pre-scan
_TAKEN = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}
# Bytes of the object an op creates (64-bit CPython 3.11, sys.getsizeof, rounded up); the 8-byte
# stack or container slot of every pushed object is added separately. Ops not listed: 0.
_OBJECT = {
    'INT': 32,
    'BININT': 32,
    'BININT2': 32,
    'LONG': 32,
    'LONG1': 32,
    'LONG4': 32,
    'FLOAT': 24,
    'BINFLOAT': 24,
    'EMPTY_LIST': 56,
    'LIST': 56,
    'EMPTY_DICT': 64,
    'DICT': 64,
    'EMPTY_SET': 216,
    'FROZENSET': 216,
    'TUPLE': 40,
    'TUPLE1': 48,
    'TUPLE2': 56,
    'TUPLE3': 64,
    'STRING': 49,
    'BINSTRING': 49,
    'SHORT_BINSTRING': 49,
    'BINBYTES': 33,
    'SHORT_BINBYTES': 33,
    'BINBYTES8': 33,
    'BYTEARRAY8': 57,
    'UNICODE': 80,
    'BINUNICODE': 80,
    'SHORT_BINUNICODE': 80,
    'BINUNICODE8': 80,
    # results of calls and lookups; copies the allowed callables make are charged by them
    'GLOBAL': 64,
    'STACK_GLOBAL': 64,
    'SETITEM': 72,
    'INST': 64,
    'OBJ': 64,
    'REDUCE': 64,
    'NEWOBJ': 64,
    'NEWOBJ_EX': 64,
    'PERSID': 64,
    'BINPERSID': 64,
    'EXT1': 64,
    'EXT2': 64,
    'EXT4': 64,
}
_PER_ITEM = {'SETITEMS': 36, 'DICT': 36, 'ADDITEMS': 64, 'FROZENSET': 64, 'APPENDS': 1}
_SLOT = 8  # a pointer on the stack or in a container
_MEMO_SLOT = 16  # the C unpickler's memo array doubles when it grows
_STR_OPS = {'STRING', 'BINSTRING', 'SHORT_BINSTRING'}
_UNICODE_OPS = {'BINUNICODE', 'SHORT_BINUNICODE', 'BINUNICODE8'}
_PUT_OPS = {'PUT', 'BINPUT', 'LONG_BINPUT'}
_GET_OPS = {'GET', 'BINGET', 'LONG_BINGET'}
_MEMO_OPS = _PUT_OPS | _GET_OPS
_TUPLE_OPS = {'TUPLE', 'TUPLE1', 'TUPLE2', 'TUPLE3', 'EMPTY_TUPLE'}
_HASHING_OPS = {'SETITEM': slice(-2, -1), 'SETITEMS': slice(0, None, 2), 'DICT': slice(0, None, 2),
                'ADDITEMS': slice(None), 'FROZENSET': slice(None)}  # fmt: skip
_BELOW_UCS2 = bytes(range(0xC4))  # UTF-8 bytes that never start a character above U+00FF
_BELOW_UCS4 = bytes(range(0xF0))  # ... above U+FFFF


def _op_table():
    table = {}
    for op in pickletools.opcodes:
        before, after = op.stack_before, op.stack_after
        mark = before.index(pickletools.markobject) if pickletools.markobject in before else None
        table[op.code.encode('latin1')[0]] = (op.name, op.arg, len(before), len(after), mark)
    return table


_OPS = _op_table()


def scan_pickle(buf, start, end, budget, str_encoding='latin1'):
    """Check the pickle at `buf[start:end]` (bytes, bytearray or mmap) before unpickling it.

    Returns the position just after its STOP op. Raises ReadLimitError when a length or memo
    index is larger than the data can back or when the objects it would build do not fit in
    `budget`, and ValueError when it is not a well-formed pickle. `str_encoding` is the
    Unpickler's `encoding` for Python 2 `str` ops: 'latin1' and 'bytes' build 1 byte per byte,
    anything else is taken as up to 4 bytes per byte.
    """
    str_width = 1 if str_encoding in ('latin1', 'latin-1', 'bytes') else 4
    pos, marks, puts, cost = start, [], 0, 0
    stack, memo = [], {}  # node counts (1 for anything but a tuple) of the stack and the memo
    while True:
        if pos >= end:
            raise ValueError('pickle data was truncated (no STOP op)')
        op_pos = pos
        entry = _OPS.get(buf[pos])
        if entry is None:
            raise ValueError(f'invalid pickle op {bytes([buf[pos]])!r} at byte {pos}')
        name, arg, pops, pushes, mark_at = entry
        pos += 1
        text, index = 0, None  # payload bytes of the argument, memo index of a PUT or GET
        if arg is not None and arg.n >= 0:  # fixed-size argument
            if pos + arg.n > end:
                raise ValueError(f'pickle data was truncated at byte {end}')
            value = int.from_bytes(buf[pos : pos + arg.n], 'little')
            pos += arg.n
            if name == 'FRAME' and pos + value > end:
                raise ReadLimitError(
                    f'the pickle declares a {human(value)} frame at byte {op_pos} but only '
                    f'{human(end - pos)} follow'
                )
            index = value if name in _MEMO_OPS else None
        elif arg is not None and arg.n == pickletools.UP_TO_NEWLINE:  # one or two text lines
            for _ in range(2 if arg is pickletools.stringnl_noescape_pair else 1):
                newline = buf.find(b'\n', pos, end)
                if newline < 0:
                    raise ValueError(f'pickle data was truncated at byte {end}')
                if name in ('PUT', 'GET'):
                    index = int(bytes(buf[pos:newline]))
                text += newline - pos
                pos = newline + 1
        elif arg is not None:  # a length, then that many bytes
            size, signed = _TAKEN[arg.n]
            if pos + size > end:
                raise ValueError(f'pickle data was truncated at byte {end}')
            text = int.from_bytes(buf[pos : pos + size], 'little', signed=signed)
            pos += size
            if text < 0 or pos + text > end:
                raise ReadLimitError(
                    f'the pickle declares a {human(max(text, 0))} {name} value at byte '
                    f'{op_pos} but only {human(end - pos)} follow'
                )
            pos += text
        # bytes the value takes once built: str characters are 1, 2 or 4 bytes wide
        built = text
        if name in _UNICODE_OPS and text:  # CPython stores 1, 2 or 4 bytes per character
            wide = buf[pos - text : pos].translate(None, _BELOW_UCS2)  # a copy of the payload
            built *= (4 if wide.translate(None, _BELOW_UCS4) else 2) if wide else 1
        elif name == 'UNICODE':
            built *= 4
        elif name in _STR_OPS:
            built *= str_width
        # Stack effect, as pickletools.dis computes it. The stack and the memo hold node counts:
        # 1 + the items' counts for a tuple (saturating), 1 for anything else (a list or dict
        # stops a hash at once; the other objects these unpicklers build hash in O(1)).
        sliced = None  # the items above a MARK the op consumes
        if name == 'MARK':
            marks.append(len(stack))
            popped = []
        elif mark_at is not None or (name == 'POP' and marks and marks[-1] == len(stack)):
            if not marks or marks[-1] < (mark_at or 0):
                raise ValueError(f'pickle op {name} at byte {op_pos} has no MARK')
            base = marks.pop()
            sliced, popped = stack[base:], stack[base - (mark_at or 0) : base]
            del stack[base - (mark_at or 0) :]
        else:
            if len(stack) < pops:
                raise ValueError(f'pickle op {name} at byte {op_pos} underflows the stack')
            popped = stack[len(stack) - pops :]
            del stack[len(stack) - pops :]
        hashed = _HASHING_OPS.get(name)
        if hashed and max((sliced if sliced is not None else popped)[hashed], default=0) > (
            MAX_HASHED_NODES
        ):
            raise ReadLimitError(
                f'the pickle uses a tuple of more than {MAX_HASHED_NODES} nodes (memo references '
                f'to memo references) as a dict key or set element at byte {op_pos}; hashing it '
                'could take 2**depth steps'
            )
        if name in _PUT_OPS or name == 'MEMOIZE':
            index = puts if index is None else index
            if index > puts:
                raise ReadLimitError(
                    f'the pickle stores memo entry {index} at byte {op_pos} after only {puts} '
                    f'entries (an index that large makes the unpickler allocate '
                    f'{human(_MEMO_SLOT * index)})'
                )
            top = popped if name == 'MEMOIZE' else stack[-1:]
            if not top:
                raise ValueError(f'pickle op {name} at byte {op_pos} underflows the stack')
            memo[index] = top[-1]
            puts += index == puts
            cost += _MEMO_SLOT
        if name in _TUPLE_OPS:
            stack.append(
                min(1 + sum(sliced if sliced is not None else popped), MAX_HASHED_NODES + 1)
            )
        elif name in _GET_OPS:
            stack.append(memo.get(index, 1))
        elif name in ('DUP', 'MEMOIZE'):
            stack.extend(popped * pushes)
        elif name != 'MARK':  # a mark is a position in `marks`, not an object on the stack
            stack.extend([1] * pushes)
        cost += _OBJECT.get(name, 0) + _SLOT * pushes + built
        cost += _PER_ITEM.get(name, 0) * len(sliced or ())
        if name == 'STOP':
            budget.charge(cost, 'the pickle')
            return pos
