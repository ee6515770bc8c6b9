"""Frames/s of per-frame segmentation vs Deep Feature Flow at key intervals 5 and 10.

    python bench/dff.py [--feature_nets pspnet101,icnet_bn] [--sizes 256x512,512x1024]
        [--repeats 5] [--no_append]

For each feature network and frame size, a `DFF` with random weights (speed does not depend on
them) is run through `dff_tf.model.VideoRunner`'s compiled steps, batch 1, frames already
decoded:
  * key step = N_feat + N_task + resize + argmax (this IS per-frame segmentation),
  * propagation step = FlowNetS (at half the frame size) + warp + N_task + resize + argmax,
  * FlowNetS alone (compiled), to show where the propagation time goes.
Each is called once to trace, then `--repeats` times; medians are reported. DFF at key interval
l runs 1 key + (l - 1) propagation steps: frames/s = l / (t_key + (l - 1) t_prop). The table
and a plain-words verdict (where the flow network costs as much as the feature network) are
appended to bench/RESULTS.md.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.common import append_results  # noqa: E402
from dff_tf.model import DFF, VideoRunner  # noqa: E402

INTERVALS = (5, 10)
NAMES = {'pspnet101': 'PSPNet101', 'icnet_bn': 'ICNet_BN'}


def median_time(fn, repeats):
    fn()  # trace / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(feature_net, size, repeats, seed=0):
    dff = DFF(feature_net, num_classes=19, seed=seed).build()
    runner = VideoRunner(dff)
    rng = np.random.default_rng(seed)
    key, current = (rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(2))
    features = runner.key_step(key)[0]
    t_key = median_time(lambda: runner.key_step(key), repeats)
    t_prop = median_time(lambda: runner.propagate_step(features, key, current), repeats)
    flow = tf.function(lambda k, c: dff.raw_flow(k, c)[0], autograph=False)
    k, c = tf.constant(key[None]), tf.constant(current[None])
    t_flow = median_time(lambda: flow(k, c).numpy(), repeats)
    return {
        't_key': t_key,
        't_prop': t_prop,
        't_flow': t_flow,
        'flow_input': dff.flow_input_size(*size),
        'grid': tuple(int(s) for s in features.shape[1:3]),
    }


def dff_fps(r, interval):
    return interval / (r['t_key'] + (interval - 1) * r['t_prop'])


def table(results, repeats):
    head = (
        '| feature net | frame | key step = per-frame (s) | FlowNetS alone (s) | '
        'propagation step (s) | per-frame fps | '
        + ' | '.join(f'DFF l={interval} fps (x per-frame)' for interval in INTERVALS)
        + ' |'
    )
    rows = [head, '|' + '---|' * (6 + len(INTERVALS))]
    for (name, size), r in results.items():
        base = 1.0 / r['t_key']
        cells = [
            NAMES[name],
            f'{size[0]}x{size[1]}',
            f'{r["t_key"]:.3f}',
            f'{r["t_flow"]:.3f} (at {r["flow_input"][0]}x{r["flow_input"][1]})',
            f'{r["t_prop"]:.3f}',
            f'{base:.2f}',
        ]
        cells += [f'{dff_fps(r, i):.2f} ({dff_fps(r, i) / base:.2f}x)' for i in INTERVALS]
        rows.append('| ' + ' | '.join(cells) + ' |')
    notes = []
    for (name, size), r in results.items():
        where = f'{NAMES[name]} at {size[0]}x{size[1]}'
        ratio = r['t_prop'] / r['t_key']
        if r['t_prop'] >= r['t_key']:
            notes.append(
                f'- {where}: a propagated frame ({r["t_prop"]:.3f} s, of which FlowNetS '
                f'{r["t_flow"]:.3f} s) costs {ratio:.2f}x a key frame '
                f'({r["t_key"]:.3f} s): the flow network is MORE expensive than the '
                'feature network, so DFF is slower than segmenting every frame.'
            )
        elif r['t_flow'] >= 0.5 * r['t_key']:
            notes.append(
                f'- {where}: FlowNetS alone ({r["t_flow"]:.3f} s) already costs '
                f'{r["t_flow"] / r["t_key"]:.2f}x the whole per-frame network '
                f'({r["t_key"]:.3f} s); DFF gains only '
                f'{dff_fps(r, 5) * r["t_key"]:.2f}x at l=5.'
            )
        else:
            notes.append(
                f'- {where}: a propagated frame costs {ratio:.2f}x a key frame; DFF '
                f'is {dff_fps(r, 5) * r["t_key"]:.2f}x faster at l=5 and '
                f'{dff_fps(r, 10) * r["t_key"]:.2f}x at l=10.'
            )
    text = '\n'.join(rows)
    text += (
        f'\n\nMedians of {repeats} calls after one warm-up, batch 1, compiled '
        '`tf.function`s, random weights, frames already decoded; every step includes the '
        'resize of the logits to the frame and the argmax. FlowNetS runs at half the frame '
        'size (flow_scale 0.5).\n\n' + '\n'.join(notes)
    )
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--feature_nets', default='pspnet101,icnet_bn')
    p.add_argument('--sizes', default='256x512,512x1024')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--no_append', action='store_true', help='do not write bench/RESULTS.md')
    args = p.parse_args()
    sizes = [tuple(int(v) for v in s.lower().split('x')) for s in args.sizes.split(',')]
    nets = [n.strip().lower() for n in args.feature_nets.split(',') if n.strip()]
    load_before = ', '.join(f'{v:.2f}' for v in os.getloadavg())
    results = {}
    for name in nets:
        for size in sizes:
            print(f'{NAMES[name]} {size[0]}x{size[1]} ...', flush=True)
            results[name, size] = r = measure(name, size, args.repeats)
            print(
                f'  key {r["t_key"]:.3f} s, FlowNetS {r["t_flow"]:.3f} s, propagate '
                f'{r["t_prop"]:.3f} s',
                flush=True,
            )
    load_after = ', '.join(f'{v:.2f}' for v in os.getloadavg())
    text = table(results, args.repeats)
    text += (
        f'\n\nLoad average before: {load_before}; after: {load_after} (other processes '
        'shared the CPU; compare rows of one run, not runs).'
    )
    print(text)
    if not args.no_append:
        command = 'python bench/dff.py ' + ' '.join(sys.argv[1:])
        append_results(
            'DFF speed: per-frame vs Deep Feature Flow (bench/dff.py)', text, command.strip()
        )
        print('appended to bench/RESULTS.md')


if __name__ == '__main__':
    main()
