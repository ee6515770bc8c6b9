"""DFF accuracy on the toy city's videos: per-frame vs propagated, at distances and key intervals,
for one or several flow networks side by side.

    python bench/dff_accuracy.py --features runs/toycity/snapshots [--feature_net icnet_bn]
        [--out_dir runs/dff_bench] [--flownets plain@0.5,quarter@0.25] [--flownet_weights W]
        [--flow_steps 1200 --flow_learning_rate 2e-4] [--dff_steps 800] [--max_samples 0]

Steps (each skipped when its output exists, so an interrupted run resumes):
1. toy videos (`python -m data.toycity`, 16 train + 3 val videos x 30 frames, 256x512);
2. for every flow network `name@flow_scale` of --flownets (`dff_tf.flownet.FLOWNET_VARIANTS`):
   pretraining on the videos' known flow (`python -m dff_tf.train_flownet`, batch 8, whole
   frames: crops that are smaller than the frames the flow network is evaluated on trained
   it worse, 8.0 vs 4.4 px validation EPE for the quarter net at 0.5 on 128x256 crops vs at
   0.25 on whole frames, bench/RESULTS.md) into `<out_dir>/flow_<name>_<flow_scale>`, unless
   --flownet_weights is given (one flow network only);
3. `python -m dff_tf.evaluate` of the untrained combination (toy-trained feature network
   --features + the pretrained flow network, N_task as trained with the feature network);
4. DFF training (`python -m dff_tf.train`, N_feat frozen, distances uniform in [0, 9]);
5. `python -m dff_tf.evaluate` of the trained DFF (4-5 skipped with --dff_steps 0).
Every evaluation scores per-frame, distances 1, 2, 3, 4, 5, 9 and key interval 5 (the mean
over distances 0..4, the DFF paper's number) on the same validation frames, and one table with
a row per flow network (and per DFF training) goes to bench/RESULTS.md with each stage's wall
time.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.common import report, run  # noqa: E402


def row(name, metrics, columns):
    cells = []
    for key in columns:
        value = metrics.get(key)
        cells.append('-' if value is None else f'{value["mIoU"] * 100:.1f}')
    base = metrics['per-frame']['mIoU'] * 100
    interval = metrics['key_interval_5']['mIoU'] * 100
    speed = metrics['speed']
    return (
        f'| {name} | ' + ' | '.join(cells) + f' | {interval - base:+.1f} | '
        f'{speed["key_fps"]:.1f} / {speed["propagate_fps"]:.1f} / '
        f'{speed["overall_fps"]:.1f} |'
    )


def parse_flownets(text):
    """'plain@0.5,quarter@0.25' -> [('plain', 0.5), ('quarter', 0.25)] (no '@': 0.5)."""
    out = []
    for item in text.split(','):
        if item.strip():
            name, _, scale = item.strip().partition('@')
            out.append((name, float(scale or 0.5)))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--features', required=True, help='toy-trained feature network weights')
    p.add_argument('--feature_net', default='icnet_bn', choices=['icnet_bn', 'pspnet101'])
    p.add_argument('--out_dir', default=os.path.join(ROOT, 'runs', 'dff_bench'))
    p.add_argument('--videos', default=None, help='toy video directory (default: out_dir/videos)')
    p.add_argument(
        '--flownets', default='plain@0.5', help='flow networks name@flow_scale, comma-separated'
    )
    p.add_argument('--flownet_weights', default=None, help='skip step 2, use these')
    p.add_argument('--flow_steps', type=int, default=1200)
    p.add_argument('--flow_learning_rate', type=float, default=2e-4)
    p.add_argument('--dff_steps', type=int, default=800, help='0: no DFF training (steps 4-5)')
    p.add_argument('--dff_batch_size', type=int, default=4)
    p.add_argument('--dff_learning_rate', type=float, default=2.5e-4)
    p.add_argument(
        '--max_samples', type=int, default=0, help='evaluate at most N frames (evenly spread)'
    )
    p.add_argument('--no_append', action='store_true', help='do not write bench/RESULTS.md')
    args = p.parse_args()
    flownets = parse_flownets(args.flownets)
    if args.flownet_weights and len(flownets) != 1:
        raise SystemExit('--flownet_weights goes with exactly one --flownets entry')

    os.makedirs(args.out_dir, exist_ok=True)
    log = os.path.join(args.out_dir, 'log.txt')
    py = sys.executable
    videos = args.videos or os.path.join(args.out_dir, 'videos')
    lists = {s: os.path.join(videos, 'list', f'video_{s}.txt') for s in ('train', 'val')}
    vjson = os.path.join(videos, 'videos.json')
    data = ['--data_list', lists['train'], '--data_dir', videos, '--videos_json', vjson]
    times = {}
    if not os.path.exists(vjson):
        times['videos'] = run(
            [
                py,
                '-m',
                'data.toycity',
                '--out_dir',
                videos,
                '--num_train',
                '0',
                '--num_val',
                '0',
                '--num_videos_train',
                '16',
                '--num_videos_val',
                '3',
            ],
            log,
        )
    evaluate = [
        py,
        '-m',
        'dff_tf.evaluate',
        '--data_list',
        lists['val'],
        '--data_dir',
        videos,
        '--videos_json',
        vjson,
        '--distances',
        '1,5,9',
        '--key_interval',
        '5',
        '--max_samples',
        str(args.max_samples),
    ]
    results, flow_dirs = {}, []
    for name, scale in flownets:
        tag = f'{name}_{scale:g}'
        label = f'{name} flow net at {scale:g}'
        flow = args.flownet_weights or os.path.join(args.out_dir, f'flow_{tag}')
        flow_dirs.append(flow)
        model = ['--flownet', name, '--flow_scale', str(scale)]
        if not args.flownet_weights and not os.path.exists(os.path.join(flow, 'checkpoint')):
            times[f'{label}: pretraining'] = run(
                [py, '-m', 'dff_tf.train_flownet', *data, '--val_list', lists['val']]
                + ['--batch_size', '8']
                + ['--learning_rate', str(args.flow_learning_rate)]
                + ['--num_steps', str(args.flow_steps), '--save_pred_every', '250']
                + model
                + ['--snapshot_dir', flow],
                log,
            )
        before = os.path.join(args.out_dir, f'eval_{tag}')
        if not os.path.exists(os.path.join(before, 'dff_metrics.json')):
            times[f'{label}: evaluation'] = run(
                evaluate
                + ['--restore_from', args.features, '--feature_net', args.feature_net]
                + ['--flownet_weights', flow, *model, '--save_dir', before],
                log,
            )
        results[f'{label}, pretrained, no DFF training'] = before
        if not args.dff_steps:
            continue
        snap = os.path.join(args.out_dir, f'dff_{tag}')
        if not os.path.exists(os.path.join(snap, f'ckpt-{args.dff_steps}.index')):
            times[f'{label}: DFF training'] = run(
                [py, '-m', 'dff_tf.train', *data, '--feature_net', args.feature_net]
                + ['--restore_from', args.features, '--flownet_weights', flow, *model]
                + ['--snapshot_dir', snap, '--batch_size', str(args.dff_batch_size)]
                + ['--learning_rate', str(args.dff_learning_rate)]
                + ['--num_steps', str(args.dff_steps), '--save_pred_every', '200']
                + ['--random_mirror'],
                log,
            )
        after = os.path.join(args.out_dir, f'eval_dff_{tag}')
        if not os.path.exists(os.path.join(after, 'dff_metrics.json')):
            times[f'{label}: evaluation after DFF training'] = run(
                evaluate + ['--restore_from', snap, '--save_dir', after], log
            )
        results[f'{label}, DFF trained {args.dff_steps} steps'] = after

    columns = [
        'per-frame',
        'distance_1',
        'distance_2',
        'distance_3',
        'distance_4',
        'distance_5',
        'distance_9',
        'key_interval_5',
    ]
    lines = [
        '| model | per-frame | d=1 | d=2 | d=3 | d=4 | d=5 | d=9 | key interval 5 | '
        'l=5 minus per-frame | frames/s key / propagated / overall l=5 |',
        '|---|' + '---|' * 10,
    ]
    frames = None
    for name, folder in results.items():
        with open(os.path.join(folder, 'dff_metrics.json')) as f:
            metrics = json.load(f)
        frames = metrics['frames']
        lines.append(row(name, metrics, columns))
    lines += [
        '',
        f'mIoU (%) on {frames} labelled validation frames (3 toy videos, 256x512); '
        f'feature net {args.feature_net} from {args.features}; flow networks from '
        f'{", ".join(flow_dirs)}.',
        'Stage wall times this run: '
        + (
            ', '.join(f'{k} {v / 60:.1f} min' for k, v in times.items())
            or 'all stages reused from an earlier run'
        )
        + '.',
    ]
    table = '\n'.join(lines)
    report(
        f'DFF accuracy on toy-city videos, {args.feature_net} features (bench/dff_accuracy.py)',
        table,
        'bench/dff_accuracy.py',
        not args.no_append,
    )


if __name__ == '__main__':
    main()
