"""Train ICNet_BN from scratch on the toy city and report the validation mIoU it reaches.

    python bench/train_toycity.py [--out_dir runs/toycity] [--num_steps 1000] [--batch_size 8]
        [--input_size 224,448] [--learning_rate 0.02]

Generates the toy city (200 train / 50 val, 256x512) if absent, runs `python -m icnet_tf.train`
(mirror, random scale unless --no-random_scale, BN statistics and gamma/beta trained, as needed
from scratch), then `python -m icnet_tf.evaluate` on the 50 validation images, and appends the
steps, wall time, mIoU, per-class IoU and the output-resolution ceiling to bench/RESULTS.md.
The checkpoint it leaves in <out_dir>/snapshots is also the "toy-trained ICNet" other
benchmarks (DFF) start from.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.common import report, run  # noqa: E402
from icnet_tf.cli import tool_command  # noqa: E402


def resolution_ceiling(label_paths, stride=4, num_classes=19, ignore_label=255):
    """mIoU of the ground truth itself seen through an output grid of `stride`.

    Each label map is sampled at the centres of its stride x stride cells and the samples are
    repeated back to full size (nearest): what a network that labels every cell of ICNet's
    1/4-resolution output correctly would score with nearest upsampling. Thin objects and
    boundaries lose pixels; bilinear upsampling of logits can place a boundary inside a cell,
    so this is an indication of the ceiling, not a strict bound. Ignore pixels are skipped, and
    so is every pixel of a cell whose sample is ignore (a generous choice, as befits a ceiling).
    Shapes not divisible by `stride` are covered by edge padding of the last cell row/column.
    """
    import numpy as np
    from PIL import Image

    from icnet_tf.metrics import confusion_matrix, scores

    cm = np.zeros((num_classes, num_classes), np.int64)
    for path in label_paths:
        label = np.asarray(Image.open(path), np.int64)
        cells = label[stride // 2 :: stride, stride // 2 :: stride]
        seen = np.repeat(np.repeat(cells, stride, 0), stride, 1)[: label.shape[0], : label.shape[1]]
        pad = ((0, label.shape[0] - seen.shape[0]), (0, label.shape[1] - seen.shape[1]))
        seen = np.pad(seen, pad, mode='edge')
        label = np.where(seen == ignore_label, ignore_label, label)
        cm += confusion_matrix(seen, label, num_classes, ignore_label)
    return scores(cm)[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out_dir', default=os.path.join(ROOT, 'runs', 'toycity'))
    p.add_argument('--num_steps', type=int, default=1000)
    p.add_argument('--batch_size', type=int, default=8)
    p.add_argument('--input_size', default='224,448')
    p.add_argument('--learning_rate', type=float, default=0.02)
    p.add_argument('--save_pred_every', type=int, default=100)
    p.add_argument(
        '--random_scale',
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the original's random scale 0.5-2.0 (--no-random_scale: crops at 1x)",
    )
    p.add_argument('--no_append', action='store_true', help='do not write bench/RESULTS.md')
    args = p.parse_args()

    data, snapshots = os.path.join(args.out_dir, 'data'), os.path.join(args.out_dir, 'snapshots')
    log = os.path.join(args.out_dir, 'log.txt')
    os.makedirs(args.out_dir, exist_ok=True)
    if not os.path.exists(os.path.join(data, 'list', 'val.txt')):
        run(tool_command('data.toycity', out_dir=data, num_videos_train=0, num_videos_val=0), log)
    train_cmd = tool_command(
        'icnet_tf.train',
        data_list=f'{data}/list/train.txt',
        data_dir=data,
        val_list=f'{data}/list/val.txt',
        val_limit=10,
        snapshot_dir=snapshots,
        batch_size=args.batch_size,
        input_size=args.input_size,
        num_steps=args.num_steps,
        learning_rate=args.learning_rate,
        save_pred_every=args.save_pred_every,
        random_mirror=True,
        update_mean_var=True,
        train_beta_gamma=True,
        model='ICNet_BN',
        random_scale=args.random_scale,
    )
    train_s = run(train_cmd, log)
    eval_dir = os.path.join(args.out_dir, 'eval')
    run(
        tool_command(
            'icnet_tf.evaluate',
            data_list=f'{data}/list/val.txt',
            data_dir=data,
            restore_from=snapshots,
            save_dir=eval_dir,
        ),
        log,
    )
    metrics = json.load(open(os.path.join(eval_dir, 'metrics.json')))
    from icnet_tf.data import read_list
    from icnet_tf.palette import CLASS_NAMES

    ceiling = resolution_ceiling([lab for _, lab in read_list(f'{data}/list/val.txt', data)])
    present = [(name, v) for name, v in zip(CLASS_NAMES, metrics['iou']) if v is not None]
    rows = [
        '| steps | batch | crop | random scale | wall time | val mIoU (50 images) | pixel acc. |',
        '|---|---|---|---|---|---|---|',
        f'| {args.num_steps} | {args.batch_size} | {args.input_size} | '
        f'{"0.5-2.0" if args.random_scale else "off"} | '
        f'{train_s / 60:.1f} min | {metrics["mIoU"] * 100:.1f} | '
        f'{metrics["pixel_accuracy"] * 100:.1f} |',
        '',
        'per-class IoU: ' + ', '.join(f'{n} {v * 100:.1f}' for n, v in present),
        '',
        f"Output-resolution ceiling: the validation labels sampled on ICNet's 1/4 output grid "
        f'and upsampled (nearest) score {ceiling * 100:.1f} mIoU.',
    ]
    table = '\n'.join(rows)
    report(
        'ICNet_BN trained from scratch on the toy city (bench/train_toycity.py)',
        table,
        'bench/train_toycity.py',
        not args.no_append,
    )


if __name__ == '__main__':
    main()
