"""`python -m icnet_tf.export`: a SavedModel (and optionally TFLite) of any registered network.

    python -m icnet_tf.export --restore_from W --model ICNet_BN [--dataset cityscapes|ade20k|others]
        [--filter_scale 1] --export_dir DIR [--serving_size H,W] [--no_probabilities]
        [--tflite --input_size 1024,2048]

The SavedModel's `serving_default` signature takes `images`: uint8 RGB `[N, H, W, 3]` of any
height and width (a fixed one with `--serving_size`, which networks with static pyramid
pooling such as PSPNet101 need) and returns `labels` (int32 `[N, H, W]`, trainIds) and, unless
--no_probabilities, `probabilities` (float32 `[N, H, W, C]`); see `icnet_tf.serving`. It
declares `images` of any shape and checks it: other input (gray, RGBA, unbatched, empty, or
another size than `--serving_size`) fails with an InvalidArgumentError saying `images: expected
uint8 RGB [N, H, W, 3] ...` and the shape received (`saved_model_cli` shows `unknown_rank`). The
network's declared exact rewrites are applied (`icnet_tf.rewrites`; for ICNet: batch norm
folded into the merged `ICNet`, the zoom rewrites, the channel swap folded into the first
convolutions, labels-only upsampling where labels can change); --nooptimize applies only
batch-norm folding. `--tflite` additionally writes `model.tflite` for one fixed `--input_size`
from the graph with the rewrites TFLite takes (`serving_network(tflite=True)`: all of ICNet's
but the sparse label upsampling, slower on TFLite's kernels), and checks that it runs with the
XNNPACK delegate and agrees with the SavedModel on a test image. The class count comes from
`--dataset` (or `--num_classes`), and the dataset is recorded in the SavedModel's metadata, so
that `icnet_tf.inference` names and colours its classes without being told again.

Load the result with `tf.saved_model.load(DIR).signatures['serving_default']`, or pass DIR as
`--restore_from` to `python -m icnet_tf.inference`.
"""

import logging
import os
import time

import numpy as np
import tensorflow as tf
from absl import flags
from absl import logging as absl_logging

from converters.errors import UserError
from icnet_tf import build_model, cli
from icnet_tf.datasets import to_record
from icnet_tf.rewrites import applied_rewrites
from icnet_tf.serving import (
    SIGNATURE,
    export_saved_model,
    is_saved_model,
    sample_image,
    tflite_interpreter,
    tflite_model,
    xnnpack_partitions,
)

FLAGS = flags.FLAGS


def main(argv):
    del argv
    tf.get_logger().setLevel(logging.ERROR)  # SavedModel/converter INFO chatter
    absl_logging.set_verbosity(absl_logging.WARNING)  # SavedModel's absl INFO lines
    cli.check_output_dir(FLAGS.export_dir, 'export_dir', FLAGS.overwrite)
    if FLAGS.tflite and not FLAGS.input_size:
        raise UserError('--tflite needs --input_size H,W (TFLite models have a fixed size)')
    if FLAGS.input_size and not FLAGS.tflite:
        raise UserError(
            '--input_size is the size of the TFLite model (with --tflite); the SavedModel takes '
            'any size, or one fixed with --serving_size H,W'
        )
    tflite_size = cli.parse_size(FLAGS.input_size, 'input_size') if FLAGS.tflite else None
    serving_size = (
        cli.parse_size(FLAGS.serving_size, 'serving_size') if FLAGS.serving_size else None
    )
    spec = cli.dataset_spec(restore_from=FLAGS.restore_from)
    try:
        net = build_model(FLAGS.model, num_classes=spec.num_classes, **cli.model_options())
    except ValueError as e:
        raise UserError(str(e)) from None
    if FLAGS.restore_from and is_saved_model(FLAGS.restore_from):
        raise UserError(f'{FLAGS.restore_from}: is already an exported SavedModel')
    cli.load_or_warn(
        net, FLAGS.restore_from, 'exporting RANDOM weights (useful for tests and benchmarks only)'
    )
    start = time.perf_counter()
    with cli.replacing_dir(FLAGS.export_dir) as tmp:
        module = export_saved_model(
            net,
            tmp,
            probabilities=not FLAGS.no_probabilities,
            optimize=FLAGS.optimize,
            input_size=serving_size,
            metadata=dict(
                model=FLAGS.model, restore_from=FLAGS.restore_from, dataset=to_record(spec)
            ),
        )
    applied = applied_rewrites(net, FLAGS.optimize)
    outputs = 'labels' + ('' if FLAGS.no_probabilities else ', probabilities')
    print(
        f'wrote SavedModel to {os.path.join(FLAGS.export_dir, "")} in '
        f'{time.perf_counter() - start:.1f} s: '
        f'{type(net).__name__} served as {type(module.net).__name__} '
        f'({len(module.net.params)} layers with weights; rewrites: '
        f'{", ".join(applied) or "none"}); '
        f'signature {SIGNATURE!r}: images uint8 [N, H, W, 3] -> {outputs}'
    )
    if tflite_size:
        h, w = tflite_size
        content = tflite_model(
            net, (h, w), probabilities=not FLAGS.no_probabilities, optimize=FLAGS.optimize
        )
        path = os.path.join(FLAGS.export_dir, 'model.tflite')
        with open(path + '.tmp', 'wb') as f:
            f.write(content)
        os.replace(path + '.tmp', path)
        image = sample_image(h, w)
        interpreter = tflite_interpreter(content)
        got = interpreter.get_signature_runner()(images=image)['labels']
        ref = module.serve(tf.constant(image))['labels'].numpy()
        agreement = float(np.mean(got == ref))
        rewrites = applied_rewrites(net, FLAGS.optimize, tflite=True)
        print(
            f'wrote {path} ({len(content) / 1e6:.1f} MB, input uint8 [1, {h}, {w}, 3]; '
            f'rewrites: {", ".join(rewrites) or "none"}); it runs with '
            f'{xnnpack_partitions(interpreter)} XNNPACK partitions and agrees with the '
            f'SavedModel on {agreement * 100:.3f}% of the pixels of a test image'
        )


if __name__ == '__main__':
    flags.DEFINE_string('restore_from', None, '.npy, checkpoint directory or prefix')
    flags.DEFINE_string('export_dir', None, 'directory to write the SavedModel to')
    flags.DEFINE_string(
        'serving_size', None, 'H,W: fix the SavedModel input size (PSPNet101 needs one)'
    )
    flags.DEFINE_bool('no_probabilities', False, 'export only the labels output')
    flags.DEFINE_bool('optimize', True, "apply the network's exact serving-graph rewrites")
    flags.DEFINE_bool('tflite', False, 'also write model.tflite for a fixed --input_size')
    flags.DEFINE_string('input_size', None, 'H,W of the TFLite model, e.g. 1024,2048')
    flags.DEFINE_bool('overwrite', False, 'allow writing into a non-empty --export_dir')
    cli.define_model_flags()
    cli.run(main)
