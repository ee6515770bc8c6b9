r"""`python -m icnet_tf.evaluate`: mIoU of a network over a list file (the original evaluate.py).

    python -m icnet_tf.evaluate --data_list list/val.txt --data_dir DIR --restore_from W \
        [--dataset cityscapes|ade20k|others] [--model ICNet_BN --filter_scale 1]
        [--input_size 1025,2049 | --protocol dataset|whole] [--flipped_eval]
        [--save_dir preds/ --output_format trainIds,labelIds,color,overlay] [--overwrite]
    python -m icnet_tf.evaluate --data_dir /data/cityscapes --split val --restore_from W

Labels are read by meaning for `--dataset` (`icnet_tf.data.check_labels` first validates every
label: one encoding per list, values of that encoding, the image's size). Cityscapes
`*_gtFine_labelIds.png` go through the official labelId -> trainId table.

Protocol (`--protocol dataset`, the default): the dataset's evaluation protocol, as the
original's `_eval_preprocess`. Cityscapes: every image zero-padded (after the network's
preprocessing) to 1025x2049, logits resized (align_corners=True) to the padded size, cropped
back, argmax (the original resized the padded logits straight to the label size without
cropping, a small misalignment; this port crops). ADE20K: the image resized to 480x480
(bilinear, align_corners=True) and the logits resized straight to the label size. `others`
and `--protocol whole`: each image at its own size, padded to multiples of 32. `--input_size
H,W` pads every image to H,W instead; an image larger than the padding size is an error.
`--flipped_eval` averages the softmax of the image and its mirror (the original accepted the
flag and ignored it).

Scores: the confusion matrix counts pixels whose label is not ignored; IoU = TP / (TP + FP +
FN) per class, mIoU = mean over classes that occur in labels or predictions (the others have
no defined IoU and are printed as nan); Cityscapes also gets the IoU of its 7 categories.
`metrics.json` and `confusion_matrix.npy` go to --save_dir (default: the current folder);
existing files are never replaced without --overwrite. With --save_dir the predictions are
written as `<stem>_<format>.png` for each --output_format (default trainIds).
"""

import os
import time

import numpy as np
from absl import flags

from icnet_tf import build_model, cli
from icnet_tf.labels import check_outputs, output_stems
from icnet_tf.metrics import evaluate, metrics_dict, report

FLAGS = flags.FLAGS
OUTPUTS = ('confusion_matrix.npy', 'metrics.json')


def main(argv):
    del argv
    spec = cli.dataset_spec(restore_from=FLAGS.restore_from)
    protocol = cli.protocol(spec)
    formats = cli.output_formats()
    if FLAGS['output_format'].present and not FLAGS.save_dir:
        raise cli.UserError('--output_format needs --save_dir (where the PNGs go)')
    out_dir = FLAGS.save_dir or '.'
    cli.refuse_existing([os.path.join(out_dir, name) for name in OUTPUTS], FLAGS.overwrite)
    pairs, where = cli.read_pairs(spec)
    if FLAGS.save_dir:
        cli.check_save_dir(FLAGS.save_dir, [p for pair in pairs for p in pair])
        stems = output_stems([image for image, _ in pairs]).values()
        check_outputs(FLAGS.save_dir, stems, formats, FLAGS.overwrite)
    labels = cli.check_labels(pairs, spec, where, protocol)
    net = build_model(FLAGS.model, num_classes=spec.num_classes, **cli.model_options())
    print(net.load(FLAGS.restore_from, skip=tuple(net.aux_heads), verbose=False))
    print(
        f'{len(pairs)} images of {spec.name} ({spec.num_classes} classes, '
        f'{labels.encoding} labels), {protocol.describe()}'
    )
    if FLAGS.save_dir:
        os.makedirs(FLAGS.save_dir, exist_ok=True)
    start = time.perf_counter()
    cm = evaluate(
        net,
        pairs,
        labels=labels,
        **protocol.options(),
        flip=FLAGS.flipped_eval,
        save_dir=FLAGS.save_dir,
        formats=formats,
        overwrite=FLAGS.overwrite,
        list_path=where or FLAGS.data_dir,
    )
    print(report(cm, spec.class_names, spec.categories, spec.category_of))
    print(f'{len(pairs)} images in {time.perf_counter() - start:.1f} s')
    tmp = os.path.join(out_dir, f'.confusion_matrix.{os.getpid()}.npy')
    np.save(tmp, cm)
    os.replace(tmp, os.path.join(out_dir, 'confusion_matrix.npy'))
    cli.write_json(os.path.join(out_dir, 'metrics.json'), metrics_dict(cm, spec))
    written = f'; {", ".join(f"*_{f}.png" for f in formats)}' if FLAGS.save_dir else ''
    print(f'wrote confusion_matrix.npy and metrics.json{written} to {os.path.join(out_dir, "")}')


if __name__ == '__main__':
    cli.define_data_flags('list file: "<image> <label>" per line (or --data_dir + --split)')
    flags.DEFINE_string('restore_from', None, '.npy, checkpoint directory or prefix')
    cli.define_protocol_flags('dataset')
    flags.DEFINE_bool('flipped_eval', False, 'average with the mirrored image')
    cli.define_output_flags(
        None, 'trainIds', 'write metrics and the predictions here (default: metrics to .)'
    )
    flags.mark_flags_as_required(['restore_from'])
    cli.define_model_flags()
    cli.run(main)
