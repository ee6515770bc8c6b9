"""`python -m icnet_tf.train`: train ICNet (or PSPNet101, `--model PSPNet101`) on a
Cityscapes-style list (the original train.py).

    python -m icnet_tf.train --data_list list/train.txt --data_dir DIR \
        [--restore_from icnet_cityscapes_train_30k_bnnomerge.npy] [--snapshot_dir snapshots/]
        [--batch_size 16 --input_size 720,720 --learning_rate 1e-3 --num_steps 60001 ...]
        [--random_scale --random_mirror --update_mean_var --train_beta_gamma]
        [--val_list list/val.txt] [--strategy default|mirrored|multi_worker]

Semantics (SPEC section 4): the three-head loss of `icnet_tf.losses`, poly learning rate, TF1
momentum, BN in training mode with moving statistics updated only with --update_mean_var and
gamma/beta trained only with --train_beta_gamma. Training resumes from the latest checkpoint in
--snapshot_dir (weights, optimizer slots and step); otherwise it starts from --restore_from
(class heads that do not fit, e.g. another num_classes or the Caffe files' missing auxiliary
heads, are skipped with a message) or from a fresh initialisation.
"""

import numpy as np
import tensorflow as tf
from absl import flags

from converters.errors import UserError
from icnet_tf import build_model, cli
from icnet_tf.data import check_labels, read_list, train_dataset
from icnet_tf.losses import HEAD_WEIGHTS, PolyLR, TF1Momentum, icnet_loss
from icnet_tf.palette import colorize
from icnet_tf.predict import Segmenter, read_image
from icnet_tf.training import Trainer, make_strategy
from icnet_tf.weights import HEAD_LAYERS, compare, read_weights

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


def parse_size(text, name):
    try:
        h, w = (int(v) for v in cli.csv(text))
    except ValueError:
        raise UserError(f'--{name} must be "height,width", got {text!r}') from None
    if h < 1 or w < 1:
        raise UserError(f'--{name} must be positive, got {text!r}')
    return h, w


def initialise(net, restore_from):
    """Load --restore_from, skipping class heads that do not fit (with a message)."""
    if not restore_from:
        print('no --restore_from: training from a fresh (He-normal) initialisation')
        return
    weights = read_weights(restore_from, net)
    net.build()
    report, _ = compare(net.param_shapes(), weights)
    bad = {k.split('/')[0] for k in report.missing + [m[0] for m in report.mismatched]}
    heads = sorted(bad & set(HEAD_LAYERS))
    if bad - set(HEAD_LAYERS) or report.unexpected:
        net.load(weights)  # raises the full strict report
    if heads:
        print(
            f'{restore_from}: class heads {", ".join(heads)} not loaded (absent from the '
            'file or another num_classes): they start from a fresh initialisation'
        )
    report = net.load(weights, skip=heads, verbose=False)
    report.source = restore_from
    print(report)


def trained_variables(net, train_beta_gamma):
    """Every trainable variable, minus BN gamma/beta unless --train_beta_gamma."""
    affine = {id(v) for v in net.bn_affine()}
    return [v for v in net.trainable_variables if train_beta_gamma or id(v) not in affine]


def make_loss_fn(net, *, ignore_label, weight_decay, update_mean_var):
    """The replica loss of one (images, labels) batch: BN in training mode, three heads
    (ICNet_BN, weights LAMBDA1..3) or the network's only output (ICNet merged, PSPNet101)."""
    head_weights = {head: HEAD_WEIGHTS.get(head, 1.0) for head in net.heads}

    def loss_fn(batch):
        images, labels = batch
        outputs = net(images, training=True, update_stats=update_mean_var, outputs=net.heads)
        return icnet_loss(
            outputs,
            labels,
            num_classes=net.num_classes,
            ignore_label=ignore_label,
            weight_decay=weight_decay,
            conv_weights=net.conv_weights(),
            head_weights=head_weights,
        )

    return loss_fn


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
        initialise(net, FLAGS.restore_from)

    dataset = train_dataset(
        pairs,
        batch_size=FLAGS.batch_size,
        crop_size=crop,
        random_scale=FLAGS.random_scale,
        random_mirror=FLAGS.random_mirror,
        ignore_label=FLAGS.ignore_label,
        seed=FLAGS.seed,
    )
    hooks = [image_summary_hook(net, (val_pairs or pairs)[0])]
    if val_pairs:
        hooks.append(validation_hook(net, val_pairs))
    trainer.fit(
        dataset,
        FLAGS.num_steps,
        hooks=hooks,
        hook_every=FLAGS.val_every or FLAGS.save_pred_every,
        learning_rate=schedule,
    )
    print(f'done: step {trainer.step}, checkpoint {trainer.manager.latest_checkpoint}')


def image_summary_hook(net, pair):
    """TensorBoard images: the input, its label and the prediction, in colour."""
    image = read_image(pair[0])
    from PIL import Image

    with Image.open(pair[1]) as img:
        label = np.asarray(img)
    segmenter = Segmenter(net)

    def hook(step, writer):
        pred = segmenter(image)
        with writer.as_default(step=step):
            tf.summary.image('input', image[None])
            tf.summary.image('label', colorize(label, num_classes=net.num_classes)[None])
            tf.summary.image('prediction', colorize(pred, num_classes=net.num_classes)[None])

    return hook


def validation_hook(net, pairs):
    from icnet_tf.evaluate import evaluate, scores

    def hook(step, writer):
        cm = evaluate(
            net, pairs, num_classes=net.num_classes, ignore_label=FLAGS.ignore_label, progress=False
        )
        miou = scores(cm)[1]
        print(f'\nstep {step}: validation mIoU {miou * 100:.2f} on {len(pairs)} images')
        with writer.as_default(step=step):
            tf.summary.scalar('validation/mIoU', miou)

    return hook


if __name__ == '__main__':
    define_flags()
    cli.run(main)
