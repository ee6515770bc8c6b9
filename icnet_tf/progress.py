"""The one-line progress bar of every long-running tool: rate and ETA."""

import math
import sys
import time


class Progress:
    """A one-line progress bar with step/s and ETA; plain lines when stdout is not a terminal."""

    def __init__(self, start, total, every=1.0, stream=None):
        self.start, self.total, self.every = start, total, every
        self.stream = stream or sys.stdout
        self.t0 = self.last = time.perf_counter()
        self.tty = self.stream.isatty()

    def update(self, step, values, force=False):
        now = time.perf_counter()
        if not force and now - self.last < (self.every if self.tty else 10 * self.every):
            return
        self.last = now
        done = step - self.start
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float('inf')
        width = 24
        filled = int(width * step / max(self.total, 1))
        bar = '=' * filled + '.' * (width - filled)
        stats = ' '.join(f'{k} {v:.4g}' for k, v in values.items())
        eta_s = time.strftime('%H:%M:%S', time.gmtime(eta)) if math.isfinite(eta) else '?'
        line = f'[{bar}] {step}/{self.total} {rate:.2f} step/s ETA {eta_s} {stats}'
        if self.tty:
            self.stream.write('\r' + line[:200].ljust(120))
        else:
            self.stream.write(line + '\n')
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write('\n')
