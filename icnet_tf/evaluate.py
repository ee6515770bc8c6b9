"""`python -m icnet_tf.evaluate`: mIoU of a network over a list file (the original evaluate.py).

    python -m icnet_tf.evaluate --data_list list/val.txt --data_dir DIR --restore_from W \
        [--model ICNet_BN --num_classes 19 --filter_scale 1 --ignore_label 255]
        [--input_size 1025,2049] [--flipped_eval] [--save_dir preds/]

Protocol: every image is zero-padded (after mean subtraction) to `--input_size` (the
original's Cityscapes protocol pads 1024x2048 to 1025x2049; default: the next multiple of 32),
logits are resized (align_corners=True) to the padded size, cropped back, argmax. The original
resized the padded logits straight to the label size without cropping (a small misalignment);
this port crops. `--flipped_eval` averages the softmax of the image and its mirror (the
original accepted the flag and ignored it). The confusion matrix counts pixels whose label is
not ignore_label; IoU = TP / (TP + FP + FN) per class, mIoU = mean over classes that occur in
labels or predictions (the others have no defined IoU and are printed as nan).
"""

import json
import os
import time

import numpy as np
from absl import flags
from PIL import Image

from converters.errors import UserError
from icnet_tf import build_model, cli
from icnet_tf.data import check_labels, read_list
from icnet_tf.palette import CLASS_NAMES
from icnet_tf.predict import Segmenter, read_image
from icnet_tf.training import Progress

FLAGS = flags.FLAGS


def confusion_matrix(pred, label, num_classes, ignore_label=255):
    """[C, C] counts, rows = ground truth, columns = prediction; ignore pixels skipped."""
    label = np.asarray(label).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    keep = (label != ignore_label) & (label >= 0) & (label < num_classes)
    index = label[keep] * num_classes + pred[keep]
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(cm):
    """Per-class IoU (nan where undefined), mIoU over defined classes, pixel accuracy."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = np.where(union > 0, tp / union, np.nan)
    miou = float(np.nanmean(iou)) if np.any(union > 0) else float('nan')
    accuracy = float(tp.sum() / cm.sum()) if cm.sum() else float('nan')
    return iou, miou, accuracy


def evaluate(
    net,
    pairs,
    *,
    num_classes,
    ignore_label=255,
    pad_to=None,
    flip=False,
    save_dir=None,
    list_path='list',
    progress=True,
):
    """Confusion matrix of `net` over (image, label) pairs; optionally writes trainId PNGs."""
    segmenter = Segmenter(net, pad_to=pad_to, flip=flip)
    cm = np.zeros((num_classes, num_classes), np.int64)
    bar = Progress(0, len(pairs)) if progress else None
    for index, (image_path, label_path) in enumerate(pairs):
        image = read_image(image_path)
        with Image.open(label_path) as img:
            label = np.asarray(img)
        if label.shape != image.shape[:2]:
            raise UserError(
                f'{list_path}:{index + 1}: label {label.shape} and image '
                f'{image.shape[:2]} sizes differ ({label_path})'
            )
        pred = segmenter(image)
        cm += confusion_matrix(pred, label, num_classes, ignore_label)
        if save_dir:
            name = os.path.splitext(os.path.basename(image_path))[0] + '_trainIds.png'
            Image.fromarray(pred.astype(np.uint8)).save(os.path.join(save_dir, name))
        if bar:
            bar.update(index + 1, {'mIoU': scores(cm)[1]}, force=index + 1 == len(pairs))
    if bar:
        bar.close()
    return cm


def report(cm, class_names=None):
    iou, miou, accuracy = scores(cm)
    names = class_names or [f'class {i}' for i in range(len(iou))]
    lines = [f'{name:>14s}: {value * 100:6.2f}' for name, value in zip(names, iou)]
    lines += [f'{"mIoU":>14s}: {miou * 100:6.2f}', f'{"pixel acc.":>14s}: {accuracy * 100:6.2f}']
    return '\n'.join(lines)


def main(argv):
    del argv
    pairs = read_list(FLAGS.data_list, FLAGS.data_dir)
    check_labels(pairs, FLAGS.num_classes, FLAGS.ignore_label, FLAGS.data_list)
    net = build_model(FLAGS.model, num_classes=FLAGS.num_classes, filter_scale=FLAGS.filter_scale)
    print(net.load(FLAGS.restore_from, skip=('sub4_out', 'sub24_out'), verbose=False))
    pad_to = tuple(int(v) for v in cli.csv(FLAGS.input_size)) if FLAGS.input_size else None
    if FLAGS.save_dir:
        os.makedirs(FLAGS.save_dir, exist_ok=True)
    start = time.perf_counter()
    cm = evaluate(
        net,
        pairs,
        num_classes=FLAGS.num_classes,
        ignore_label=FLAGS.ignore_label,
        pad_to=pad_to,
        flip=FLAGS.flipped_eval,
        save_dir=FLAGS.save_dir,
        list_path=FLAGS.data_list,
    )
    names = CLASS_NAMES if FLAGS.num_classes == len(CLASS_NAMES) else None
    print(report(cm, names))
    print(f'{len(pairs)} images in {time.perf_counter() - start:.1f} s')
    out_dir = FLAGS.save_dir or '.'
    np.save(os.path.join(out_dir, 'confusion_matrix.npy'), cm)
    iou, miou, accuracy = scores(cm)
    with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
        json.dump(
            {
                'mIoU': miou,
                'pixel_accuracy': accuracy,
                'iou': [None if np.isnan(v) else float(v) for v in iou],
            },
            f,
            indent=1,
        )
    print(f'wrote confusion_matrix.npy and metrics.json to {out_dir}/')


if __name__ == '__main__':
    flags.DEFINE_string('data_list', None, 'list file: "<image> <label>" per line')
    flags.DEFINE_string('data_dir', '', 'directory the list paths are relative to')
    flags.DEFINE_string('restore_from', None, '.npy, checkpoint directory or prefix')
    flags.DEFINE_integer('ignore_label', 255, 'label value excluded from the metric')
    flags.DEFINE_string('input_size', None, 'pad images to H,W (Cityscapes: 1025,2049)')
    flags.DEFINE_bool('flipped_eval', False, 'average with the mirrored image')
    flags.DEFINE_string('save_dir', None, 'write predictions as trainId PNGs here')
    flags.mark_flags_as_required(['data_list', 'restore_from'])
    cli.define_model_flags()
    cli.run(main)
