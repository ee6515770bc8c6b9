"""Shared bits of the benchmark scripts: machine description and appending to RESULTS.md."""

import datetime
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TF start-up chatter hides the tables
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'RESULTS.md')


def machine_info():
    """One line: date, cores, CPU model, load average, Python/TF/numpy versions."""
    cpu = platform.processor() or 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if 'model name' in line)
    except (OSError, StopIteration):
        pass
    import numpy as np
    import tensorflow as tf

    load = ', '.join(f'{v:.2f}' for v in os.getloadavg())
    return (
        f'{datetime.date.today().isoformat()}, {os.cpu_count()} cores, {cpu}, load average '
        f'{load}; Python {platform.python_version()}, TF {tf.__version__}, '
        f'numpy {np.__version__}'
    )


def append_results(title, table, command):
    """Append a dated section to bench/RESULTS.md (never rewrites earlier sections)."""
    new = not os.path.exists(RESULTS)
    with open(RESULTS, 'a') as f:
        if new:
            f.write(
                '# Benchmark results\n\nEach section is appended by the script named in '
                'its title; figures are medians unless stated.\n'
            )
        f.write(f'\n## {title}\n\n{machine_info()}\n\n`{command}`\n\n{table}\n')


def run(cmd, log, cwd=None):
    """Run a command with its output appended to `log`; returns its wall time in seconds."""
    print('$', ' '.join(cmd), flush=True)
    start = time.perf_counter()
    with open(log, 'a') as f:
        f.write('$ ' + ' '.join(cmd) + '\n')
        f.flush()
        subprocess.run(
            cmd,
            cwd=cwd or os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            check=True,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    return time.perf_counter() - start


def report(title, table, script, append=True):
    """Print a result table; unless told not to, append it to RESULTS.md with the command."""
    print(table)
    if append:
        append_results(title, table, ' '.join(['python', script] + sys.argv[1:]))
    print(machine_info())


def size_arguments(description, runs, warmup_help, argv=None):
    """The options of a per-image-size benchmark (`--sizes HxW,... --runs --warmup
    --no_append`), parsed; `args.sizes` is a list of (h, w)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--sizes', default='1024x2048,512x1024', help='HxW list')
    parser.add_argument('--runs', type=int, default=runs, help='timed rounds (median)')
    parser.add_argument('--warmup', type=int, default=2, help=warmup_help)
    parser.add_argument('--no_append', action='store_true', help='do not write bench/RESULTS.md')
    args = parser.parse_args(argv)
    try:
        args.sizes = [tuple(int(v) for v in s.lower().split('x')) for s in args.sizes.split(',')]
    except ValueError:
        parser.error(f'--sizes: expected HxW[,HxW...], got {args.sizes!r}')
    return args


def publish(title, notes, table, load_before, script, args, argv=None):
    """Print `table` with the load averages before (`load_before`) and now; unless
    `args.no_append`, append notes, table and loads to RESULTS.md under `title`."""
    load_after = os.getloadavg()
    loads = (
        f'Load average {", ".join(f"{v:.2f}" for v in load_before)} before, '
        f'{", ".join(f"{v:.2f}" for v in load_after)} after.'
    )
    print(table)
    print(loads)
    if not args.no_append:
        command = f'python {script} ' + ' '.join(sys.argv[1:] if argv is None else argv)
        append_results(title, '\n\n'.join([notes, table, loads]), command)
        print('appended to bench/RESULTS.md')


def spawn_worker(command, stderr_path, env):
    """A benchmark worker process talking over stdin/stdout (text), its stderr to a file (a
    full pipe would block it), run from the repository root."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(stderr_path, 'w') as stderr:
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=root,
        )


def read_reply(proc, stderr_path, name):
    """The next JSON line a `spawn_worker` process writes (other lines are passed over); a
    RuntimeError with the last line of its stderr when it died."""
    import json

    while True:
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            with open(stderr_path) as f:
                err = f.read().strip().splitlines()
            raise RuntimeError(
                f'{name} worker died: ' + (err[-1] if err else f'exit {proc.returncode}')
            )
        line = line.strip()
        if line.startswith('{'):
            return json.loads(line)


class Worker:
    """A benchmark worker process that answers each command line with one JSON line; its
    stderr goes to `<tmp>/stderr_<tag>.txt` (`tag`: `label` made file-name safe)."""

    def __init__(self, variant, tmp, label=None):
        import re

        self.variant = variant
        self.tag = re.sub(r'[^A-Za-z0-9]+', '_', label or variant)
        self.stderr_path = os.path.join(tmp, f'stderr_{self.tag}.txt')

    def start(self, command, env):
        self.proc = spawn_worker(command, self.stderr_path, env)

    def read(self):
        return read_reply(self.proc, self.stderr_path, self.variant)

    def ask(self, command):
        self.proc.stdin.write(command + '\n')
        self.proc.stdin.flush()
        return self.read()
