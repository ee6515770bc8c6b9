"""What the SavedModel's input check costs: the serving function of ICNet_BN with and without
`icnet_tf.serving.checked_input` (the shape assertion of the exported signature).

    python bench/serving_checks.py [--sizes 1024x2048,512x1024] [--runs 20] [--warmup 2]
        [--no_append]

Both functions come from one `SegmentationModule` (every exact rewrite ICNet_BN declares,
labels and probabilities, as `icnet_tf.export` saves it; seeded weights and the TF1 pyramid of
bench/inference.py): `module.serve`, the exported signature (input of any shape, checked), and
`module.segment` traced for `[None, None, None, 3]` uint8 (the unchecked signature before the
check). The rounds interleave the two (one call of each per round, the order alternating), so
load from other jobs slows both alike. Reported: median wall and CPU ms per image (CPU =
process time of all threads) and checked / unchecked ratios; the labels must be identical.
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


def bench_size(size, args):
    import tensorflow as tf

    from bench.inference import seeded_icnet_bn
    from data import toycity
    from icnet_tf.rewrites import serving_network
    from icnet_tf.serving import SegmentationModule

    h, w = size
    image, _ = toycity.render_scene(np.random.default_rng(0), h, w)
    images = tf.constant(image[None])
    module = SegmentationModule(serving_network(seeded_icnet_bn(), True))
    variants = {
        'checked': module.serve.get_concrete_function(),
        'unchecked': tf.function(
            module.segment,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name='images')],
        ).get_concrete_function(),
    }
    labels = {}
    for name, fn in variants.items():
        for _ in range(args.warmup):
            labels[name] = fn(images)['labels'].numpy()
    walls = {name: [] for name in variants}
    cpus = {name: [] for name in variants}
    for r in range(args.runs):
        for name in sorted(variants, reverse=bool(r % 2)):
            wall, cpu = time.perf_counter(), time.process_time()
            labels[name] = variants[name](images)['labels'].numpy()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    same = bool(np.array_equal(labels['checked'], labels['unchecked']))
    return {
        name: (1000 * statistics.median(walls[name]), 1000 * statistics.median(cpus[name]))
        for name in variants
    }, same


def main(argv=None):
    from bench.common import publish, size_arguments

    args = size_arguments(__doc__.split('\n\n')[0], 20, 'untimed calls per variant', argv)
    load_before = os.getloadavg()
    lines = [
        '| size | checked ms/img (wall / CPU) | unchecked ms/img (wall / CPU) | checked / '
        'unchecked (wall / CPU) | labels identical |',
        '|---|---:|---:|---:|---|',
    ]
    for size in args.sizes:
        times, same = bench_size(size, args)
        (cw, cc), (uw, uc) = times['checked'], times['unchecked']
        lines.append(
            f'| {size[0]}x{size[1]} | {cw:.1f} / {cc:.1f} | {uw:.1f} / {uc:.1f} | '
            f'{cw / uw:.3f} / {cc / uc:.3f} | {same} |'
        )
    notes = (
        'ICNet_BN serving function (every exact rewrite, labels + probabilities; seeded '
        'weights, psp_bins (1, 2, 3, 4), 19 classes, batch 1, toy-city image) with the '
        "exported signature's input check and without it, "
        f'{args.runs} interleaved rounds after {args.warmup} warm-up calls in one process.'
    )
    publish(
        "The SavedModel's input check (bench/serving_checks.py)",
        notes,
        '\n'.join(lines),
        load_before,
        'bench/serving_checks.py',
        args,
        argv,
    )


if __name__ == '__main__':
    main()
