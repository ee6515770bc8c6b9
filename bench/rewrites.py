"""What each exact serving rewrite gives: the labels-only serving module of ICNet_BN with the
rewrites of `icnet_tf.rewrites` applied one more at a time, timed side by side in one run.

    python bench/rewrites.py [--sizes 1024x2048,512x1024] [--runs 10] [--warmup 2] [--no_append]

Row k applies the first k rewrites ICNet_BN declares (`serving_rewrites`, batch-norm folding
always first), each in a `SegmentationModule(probabilities=False)` traced for any image size
(what `icnet_tf.export --no_probabilities` saves), all in this one process on the same toy-city
image with the seeded weights and TF1 pyramid of bench/inference.py. The rounds interleave the
rows (one call of each per round), so load from other jobs slows every row alike. Reported:
median wall and CPU ms per image (CPU = process time of all threads), the speed relative to
the plain folded row and to the row before, and the share of labels equal to the plain row's.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402


def modules(net):
    """[(label, SegmentationModule)] with 1, 2, ... of the network's rewrites applied."""
    from icnet_tf.rewrites import REWRITES
    from icnet_tf.serving import SegmentationModule

    out, served, names = [], net, []
    for name in net.serving_rewrites:
        served = REWRITES[name].apply(served)
        names.append(name)
        label = ' + '.join(names) if len(names) == 1 else f'+ {name}'
        out.append((label, SegmentationModule(served, probabilities=False)))
    return out


def bench_size(size, args):
    import tensorflow as tf

    from bench.inference import seeded_icnet_bn
    from data import toycity

    h, w = size
    image, _ = toycity.render_scene(np.random.default_rng(0), h, w)
    images = tf.constant(image[None])
    rows = modules(seeded_icnet_bn())
    labels, walls, cpus = {}, {}, {}
    for name, module in rows:
        for _ in range(args.warmup):
            labels[name] = module.serve(images)['labels'].numpy()
        walls[name], cpus[name] = [], []
    for _ in range(args.runs):
        for name, module in rows:
            wall, cpu = time.perf_counter(), time.process_time()
            module.serve(images)['labels'].numpy()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    plain = rows[0][0]
    return [
        (
            name,
            1000 * statistics.median(walls[name]),
            1000 * statistics.median(cpus[name]),
            float(np.mean(labels[name] == labels[plain])),
        )
        for name, _ in rows
    ]


def format_table(results):
    lines = [
        '| size | rewrites | median ms/img | CPU ms/img | speed vs plain fold (wall / CPU) | '
        'vs the row above (wall / CPU) | labels = plain fold |',
        '|---|---|---:|---:|---:|---:|---:|',
    ]
    for (h, w), rows in results.items():
        _, base_ms, base_cpu, _ = rows[0]
        prev_ms, prev_cpu = base_ms, base_cpu
        for name, ms, cpu, agree in rows:
            lines.append(
                f'| {h}x{w} | {name} | {ms:.0f} | {cpu:.0f} | {base_ms / ms:.2f}x / '
                f'{base_cpu / cpu:.2f}x | {prev_ms / ms:.2f}x / {prev_cpu / cpu:.2f}x | '
                f'{100 * agree:.3f}% |'
            )
            prev_ms, prev_cpu = ms, cpu
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='1024x2048,512x1024', help='HxW list')
    parser.add_argument('--runs', type=int, default=10, help='timed rounds (median)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls per row')
    parser.add_argument('--no_append', action='store_true', help='do not write bench/RESULTS.md')
    args = parser.parse_args(argv)
    try:
        sizes = [tuple(int(v) for v in s.lower().split('x')) for s in args.sizes.split(',')]
    except ValueError:
        parser.error(f'--sizes: expected HxW[,HxW...], got {args.sizes!r}')
    load_before = os.getloadavg()
    results = {size: bench_size(size, args) for size in sizes}
    load_after = os.getloadavg()
    table = format_table(results)
    loads = (
        f'Load average {", ".join(f"{v:.2f}" for v in load_before)} before, '
        f'{", ".join(f"{v:.2f}" for v in load_after)} after.'
    )
    print(table)
    print(loads)
    if not args.no_append:
        from bench.common import append_results

        notes = (
            'ICNet_BN labels-only serving module (seeded weights, psp_bins (1, 2, 3, 4), 19 '
            'classes, batch 1, toy-city image), the rewrites of `icnet_tf.rewrites` applied one '
            f'more per row, {args.runs} interleaved rounds after {args.warmup} warm-up calls in '
            'one process.'
        )
        append_results(
            'Exact serving rewrites one at a time (bench/rewrites.py)',
            '\n\n'.join([notes, table, loads]),
            'python bench/rewrites.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
        )
        print('appended to bench/RESULTS.md')


if __name__ == '__main__':
    main()
