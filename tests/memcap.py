"""Helpers for the hostile-file tests: run a command under a memory cap, assemble pickles by hand.

`run_capped` runs Python in a child process whose address space is capped with RLIMIT_AS
(set by the child itself before it imports anything), and reports the child's own peak RSS
(VmHWM), so a reader that allocates what a file declares fails the test by a MemoryError, a
kill or its peak RSS rather than by swapping the machine.

`read_capped` runs one `converters.<module>.load(path)` that way; the child refuses to import
torch and reports whether TensorFlow or Keras were imported (the readers must not need them:
that is what lets a 2 GB cap work).

`dumps` writes a protocol-3 pickle of plain values plus `Global`, `Call`, `Build`, `PersId` and
`Raw` opcodes, so hostile pickles naming torch or NumPy globals can be built without those
libraries or their checks.
"""

import dataclasses
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAP_BYTES = 2 * 2**30  # address space of a capped child: far below what the hostile files claim
MAX_RSS_MB = 200  # peak RSS a capped reader child may reach (Python + NumPy alone: ~40 MB)


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    seconds: float


_LAUNCH = r"""
import atexit, os, resource, runpy, sys
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))  # in the child, before anything is imported


@atexit.register
def report():  # peak RSS of this program: VmHWM starts afresh at exec, unlike ru_maxrss
    with open('/proc/self/status') as f:
        hwm = next(line.split()[1] for line in f if line.startswith('VmHWM:'))
    with open(os.environ['MEMCAP_REPORT'], 'w') as f:
        f.write(hwm)


mode, target, sys.argv = sys.argv[2], sys.argv[3], sys.argv[2:3] + sys.argv[4:]
if mode == '-m':
    runpy.run_module(target, run_name='__main__', alter_sys=True)
else:
    exec(compile(target, '<capped>', 'exec'), {'__name__': '__main__'})
"""


def run_capped(python_args, cap_bytes=CAP_BYTES, timeout=120, cwd=ROOT):
    """Run `python <python_args>` (['-m', module, ...] or ['-c', code, ...]) with its address
    space capped at `cap_bytes` (RLIMIT_AS, set by the child itself before it imports anything);
    return its Result, with the peak RSS of that program (VmHWM, written at exit: a child that
    is killed reports infinity)."""
    argv = [sys.executable, '-c', _LAUNCH, str(cap_bytes), *python_args]
    report = tempfile.NamedTemporaryFile('r', suffix='.hwm')
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3', OPENBLAS_NUM_THREADS='1')
    env['MEMCAP_REPORT'] = report.name
    with report, tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err)
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                os.kill(proc.pid, signal.SIGKILL)
                pid, status = os.waitpid(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        hwm_kb = report.read().strip()
        peak = int(hwm_kb) / 1024 if hwm_kb else float('inf')
        return Result(proc.returncode, out.read(), err.read(), peak, seconds)


_READ = r"""
import sys, time
sys.modules['torch'] = None  # the readers never import torch
import importlib
from converters.errors import WeightsFileError
reader = importlib.import_module('converters.' + sys.argv[1])
start = time.monotonic()
try:
    obj = reader.load(sys.argv[2])
    if sys.argv[1] == 'torch_pth':
        reader.split_metadata(obj, sys.argv[2])
    outcome = 'loaded'
except WeightsFileError as e:
    print(e, file=sys.stderr)
    outcome = 'refused'
heavy = [m for m in ('tensorflow', 'keras', 'torch') if sys.modules.get(m) is not None]
print(outcome, round(time.monotonic() - start, 3), ','.join(heavy) or '-')
"""


def read_capped(module, path, cap_bytes=CAP_BYTES):
    """`converters.<module>.load(path)` in a capped child; returns (Result, outcome, seconds of
    the load alone, heavy modules imported)."""
    result = run_capped(['-c', _READ, module, str(path)], cap_bytes)
    words = result.stdout.split()
    outcome, seconds, heavy = words if len(words) == 3 else ('crashed', 'nan', '?')
    return result, outcome, float(seconds), heavy


def assert_refused_in_one_line(module, path, expect, cap_bytes=CAP_BYTES):
    """The reader refuses `path` under the cap, quickly, with one line that starts with the path
    and contains `expect`, without a big allocation; returns the Result (for peak RSS)."""
    result, outcome, seconds, heavy = read_capped(module, path, cap_bytes)
    lines = result.stderr.strip().splitlines()
    assert outcome == 'refused' and result.returncode == 0, (result, outcome)
    assert len(lines) == 1 and lines[0].startswith(str(path)), result.stderr
    assert expect in lines[0], lines[0]
    assert heavy == '-', f'the reader imported {heavy}'
    assert result.peak_rss_mb < MAX_RSS_MB, f'peak RSS {result.peak_rss_mb:.0f} MB: {lines[0]}'
    return result


# ------------------------------------------------------------------------------ pickle assembler
@dataclasses.dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclasses.dataclass(frozen=True)
class Call:
    func: object
    args: tuple


@dataclasses.dataclass(frozen=True)
class Build:
    obj: object
    state: object


@dataclasses.dataclass(frozen=True)
class PersId:
    pid: tuple


@dataclasses.dataclass(frozen=True)
class Raw:
    """Opcodes written as they are (e.g. memo puts and gets)."""

    data: bytes


def _ops(obj):
    if obj is None:
        return b'N'
    if obj is True or obj is False:
        return b'\x88' if obj else b'\x89'
    if isinstance(obj, int):
        if 0 <= obj < 256:
            return b'K' + bytes([obj])
        if -(2**31) <= obj < 2**31:
            return b'J' + struct.pack('<i', obj)
        data = obj.to_bytes((obj.bit_length() + 8) // 8, 'little', signed=True)
        return b'\x8a' + bytes([len(data)]) + data
    if isinstance(obj, float):
        return b'G' + struct.pack('>d', obj)
    if isinstance(obj, str):
        data = obj.encode('utf-8')
        return b'X' + struct.pack('<I', len(data)) + data
    if isinstance(obj, bytes):
        return b'B' + struct.pack('<I', len(obj)) + obj
    if isinstance(obj, tuple):
        return b'(' + b''.join(map(_ops, obj)) + b't'
    if isinstance(obj, list):
        return b'](' + b''.join(map(_ops, obj)) + b'e'
    if isinstance(obj, dict):
        return b'}(' + b''.join(_ops(k) + _ops(v) for k, v in obj.items()) + b'u'
    if isinstance(obj, Global):
        return f'c{obj.module}\n{obj.name}\n'.encode()
    if isinstance(obj, Call):
        return _ops(obj.func) + _ops(tuple(obj.args)) + b'R'
    if isinstance(obj, Build):
        return _ops(obj.obj) + _ops(obj.state) + b'b'
    if isinstance(obj, PersId):
        return _ops(tuple(obj.pid)) + b'Q'
    if isinstance(obj, Raw):
        return obj.data
    raise TypeError(f'cannot assemble {type(obj).__name__}')


def dumps(obj):
    """A protocol-3 pickle of `obj` (see the module docstring); no memo unless `Raw` adds one."""
    return b'\x80\x03' + _ops(obj) + b'.'
