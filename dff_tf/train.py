r"""`python -m dff_tf.train`: train Deep Feature Flow on (key, current, label) pairs of videos.

    python -m dff_tf.train --data_list list/video_train.txt --data_dir DIR \
        [--videos_json DIR/videos.json] [--feature_net pspnet101|icnet_bn|icnet]
        [--restore_from FEATURE_NET_WEIGHTS (.npy / checkpoint / .pth)]
        [--flownet_weights flownets_EPE1.951.pth] [--snapshot_dir snapshots_dff/]
        [--batch_size 4 --input_size 512,1024 --learning_rate 2.5e-4 --num_steps 20000]
        [--key_distance D] [--scale_field] [--train_feature_net] [--strategy mirrored]
        [--precision float32|mixed_float16|mixed_bfloat16]

Semantics: each sample is a labelled frame t, a key frame t - d with d
uniform in [0, --max_key_distance] (or fixed --key_distance), clamped to the sequence start
(`dff_tf.data`), and the label of t; the loss is the mean cross entropy of the propagated
logits over pixels whose label is < num_classes and != --ignore_label (labels
nearest-resized to the logits, `icnet_tf.losses.segmentation_loss`), plus --weight_decay on the
trained conv kernels. FlowNetS, N_task (and the scale field's weights) are trained; N_feat is
frozen unless --train_feature_net. Poly learning rate, TF1 momentum, checkpoints, resume,
NaN stop, progress and TensorBoard are `icnet_tf.training.Trainer`'s. The model's
configuration is written to `<snapshot_dir>/dff_config.json`, so evaluate/inference/export
rebuild the same model from the snapshot directory alone.
"""

import os

from absl import flags

from dff_tf.cli import (
    define_model_flags,
    define_video_data_flags,
    model_and_dataset,
)
from dff_tf.data import MAX_KEY_DISTANCE, first_frame_size, read_video_list, train_dataset
from dff_tf.model import (
    CONFIG_NAME,
    build_dff,
    check_frame_size,
    load_weights,
)
from icnet_tf import cli
from icnet_tf.cli import parse_size
from icnet_tf.losses import PolyLR, TF1Momentum, segmentation_loss
from icnet_tf.training import compute_dtype

FLAGS = flags.FLAGS


def define_flags():
    define_video_data_flags()
    # The original DFF's defaults (a table row per tool: kept compact on purpose).
    # fmt: off
    cli.define_training_flags(
        batch_size=4, input_size='', learning_rate=2.5e-4, num_steps=20000, weight_decay=5e-4,
        snapshot_dir='./snapshots_dff/', save_pred_every=500,
        input_size_help='crop size h,w (default: the frame size)',
        learning_rate_help='base learning rate of the poly schedule (the original DFF: 0.00025)',
        weight_decay_help='L2 factor on the trained conv kernels (the original DFF: 0.0005)',
    )
    # fmt: on
    flags.DEFINE_integer(
        'key_distance',
        None,
        'fixed key distance (default: uniform in [0, --max_key_distance])',
        lower_bound=0,
    )
    flags.DEFINE_integer(
        'max_key_distance', MAX_KEY_DISTANCE, 'largest sampled key distance', lower_bound=0
    )
    flags.DEFINE_bool('train_feature_net', False, 'also train N_feat (default: frozen)')
    flags.DEFINE_bool('random_mirror', False, 'random left-right mirroring (same for the pair)')
    flags.DEFINE_string(
        'restore_from', None, 'feature-network weights (.npy, checkpoint, .pth) or a DFF checkpoint'
    )
    flags.DEFINE_string(
        'flownet_weights',
        None,
        'FlowNetS weights (.pth/.pth.tar of FlowNetPytorch, or a checkpoint)',
    )
    flags.mark_flag_as_required('data_list')
    define_model_flags()


def make_loss_fn(dff, *, ignore_label, weight_decay, precision='float32'):
    """The replica loss of one ((key, current), label) batch and its parts (the networks in
    the compute dtype of `precision`, the loss in float32)."""
    dtype = compute_dtype(precision)

    def loss_fn(batch):
        (key, current), labels = batch
        logits = dff(key, current, training=True, compute_dtype=dtype)
        return segmentation_loss(
            {'xent': logits},
            labels,
            head_weights={'xent': 1.0},
            num_classes=dff.num_classes,
            ignore_label=ignore_label,
            weight_decay=weight_decay,
            conv_weights=dff.conv_weights(),
        )

    return loss_fn


def main(argv):
    del argv
    config, spec = model_and_dataset(
        FLAGS.restore_from,
        train_feature_net=FLAGS.train_feature_net,
        snapshot_dir=FLAGS.snapshot_dir,
        flownet_weights=FLAGS.flownet_weights,
    )
    videos = read_video_list(FLAGS.data_list, FLAGS.data_dir, FLAGS.videos_json)
    labels = cli.check_labels([(s.image, s.label) for s in videos.samples], spec, FLAGS.data_list)
    crop = (
        parse_size(FLAGS.input_size, 'input_size') if FLAGS.input_size else first_frame_size(videos)
    )
    strategy, replicas = cli.strategy()
    with strategy.scope():
        dff = build_dff(config, seed=FLAGS.seed)
        schedule = PolyLR(FLAGS.learning_rate, FLAGS.num_steps, FLAGS.power)
        optimizer = TF1Momentum(schedule, momentum=FLAGS.momentum)
    check_frame_size(dff, *crop, '--input_size')
    distance = (
        f'key distance {FLAGS.key_distance}'
        if FLAGS.key_distance is not None
        else f'key distance uniform in [0, {FLAGS.max_key_distance}]'
    )
    print(
        f'{len(videos)} labelled frames in {len(videos.frames)} sequences ({spec.name}, '
        f'{labels.encoding} labels), {distance}, '
        f'crop {crop[0]}x{crop[1]}, {replicas} replica(s), global batch {FLAGS.batch_size}, '
        f'{FLAGS.precision}; '
        f'DFF({dff.feature_net_name}, flownet={config["flownet"]}, '
        f'flow_scale={dff.flow_scale}, '
        f'scale_field={dff.scale_field is not None}), N_feat '
        f'{"trained" if dff.train_feature_net else "frozen"}'
    )

    trainer = cli.make_trainer(
        strategy=strategy,
        model=dff,
        optimizer=optimizer,
        variables=dff.trained_variables(),
        loss_fn=make_loss_fn(
            dff,
            ignore_label=spec.ignore_label,
            weight_decay=FLAGS.weight_decay,
            precision=FLAGS.precision,
        ),
    )
    resumed = cli.resume(trainer)
    if not resumed:
        if not FLAGS.restore_from:
            print('no --restore_from: the feature network starts from a fresh initialisation')
        if not FLAGS.flownet_weights:
            print('no --flownet_weights: FlowNetS starts from a fresh initialisation')
        load_weights(dff, FLAGS.restore_from, FLAGS.flownet_weights, fresh_heads=True)
    if trainer.is_chief:  # the other workers of a multi-worker run write nothing there
        cli.record_json(os.path.join(FLAGS.snapshot_dir, CONFIG_NAME), dff.get_config(), 'model')
        cli.save_dataset(FLAGS.snapshot_dir, spec)

    max_distance = FLAGS.key_distance if FLAGS.key_distance is not None else FLAGS.max_key_distance
    files = videos.sample_files(max_distance, labels)  # finds a file tf.data cannot decode
    dataset = lambda input_context: train_dataset(  # one input pipeline per worker
        videos.subset(files.kept),
        crop_size=crop,
        key_distance=FLAGS.key_distance,
        max_distance=FLAGS.max_key_distance,
        random_mirror=FLAGS.random_mirror,
        ignore_label=spec.ignore_label,
        labels=labels,
        **cli.stream_options(input_context),
    )
    cli.fit(trainer, dataset, files, learning_rate=schedule)


if __name__ == '__main__':
    define_flags()
    cli.run(main)
