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
            labels[name] = module.serve(images)['labels'].numpy()
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
    from bench.common import publish, size_arguments

    args = size_arguments(__doc__.split('\n\n')[0], 10, 'untimed calls per row', argv)
    load_before = os.getloadavg()
    results = {size: bench_size(size, args) for size in args.sizes}
    notes = (
        'ICNet_BN labels-only serving module (seeded weights, psp_bins (1, 2, 3, 4), 19 '
        'classes, batch 1, toy-city image), the rewrites of `icnet_tf.rewrites` applied one '
        f'more per row, {args.runs} interleaved rounds after {args.warmup} warm-up calls in '
        'one process.'
    )
    publish(
        'Exact serving rewrites one at a time (bench/rewrites.py)',
        notes,
        format_table(results),
        load_before,
        'bench/rewrites.py',
        args,
        argv,
    )


if __name__ == '__main__':
    main()
