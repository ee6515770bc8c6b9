"""Bounded reading of weights files: a memory budget per file and a pickle pre-scan.

Every reader in `converters/` keeps what it allocates proportional to the file it reads, so a
file of a few hundred bytes cannot make it allocate gigabytes, whatever it declares.

The budget
----------
Besides the bytes of the file itself (read once), a reader allocates at most
``2 x the file size + MARGIN`` (MARGIN = 16 MB) for everything it builds: arrays, Python objects
a pickle creates, copies made by the few callables a restricted unpickler allows, the bytes a
deflate-compressed zip record expands to beyond its compressed size. Each allocation is charged
to a `ReadBudget` BEFORE it is made; one that does not fit raises `ReadLimitError`, which the
readers turn into a one-line `WeightsFileError` starting with the path.

Why 2 x: a float32 checkpoint needs 1 x (each stored byte backs one output byte); bfloat16 is
widened to float32 (2 x its storage); a caffe-tensorflow `.npy` holds its array bytes inside the
pickle, so the pickled bytes (1 x) and the arrays built from them (1 x) coexist. MARGIN covers
the per-object overhead of pickles of small files and a few small shared views.

The pickle pre-scan
-------------------
CPython's C unpickler trusts the lengths it reads: a BINBYTES8 op declaring 4 GB allocates 4 GB
before reading, and a LONG_BINPUT op with index 2**28 grows the memo to 2**29 pointers (4 GB,
written to) from an 11-byte pickle. `scan_pickle` walks the opcodes first without building
anything: every length must fit in the bytes that follow, memo indices must be sequential (as
every pickler writes them), and the Python objects the pickle would build (estimated per op,
upper bounds for 64-bit CPython 3.11) are charged to the budget.
"""

import pickletools
import re

MARGIN = 16 * 10**6


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


class ReadBudget:
    """What a reader may still allocate for one file: 2 x its size + MARGIN in total."""

    def __init__(self, file_size):
        self.file_size = file_size
        self.limit = 2 * file_size + MARGIN
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
            f'a {human(self.file_size)} file can back (at most 2 x its size + {human(MARGIN)})'
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
_PER_ITEM = {'SETITEMS': 36, 'SETITEM': 72, 'DICT': 36, 'ADDITEMS': 64, 'FROZENSET': 64}
_SLOT = 8  # a pointer on the stack or in a container
_MEMO_SLOT = 16  # the C unpickler's memo array doubles when it grows
_STR_OPS = {'STRING', 'BINSTRING', 'SHORT_BINSTRING'}
_UNICODE_OPS = {'BINUNICODE', 'SHORT_BINUNICODE', 'BINUNICODE8'}
_PUT_OPS = {'PUT', 'BINPUT', 'LONG_BINPUT'}
_UTF8_UCS2 = re.compile(rb'[\xc4-\xef]')  # UTF-8 lead bytes of characters U+0100..U+FFFF
_UTF8_UCS4 = re.compile(rb'[\xf0-\xff]')  # ... and of U+10000 and above


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
    pos, depth, marks, puts, cost = start, 0, [], 0, 0
    while True:
        if pos >= end:
            raise ValueError('pickle data was truncated (no STOP op)')
        op_pos = pos
        entry = _OPS.get(buf[pos])
        if entry is None:
            raise ValueError(f'invalid pickle op {bytes([buf[pos]])!r} at byte {pos}')
        name, arg, pops, pushes, mark_at = entry
        pos += 1
        text, index = 0, None  # payload bytes of the argument, memo index of a PUT
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
            index = value if name in _PUT_OPS else None
        elif arg is not None and arg.n == pickletools.UP_TO_NEWLINE:  # one or two text lines
            for _ in range(2 if arg is pickletools.stringnl_noescape_pair else 1):
                newline = buf.find(b'\n', pos, end)
                if newline < 0:
                    raise ValueError(f'pickle data was truncated at byte {end}')
                if name == 'PUT':
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
        if name in _UNICODE_OPS:
            if _UTF8_UCS4.search(buf, pos - text, pos):
                built *= 4
            elif _UTF8_UCS2.search(buf, pos - text, pos):
                built *= 2
        elif name == 'UNICODE':
            built *= 4
        elif name in _STR_OPS:
            built *= str_width
        # stack effect, as pickletools.dis computes it
        items = 0
        if name == 'MARK':
            marks.append(depth)
        elif mark_at is not None or (name == 'POP' and marks and marks[-1] == depth):
            if not marks:
                raise ValueError(f'pickle op {name} at byte {op_pos} has no MARK')
            base = marks.pop()
            items = depth - base
            depth = base - (mark_at or 0) + pushes
            if depth < 0:
                raise ValueError(f'pickle op {name} at byte {op_pos} underflows the stack')
        else:
            if depth < pops:
                raise ValueError(f'pickle op {name} at byte {op_pos} underflows the stack')
            depth += pushes - pops
        if name in _PUT_OPS or name == 'MEMOIZE':
            index = puts if index is None else index
            if index > puts:
                raise ReadLimitError(
                    f'the pickle stores memo entry {index} at byte {op_pos} after only {puts} '
                    f'entries (an index that large makes the unpickler allocate '
                    f'{human(_MEMO_SLOT * index)})'
                )
            puts += index == puts
            cost += _MEMO_SLOT
        cost += _OBJECT.get(name, 0) + _SLOT * pushes + built
        cost += _PER_ITEM.get(name, 0) * items + (items if name == 'APPENDS' else 0)
        if name == 'STOP':
            budget.charge(cost, 'the pickle')
            return pos
