"""`python -m icnet_tf.train`: train ICNet (or PSPNet101, `--model PSPNet101`) on a
Cityscapes-style list (the original train.py).

    python -m icnet_tf.train --data_list list/train.txt --data_dir DIR \
        [--restore_from icnet_cityscapes_train_30k_bnnomerge.npy] [--snapshot_dir snapshots/]
        [--batch_size 16 --input_size 720,720 --learning_rate 1e-3 --num_steps 60001 ...]
        [--random_scale --random_mirror --update_mean_var --train_beta_gamma]
        [--val_list list/val.txt] [--strategy default|mirrored|multi_worker]

Semantics: the network's weighted heads (`net.loss_weights`, `icnet_tf.losses`), poly
learning rate, TF1 momentum, BN in training mode with moving statistics updated only with
--update_mean_var and gamma/beta trained only with --train_beta_gamma. Training resumes from
the latest checkpoint in --snapshot_dir (weights, optimizer slots and step); otherwise it
starts from --restore_from (class heads that do not fit, e.g. another num_classes or the Caffe
files' missing auxiliary heads, are skipped with a message) or from a fresh initialisation.
"""

from absl import flags

from converters.errors import UserError
from icnet_tf import build_model, cli
from icnet_tf.cli import parse_size
from icnet_tf.data import check_labels, read_list, train_dataset
from icnet_tf.losses import PolyLR, TF1Momentum
from icnet_tf.training import (
    Trainer,
    image_summary_hook,
    make_loss_fn,
    make_strategy,
    trained_variables,
    validation_hook,
)
from icnet_tf.weights import load_skipping_class_heads

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('data_list', None, 'training list: "<image> <label>" per line')
    flags.DEFINE_string('data_dir', '', 'directory the list paths are relative to')
    flags.DEFINE_integer(
        'batch_size', 16, 'global batch size (split across replicas)', lower_bound=1
    )
    flags.DEFINE_string('input_size', '720,720', 'crop size h,w')
    flags.DEFINE_float('learning_rate', 1e-3, 'base learning rate of the poly schedule')
    flags.DEFINE_float('momentum', 0.9, 'momentum (TF1 MomentumOptimizer semantics)')
    flags.DEFINE_float('power', 0.9, 'power of the poly schedule')
    flags.DEFINE_integer('num_steps', 60001, 'number of optimizer steps', lower_bound=1)
    flags.DEFINE_float('weight_decay', 1e-4, 'L2 factor on conv kernels')
    flags.DEFINE_bool('random_scale', False, 'random scaling in [0.5, 2.0]')
    flags.DEFINE_bool('random_mirror', False, 'random left-right mirroring')
    flags.DEFINE_bool('update_mean_var', False, 'update BN moving mean/variance')
    flags.DEFINE_bool('train_beta_gamma', False, 'train BN gamma/beta')
    flags.DEFINE_integer('ignore_label', 255, 'label value ignored by the loss')
    flags.DEFINE_string('restore_from', None, '.npy or checkpoint to start from')
    flags.DEFINE_string('snapshot_dir', './snapshots/', 'checkpoints and TensorBoard logs')
    flags.DEFINE_integer('save_pred_every', 50, 'checkpoint every N steps', lower_bound=1)
    flags.DEFINE_integer('seed', 1234, 'seed of initialisation, shuffling and augmentation')
    flags.DEFINE_string('val_list', None, 'validation list for periodic mIoU')
    flags.DEFINE_integer('val_every', 0, 'validate every N steps (default: --save_pred_every)')
    flags.DEFINE_integer('val_limit', 50, 'validate on at most N images of --val_list')
    flags.DEFINE_enum(
        'strategy', 'default', ['default', 'mirrored', 'multi_worker'], 'tf.distribute strategy'
    )
    flags.mark_flag_as_required('data_list')
    cli.define_model_flags()


def main(argv):
    del argv
    crop = parse_size(FLAGS.input_size, 'input_size')
    pairs = read_list(FLAGS.data_list, FLAGS.data_dir)
    check_labels(pairs, FLAGS.num_classes, FLAGS.ignore_label, FLAGS.data_list)
    val_pairs = None
    if FLAGS.val_list:
        val_pairs = read_list(FLAGS.val_list, FLAGS.data_dir)[: FLAGS.val_limit]
        check_labels(val_pairs, FLAGS.num_classes, FLAGS.ignore_label, FLAGS.val_list)
    strategy = make_strategy(FLAGS.strategy)
    replicas = strategy.num_replicas_in_sync
    if FLAGS.batch_size % replicas:
        raise UserError(
            f'--batch_size {FLAGS.batch_size} is not divisible by the {replicas} replicas'
        )
    print(f'{len(pairs)} training pairs, {replicas} replica(s), global batch {FLAGS.batch_size}')

    with strategy.scope():
        net = build_model(
            FLAGS.model,
            num_classes=FLAGS.num_classes,
            filter_scale=FLAGS.filter_scale,
            seed=FLAGS.seed,
        ).build()
        schedule = PolyLR(FLAGS.learning_rate, FLAGS.num_steps, FLAGS.power)
        optimizer = TF1Momentum(schedule, momentum=FLAGS.momentum)
    loss_fn = make_loss_fn(
        net,
        ignore_label=FLAGS.ignore_label,
        weight_decay=FLAGS.weight_decay,
        update_mean_var=FLAGS.update_mean_var,
    )
    trainer = Trainer(
        strategy=strategy,
        model=net,
        optimizer=optimizer,
        variables=trained_variables(net, FLAGS.train_beta_gamma),
        loss_fn=loss_fn,
        snapshot_dir=FLAGS.snapshot_dir,
        save_every=FLAGS.save_pred_every,
    )
    resumed = trainer.restore()
    if resumed:
        print(f'resumed from {resumed} at step {trainer.step}')
    else:
        load_skipping_class_heads(net, FLAGS.restore_from)

    dataset = lambda input_context: train_dataset(  # one input pipeline per worker
        pairs,
        preprocess=net.preprocess,
        batch_size=FLAGS.batch_size,
        crop_size=crop,
        random_scale=FLAGS.random_scale,
        random_mirror=FLAGS.random_mirror,
        ignore_label=FLAGS.ignore_label,
        seed=FLAGS.seed,
        input_context=input_context,
    )
    hooks = [image_summary_hook(net, (val_pairs or pairs)[0])]
    if val_pairs:
        hooks.append(validation_hook(net, val_pairs, ignore_label=FLAGS.ignore_label))
    trainer.fit(
        dataset,
        FLAGS.num_steps,
        hooks=hooks,
        hook_every=FLAGS.val_every or FLAGS.save_pred_every,
        learning_rate=schedule,
    )
    print(f'done: step {trainer.step}, checkpoint {trainer.latest_checkpoint}')


if __name__ == '__main__':
    define_flags()
    cli.run(main)
