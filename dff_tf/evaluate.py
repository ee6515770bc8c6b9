r"""`python -m dff_tf.evaluate`: mIoU of DFF at key distances {1, 5, 9} and of the per-frame
baseline on the same frames, plus frames/s.

    python -m dff_tf.evaluate --data_list list/video_val.txt --data_dir DIR \
        --restore_from snapshots_dff/ [--flownet_weights W] [--videos_json DIR/videos.json]
        [--distances 1,5,9] [--key_interval 5] [--max_samples N] [--save_dir out/]
        [--dataset cityscapes|ade20k|others] [--overwrite]

Protocol. A labelled frame t is evaluated when frames t - d exist in its sequence for every
d in --distances (toy city videos: every labelled frame t >= max(d); Cityscapes
`leftImg8bit_sequence`: the annotated `*_000019_*` frame, keys 19 - d, label from `gtFine`),
so every setting is scored on exactly the same frames:
  * per-frame: N_feat + N_task on frame t (the feature network alone, = DFF at distance 0);
  * distance d: N_feat on frame t - d, then FlowNetS(t, t - d), warp and N_task;
  * key interval l (`--key_interval`, with `--interval_miou`, the default): DFF run with a key
    frame every l frames sees each distance 0..l-1 equally often, so its mIoU is that of the
    summed confusion matrices of per-frame (distance 0) and distances 1..l-1 (evaluated too);
    this is the number the DFF paper reports (69.2 vs 71.1 per-frame at l = 5).
Logits are resized to the frame the feature network's way (ICNet / Caffe PSPNet:
align_corners=True) and argmaxed; frames are used at their size, without padding. The
confusion matrix skips ignore_label pixels; mIoU is over classes present in labels or
predictions (`icnet_tf.metrics.scores`). Labels are read by meaning for --dataset (default: the
one recorded next to the DFF checkpoint), validated first (`icnet_tf.data.check_labels`).

Speed: every key step (N_feat + N_task + resize + argmax) and propagation step (FlowNetS +
warp + N_task + resize + argmax) is timed (compiled, batch 1, input already decoded; the first
call of each kind, which traces, is left out). Frames/s = 1 / median; overall at key interval
l = l / (t_key + (l - 1) t_propagate). Everything goes to `<save_dir>/dff_metrics.json`, which
is never replaced without --overwrite.
"""

import os
import time

import numpy as np
from absl import flags

from converters.errors import UserError
from dff_tf.cli import (
    define_model_flags,
    define_video_data_flags,
    define_weights_flags,
    model_and_dataset,
)
from dff_tf.data import read_video_list
from dff_tf.model import VideoRunner, build_dff, check_frame_size, load_weights
from icnet_tf import cli
from icnet_tf.datasets import others
from icnet_tf.labels import read_label
from icnet_tf.metrics import confusion_matrix, scores
from icnet_tf.predict import read_image
from icnet_tf.training import Progress

FLAGS = flags.FLAGS
BASELINE = 'per-frame'


def parse_distances(text):
    try:
        values = sorted({int(v) for v in cli.csv(text)})
    except ValueError:
        raise UserError(f'--distances must be comma-separated integers, got {text!r}') from None
    if not values or values[0] < 1:
        raise UserError(f'--distances must be positive integers, got {text!r}')
    return values


def spread(items, limit):
    """At most `limit` items, evenly spread over the list (all of them for limit 0)."""
    if not limit or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def evaluate(
    dff,
    videos,
    distances,
    *,
    num_classes,
    ignore_label=255,
    key_interval=5,
    max_samples=0,
    progress=True,
    labels=None,
):
    """Confusion matrices {'per-frame': cm, 1: cm, 5: cm, ...}, the runner (timings), the
    number of evaluated frames. `labels`: the list's `icnet_tf.data.LabelFormat` (train ids
    by meaning; `check_labels` has validated values and sizes); None reads train ids."""
    samples = [
        s for s in videos.samples if all(videos.exact_key(s, d) is not None for d in distances)
    ]
    if not samples:
        raise UserError(
            f'{videos.list_path}: no labelled frame has frames at all distances '
            f'{distances} before it in its sequence (the key interval l adds 1..l-1): give '
            'smaller --distances / --key_interval, or longer videos'
        )
    samples = spread(samples, max_samples)
    runner = VideoRunner(dff, key_interval=key_interval)
    cms = {k: np.zeros((num_classes, num_classes), np.int64) for k in [BASELINE, *distances]}
    bar = Progress(0, len(samples)) if progress else None
    checked = set()
    if labels is None:
        spec = others(num_classes, ignore_label)
        read = lambda p: read_label(p, spec)  # noqa: E731
    else:
        read = labels.read
    for index, sample in enumerate(samples):
        where = f'{videos.list_path}:{sample.line}'
        current = read_image(sample.image)
        label = read(sample.label)
        if label.shape != current.shape[:2]:
            raise UserError(
                f'{where}: label {label.shape} and image {current.shape[:2]} sizes differ '
                f'({sample.label})'
            )
        if current.shape not in checked:
            check_frame_size(dff, *current.shape[:2], f'{sample.image}: frame size')
            checked.add(current.shape)
        _, pred = runner.key_step(current)
        cms[BASELINE] += confusion_matrix(pred, label, num_classes, ignore_label)
        for d in distances:
            key = read_image(videos.exact_key(sample, d))
            if key.shape != current.shape:
                raise UserError(
                    f'{where}: key frame {videos.exact_key(sample, d)} is '
                    f'{key.shape[:2]}, the frame {current.shape[:2]}'
                )
            features, _ = runner.key_step(key)
            pred = runner.propagate_step(features, key, current)
            cms[d] += confusion_matrix(pred, label, num_classes, ignore_label)
        if bar:
            bar.update(
                index + 1,
                {
                    'mIoU per-frame': scores(cms[BASELINE])[1],
                    f'd={distances[-1]}': scores(cms[distances[-1]])[1],
                },
                force=index + 1 == len(samples),
            )
    if bar:
        bar.close()
    return cms, runner, len(samples)


def add_interval(cms, key_interval):
    """cms plus `'l=<key_interval>'`: per-frame + distances 1..l-1 summed (all required)."""
    parts = [BASELINE, *range(1, key_interval)]
    missing = [d for d in parts if d not in cms]
    if missing:
        raise ValueError(f'key interval {key_interval} needs distances {missing}')
    return dict(cms, **{f'l={key_interval}': sum(cms[d] for d in parts)})


def _column(key):
    return key if isinstance(key, str) else f'd={key}'


def summary(cms, speed, class_names=None):
    """The printed report: per-class IoU columns, mIoU and pixel accuracy rows, speed."""
    keys = list(cms)
    header = [_column(k) for k in keys]
    results = {k: scores(cms[k]) for k in keys}
    num = len(results[keys[0]][0])
    names = class_names or [f'class {i}' for i in range(num)]
    width = max(14, *(len(n) for n in names))
    lines = [f'{"IoU (%)":>{width}s} ' + ' '.join(f'{h:>9s}' for h in header)]
    for c in range(num):
        values = [results[k][0][c] for k in keys]
        if all(np.isnan(v) for v in values):
            continue
        lines.append(f'{names[c]:>{width}s} ' + ' '.join(f'{v * 100:9.2f}' for v in values))
    lines.append(f'{"mIoU":>{width}s} ' + ' '.join(f'{results[k][1] * 100:9.2f}' for k in keys))
    lines.append(
        f'{"pixel acc.":>{width}s} ' + ' '.join(f'{results[k][2] * 100:9.2f}' for k in keys)
    )
    n = speed['samples']
    lines.append(
        f'speed (medians of {max(n["key"] - 1, 1)} key and {max(n["propagate"] - 1, 1)} '
        f'propagation steps): key frames {speed["key_fps"]:.2f} frames/s, propagated frames '
        f'{speed["propagate_fps"]:.2f} frames/s '
        f'({speed["propagate_fps"] / speed["key_fps"]:.2f}x), '
        f'overall at key interval {speed["key_interval"]} {speed["overall_fps"]:.2f} frames/s '
        f'vs per-frame {speed["key_fps"]:.2f} frames/s'
    )
    return '\n'.join(lines)


def metrics(cms, speed, num_frames, config):
    out = {'frames': num_frames, 'model': config, 'speed': speed}
    for k, cm in cms.items():
        iou, miou, accuracy = scores(cm)
        name = (
            k
            if k == BASELINE
            else f'key_interval_{k[2:]}'
            if isinstance(k, str)
            else f'distance_{k}'
        )
        out[name] = {
            'mIoU': miou,
            'pixel_accuracy': accuracy,
            'iou': [None if np.isnan(v) else float(v) for v in iou],
        }
    return out


def main(argv):
    del argv
    distances = parse_distances(FLAGS.distances)
    if FLAGS.interval_miou:
        distances = sorted(set(distances) | set(range(1, FLAGS.key_interval)))
    path = os.path.join(FLAGS.save_dir or '.', 'dff_metrics.json')
    cli.refuse_existing([path], FLAGS.overwrite)
    videos = read_video_list(FLAGS.data_list, FLAGS.data_dir, FLAGS.videos_json)
    config, spec = model_and_dataset(FLAGS.restore_from, flownet_weights=FLAGS.flownet_weights)
    labels = cli.check_labels([(s.image, s.label) for s in videos.samples], spec, FLAGS.data_list)
    dff = build_dff(config)
    load_weights(dff, FLAGS.restore_from, FLAGS.flownet_weights)
    start = time.perf_counter()
    cms, runner, count = evaluate(
        dff,
        videos,
        distances,
        num_classes=dff.num_classes,
        ignore_label=spec.ignore_label,
        key_interval=FLAGS.key_interval,
        max_samples=FLAGS.max_samples,
        labels=labels,
    )
    speed = runner.speed()
    if FLAGS.interval_miou:
        cms = add_interval(cms, FLAGS.key_interval)
    print(
        f'{count} labelled frames x ({len(distances)} distances + per-frame) in '
        f'{time.perf_counter() - start:.1f} s; DFF({dff.feature_net_name}), {spec.name}'
    )
    print(summary(cms, speed, spec.class_names))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cli.write_json(path, metrics(cms, speed, count, dff.get_config()))
    print(f'wrote {path}')


def define_flags():
    define_video_data_flags()
    define_weights_flags()
    flags.DEFINE_string('distances', '1,5,9', 'key-frame distances to evaluate')
    flags.DEFINE_integer(
        'key_interval',
        5,
        'key interval of the overall frames/s and of the interval mIoU',
        lower_bound=1,
    )
    flags.DEFINE_bool(
        'interval_miou',
        True,
        'also score a key frame every --key_interval '
        'frames (mean over distances 0..l-1; evaluates those distances too)',
    )
    flags.DEFINE_integer(
        'max_samples',
        0,
        'evaluate at most N labelled frames, evenly spread over the list (0: all)',
        lower_bound=0,
    )
    flags.DEFINE_string('save_dir', None, 'where to write dff_metrics.json (default: .)')
    flags.DEFINE_bool('overwrite', False, 'replace an existing dff_metrics.json')
    flags.mark_flags_as_required(['data_list'])
    define_model_flags()


if __name__ == '__main__':
    define_flags()
    cli.run(main)
