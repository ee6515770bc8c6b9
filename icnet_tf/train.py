r"""`python -m icnet_tf.train`: train ICNet (or PSPNet101, `--model PSPNet101`) on a
Cityscapes-style list (the original train.py).

    python -m icnet_tf.train --data_list list/train.txt --data_dir DIR \
        [--dataset cityscapes|ade20k|others] [--snapshot_dir snapshots/]
        [--restore_from icnet_cityscapes_train_30k_bnnomerge.npy]
        [--batch_size 16 --input_size 720,720 --learning_rate 1e-3 --num_steps 60001 ...]
        [--random_scale --random_mirror --update_mean_var --train_beta_gamma]
        [--val_list list/val.txt] [--strategy default|mirrored|multi_worker]
        [--precision float32|mixed_float16|mixed_bfloat16]

Labelled data: a list file, or `--data_dir ROOT --split train` for an official tree (no list;
`icnet_tf.datasets.read_tree`). Labels are read by meaning for `--dataset` (Cityscapes
`*_gtFine_labelIds.png` or trainIds, ADE20K annotations with 0 ignored, palette PNGs by index,
16-bit by value; `icnet_tf.data.check_labels` validates every label before the first step).

Semantics: the network's weighted heads (`net.loss_weights`, `icnet_tf.losses`), poly
learning rate, TF1 momentum, BN in training mode with moving statistics updated only with
--update_mean_var and gamma/beta trained only with --train_beta_gamma. Training resumes from
the latest checkpoint in --snapshot_dir (weights, optimizer slots and step); otherwise it
starts from --restore_from (class heads that do not fit, e.g. another num_classes or the Caffe
files' missing auxiliary heads, are skipped with a message) or from a fresh initialisation.
"""

import sys

from absl import flags

from converters.errors import UserError
from icnet_tf import build_model, cli
from icnet_tf.cli import parse_size
from icnet_tf.data import pair_files, read_list, train_dataset
from icnet_tf.losses import PolyLR, TF1Momentum
from icnet_tf.training import (
    image_summary_hook,
    make_loss_fn,
    trained_variables,
    validation_hook,
)
from icnet_tf.weights import load_skipping_class_heads

FLAGS = flags.FLAGS


def define_flags():
    cli.define_data_flags('training list: "<image> <label>" per line (or --data_dir + --split)')
    # The original train.py's defaults (a table row per tool: kept compact on purpose).
    # fmt: off
    cli.define_training_flags(
        batch_size=16, input_size='720,720', learning_rate=1e-3, num_steps=60001,
        weight_decay=1e-4, snapshot_dir='./snapshots/', save_pred_every=50,
    )
    # fmt: on
    flags.DEFINE_bool('random_scale', False, 'random scaling in [0.5, 2.0]')
    flags.DEFINE_bool('random_mirror', False, 'random left-right mirroring')
    flags.DEFINE_bool('update_mean_var', False, 'update BN moving mean/variance')
    flags.DEFINE_bool('train_beta_gamma', False, 'train BN gamma/beta')
    flags.DEFINE_string('restore_from', None, '.npy or checkpoint to start from')
    flags.DEFINE_string('val_list', None, 'validation list for periodic mIoU')
    flags.DEFINE_integer('val_every', 0, 'validate every N steps (default: --save_pred_every)')
    flags.DEFINE_integer('val_limit', 50, 'validate on at most N images of --val_list')
    cli.define_model_flags()


def main(argv):
    del argv
    crop = parse_size(FLAGS.input_size, 'input_size')
    spec = cli.dataset_spec(restore_from=FLAGS.snapshot_dir)  # a resumed run's dataset
    pairs, where = cli.read_pairs(spec)
    labels = cli.check_labels(pairs, spec, where)
    val_pairs = val_labels = None
    if FLAGS.val_list:
        val_pairs = read_list(FLAGS.val_list, FLAGS.data_dir)[: FLAGS.val_limit]
        val_labels = cli.check_labels(val_pairs, spec, FLAGS.val_list)
    strategy, replicas = cli.strategy()
    print(
        f'{len(pairs)} training pairs ({spec.name}, {spec.num_classes} classes, '
        f'{labels.encoding} labels), {replicas} replica(s), global batch {FLAGS.batch_size}, '
        f'{FLAGS.precision}'
    )

    with strategy.scope():
        net = build_model(
            FLAGS.model,
            num_classes=spec.num_classes,
            **cli.model_options(),
            seed=FLAGS.seed,
        ).build()
        schedule = PolyLR(FLAGS.learning_rate, FLAGS.num_steps, FLAGS.power)
        optimizer = TF1Momentum(schedule, momentum=FLAGS.momentum)
    min_h, min_w = net.build_input_shape()[1:3]
    if crop[0] < min_h or crop[1] < min_w:
        raise UserError(
            f'--input_size {crop[0]},{crop[1]} is below the smallest input {FLAGS.model} '
            f'takes ({min_h}x{min_w}: its pyramid pooling needs that much)'
        )
    loss_fn = make_loss_fn(
        net,
        ignore_label=spec.ignore_label,
        weight_decay=FLAGS.weight_decay,
        update_mean_var=FLAGS.update_mean_var,
        precision=FLAGS.precision,
    )
    trainer = cli.make_trainer(
        strategy=strategy,
        model=net,
        optimizer=optimizer,
        variables=trained_variables(net, FLAGS.train_beta_gamma),
        loss_fn=loss_fn,
    )
    resumed = cli.resume(trainer)
    if not resumed:
        load_skipping_class_heads(net, FLAGS.restore_from)
        batch_norm = any(key.endswith('/mean') for key in net.param_shapes())
        if not FLAGS.restore_from and batch_norm and not FLAGS.update_mean_var:
            print(
                'note: training from scratch without --update_mean_var: the batch-norm '
                'statistics stay at mean 0, variance 1, so the network will not predict in '
                'inference mode; pass --update_mean_var --train_beta_gamma (as the demo does)',
                file=sys.stderr,
            )
    if trainer.is_chief:  # the other workers of a multi-worker run write nothing there
        cli.save_dataset(FLAGS.snapshot_dir, spec)

    files = pair_files(pairs, where, labels)  # finds a file tf.data cannot decode
    dataset = lambda input_context: train_dataset(  # one input pipeline per worker
        files.select(pairs),
        preprocess=net.preprocess,
        crop_size=crop,
        random_scale=FLAGS.random_scale,
        random_mirror=FLAGS.random_mirror,
        ignore_label=spec.ignore_label,
        labels=labels,
        **cli.stream_options(input_context),
    )
    if val_pairs:
        hooks = [image_summary_hook(net, val_pairs[0], val_labels)]
        hooks.append(
            validation_hook(net, val_pairs, ignore_label=spec.ignore_label, labels=val_labels)
        )
    else:
        hooks = [image_summary_hook(net, pairs[0], labels)]
    cli.fit(
        trainer,
        dataset,
        files,
        hooks=hooks,
        hook_every=FLAGS.val_every or FLAGS.save_pred_every,
        learning_rate=schedule,
    )


if __name__ == '__main__':
    define_flags()
    cli.run(main)
