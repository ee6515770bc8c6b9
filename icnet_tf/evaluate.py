"""`python -m icnet_tf.evaluate`: mIoU of a network over a list file (the original evaluate.py).

    python -m icnet_tf.evaluate --data_list list/val.txt --data_dir DIR --restore_from W \
        [--model ICNet_BN --num_classes 19 --filter_scale 1 --ignore_label 255]
        [--input_size 1025,2049] [--flipped_eval] [--save_dir preds/]

Protocol: every image is zero-padded (after the network's preprocessing) to `--input_size` (the
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

from icnet_tf import build_model, cli
from icnet_tf.data import check_labels, read_list
from icnet_tf.metrics import evaluate, report, scores
from icnet_tf.palette import CLASS_NAMES

FLAGS = flags.FLAGS


def main(argv):
    del argv
    pairs = read_list(FLAGS.data_list, FLAGS.data_dir)
    check_labels(pairs, FLAGS.num_classes, FLAGS.ignore_label, FLAGS.data_list)
    net = build_model(FLAGS.model, num_classes=FLAGS.num_classes, filter_scale=FLAGS.filter_scale)
    print(net.load(FLAGS.restore_from, skip=tuple(net.aux_heads), verbose=False))
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
