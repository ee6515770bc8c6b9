"""Frames/s of per-frame segmentation vs Deep Feature Flow at key intervals 5 and 10, for several
flow networks and flow scales side by side in one run.

    python bench/dff.py [--feature_nets icnet_bn] [--sizes 512x1024]
        [--flownets plain,half,quarter] [--flow_scales 0.5,0.25] [--rounds 9] [--no_append]

For each feature network and frame size, one feature network (random weights: speed does not
depend on them) is shared by one `DFF` per (flow network, flow scale), each run through
`dff_tf.model.VideoRunner`'s compiled steps, batch 1, frames already decoded:
  * key step = N_feat + N_task + resize + argmax (this IS per-frame segmentation),
  * propagation step = flow network (at flow_scale of the frame) + warp + N_task + resize +
    argmax,
  * the flow network alone (compiled), to show where the propagation time goes.
Every step is traced and called once, then timed in `--rounds` interleaved rounds: a round is
key step, then every configuration's propagation step and flow network in turn (the order
rotates from round to round), then the key step again, so that a change of the machine's load
hits all configurations alike. Reported: medians over rounds (the key step over both calls of
every round); DFF at key interval l runs 1 key + (l - 1) propagation steps:
frames/s = l / (t_key + (l - 1) t_prop), and its ratio to the per-frame rate 1 / t_key. The
ratio is also computed per round (that round's key and propagation times): its median and
range show how much the shared machine moved the figures. The same ratio from process CPU
time (all threads) is given as a check that does not depend on how much of the CPU other jobs
took. The table and a plain-words verdict go to bench/RESULTS.md.
"""

import argparse
import os
import sys
import time
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.common import append_results  # noqa: E402
from dff_tf.flownet import FLOWNET_VARIANTS  # noqa: E402
from dff_tf.model import DFF, VideoRunner, build_feature_net  # noqa: E402

INTERVALS = (5, 10)
GOALS = {5: 1.5, 10: 2.0}  # issue 14: DFF with ICNet_BN and a light flow network
NAMES = {'pspnet101': 'PSPNet101', 'icnet_bn': 'ICNet_BN'}
FLOW_NAMES = {
    'plain': 'FlowNetS',
    'bn': 'FlowNetS (BN)',
    'half': 'FlowNetS half',
    'quarter': 'FlowNetS quarter',
}


def timed(fn):
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def speedup(t_key, t_prop, interval):
    """DFF frames/s at key interval l divided by per-frame frames/s."""
    return interval * t_key / (t_key + (interval - 1) * t_prop)


def measure(feature_net, size, configs, rounds, seed=0, log=print):
    """Interleaved timings of one feature network and several (flownet, flow_scale)."""
    net = build_feature_net(feature_net, 19, seed)
    dffs = {c: DFF(net, flownet=c[0], flow_scale=c[1], seed=seed).build() for c in configs}
    runners = {c: VideoRunner(d) for c, d in dffs.items()}
    base = runners[configs[0]]
    rng = np.random.default_rng(seed)
    key, current = (rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(2))
    k, c = tf.constant(key[None]), tf.constant(current[None])
    features = base.key_step(key)[0]
    flows = {}
    for config, dff in dffs.items():
        flows[config] = tf.function(lambda k, c, d=dff: d.raw_flow(k, c)[0], autograph=False)
        for _ in range(2):  # trace, then one warm call
            runners[config].propagate_step(features, key, current)
            flows[config](k, c).numpy()
    base.key_step(key)
    t = {'key': [], 'key_cpu': []}
    for config in configs:
        t[config] = {'prop': [], 'prop_cpu': [], 'flow': []}
    per_round = {config: {i: [] for i in INTERVALS} for config in configs}
    per_round_cpu = {config: {i: [] for i in INTERVALS} for config in configs}
    for r in range(rounds):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        wall0, cpu0 = timed(lambda: base.key_step(key))
        got = {}
        for config in order:
            got[config] = timed(partial(runners[config].propagate_step, features, key, current))
            t[config]['flow'].append(timed(lambda f=flows[config]: f(k, c).numpy())[0])
        wall1, cpu1 = timed(lambda: base.key_step(key))
        t['key'] += [wall0, wall1]
        t['key_cpu'] += [cpu0, cpu1]
        for config, (wall, cpu) in got.items():
            t[config]['prop'].append(wall)
            t[config]['prop_cpu'].append(cpu)
            for interval in INTERVALS:
                per_round[config][interval].append(speedup((wall0 + wall1) / 2, wall, interval))
                per_round_cpu[config][interval].append(speedup((cpu0 + cpu1) / 2, cpu, interval))
        log(
            f'  round {r + 1}/{rounds}: key {wall0:.3f}/{wall1:.3f} s, '
            + ', '.join(f'{_label(cf)} {got[cf][0]:.3f}' for cf in configs),
            flush=True,
        )
    med = np.median
    out = {}
    for config in configs:
        out[config] = {
            't_key': float(med(t['key'])),
            't_prop': float(med(t[config]['prop'])),
            't_flow': float(med(t[config]['flow'])),
            'flow_input': dffs[config].flow_input_size(*size),
            'grid': tuple(int(s) for s in features.shape[1:3]),
            'round_ratio': {
                i: (float(med(v)), float(min(v)), float(max(v)))
                for i, v in per_round[config].items()
            },
            'cpu_ratio': {i: float(med(v)) for i, v in per_round_cpu[config].items()},
        }
    return out


def _label(config):
    return f'{FLOW_NAMES.get(config[0], config[0])} @ {config[1]:g}'


def dff_fps(r, interval):
    return interval / (r['t_key'] + (interval - 1) * r['t_prop'])


def table(results, rounds):
    head = (
        '| feature net | frame | flow net @ flow_scale | key step = per-frame (s) | '
        'flow net alone (s) | propagation step (s) | per-frame fps | '
        + ' | '.join(
            f'DFF l={i} fps (x per-frame; per-round median [min-max]; CPU time)' for i in INTERVALS
        )
        + ' |'
    )
    rows = [head, '|' + '---|' * (7 + len(INTERVALS))]
    for (name, size, config), r in results.items():
        base = 1.0 / r['t_key']
        cells = [
            NAMES.get(name, name),
            f'{size[0]}x{size[1]}',
            _label(config),
            f'{r["t_key"]:.3f}',
            f'{r["t_flow"]:.3f} (at {r["flow_input"][0]}x{r["flow_input"][1]})',
            f'{r["t_prop"]:.3f}',
            f'{base:.2f}',
        ]
        for i in INTERVALS:
            mid, lo, hi = r['round_ratio'][i]
            cells.append(
                f'{dff_fps(r, i):.2f} ({dff_fps(r, i) / base:.2f}x; {mid:.2f} '
                f'[{lo:.2f}-{hi:.2f}]; {r["cpu_ratio"][i]:.2f})'
            )
        rows.append('| ' + ' | '.join(cells) + ' |')
    notes = []
    for (name, size, config), r in results.items():
        where = f'{NAMES.get(name, name)} at {size[0]}x{size[1]} with {_label(config)}'
        x = {i: dff_fps(r, i) * r['t_key'] for i in INTERVALS}
        if r['t_prop'] >= r['t_key']:
            verdict = (
                f'a propagated frame ({r["t_prop"]:.3f} s, of which the flow net '
                f'{r["t_flow"]:.3f} s) costs {r["t_prop"] / r["t_key"]:.2f}x a key frame: '
                'DFF is slower than segmenting every frame'
            )
        else:
            verdict = (
                f'a propagated frame costs {r["t_prop"] / r["t_key"]:.2f}x a key frame '
                f'(flow net {r["t_flow"]:.3f} s of {r["t_prop"]:.3f} s)'
            )
        goals = ', '.join(
            f'l={i}: {x[i]:.2f}x ({"meets" if x[i] >= GOALS[i] else "misses"} >= {GOALS[i]}x)'
            for i in INTERVALS
        )
        notes.append(f'- {where}: {verdict}; {goals}.')
    text = '\n'.join(rows)
    text += (
        f'\n\nMedians over {rounds} interleaved rounds (each: key step, every configuration '
        'in rotating order, key step) after tracing and a warm-up call, batch 1, compiled '
        '`tf.function`s, random weights, frames already decoded; every step includes the '
        'resize of the logits to the frame and the argmax. "x per-frame" = DFF frames/s over '
        'per-frame frames/s from the medians; then the same ratio computed per round (median '
        '[min-max]) and from process CPU time (all threads).\n\n' + '\n'.join(notes)
    )
    return text


def parse_configs(flownets, flow_scales):
    names = [n.strip() for n in flownets.split(',') if n.strip()]
    for n in names:
        if n not in FLOWNET_VARIANTS:
            raise SystemExit(f'--flownets: unknown {n!r} (known: {", ".join(FLOWNET_VARIANTS)})')
    scales = [float(s) for s in flow_scales.split(',') if s.strip()]
    return [(n, s) for n in names for s in scales]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--feature_nets', default='icnet_bn')
    p.add_argument('--sizes', default='512x1024')
    p.add_argument('--flownets', default='plain,half,quarter')
    p.add_argument('--flow_scales', default='0.5,0.25')
    p.add_argument('--rounds', type=int, default=9)
    p.add_argument('--no_append', action='store_true', help='do not write bench/RESULTS.md')
    args = p.parse_args()
    tf.get_logger().setLevel('ERROR')  # one tf.function per configuration is not "retracing"
    sizes = [tuple(int(v) for v in s.lower().split('x')) for s in args.sizes.split(',')]
    nets = [n.strip().lower() for n in args.feature_nets.split(',') if n.strip()]
    configs = parse_configs(args.flownets, args.flow_scales)
    load_before = ', '.join(f'{v:.2f}' for v in os.getloadavg())
    results = {}
    for name in nets:
        for size in sizes:
            print(f'{NAMES.get(name, name)} {size[0]}x{size[1]} ...', flush=True)
            for config, r in measure(name, size, configs, args.rounds).items():
                results[name, size, config] = r
                print(
                    f'  {_label(config)}: key {r["t_key"]:.3f} s, flow {r["t_flow"]:.3f} s, '
                    f'propagate {r["t_prop"]:.3f} s',
                    flush=True,
                )
    load_after = ', '.join(f'{v:.2f}' for v in os.getloadavg())
    text = table(results, args.rounds)
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
