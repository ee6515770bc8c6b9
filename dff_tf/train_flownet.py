r"""`python -m dff_tf.train_flownet`: pretrain FlowNetS on videos whose flow is known.

    python -m dff_tf.train_flownet --data_list list/video_train.txt --data_dir DIR \
        --videos_json DIR/videos.json [--val_list list/video_val.txt]
        [--flow_scale 0.5] [--flownet plain|bn|half|quarter]
        [--restore_from flownets_EPE1.951.pth]
        [--batch_size 8 --input_size H,W --learning_rate 1e-4 --num_steps 2000]
        [--snapshot_dir snapshots_flow/] [--precision float32|mixed_float16|mixed_bfloat16]

The original DFF starts from a FlowNetS trained on Flying Chairs. With no FlowNet weights at
hand, this is the stand-in: the toy city's videos record their camera motion, which gives the
exact flow of all static content (`dff_tf.data.flow_pairs`: frame t to frame t - d,
1 <= d <= --max_key_distance, moving objects and the ego hood left out). FlowNetS sees the pair
exactly as inside DFF (`dff_tf.model.flownet_pair` at --flow_scale, `concat([current, key])`),
so the result is loaded by `python -m dff_tf.train --flownet_weights <snapshot_dir>`.
The light variants (`--flownet half` / `quarter`, `dff_tf.flownet`) have no published weights
and start here. `<snapshot_dir>/flownet_config.json` records --flownet and --flow_scale; the DFF
tools given `--flownet_weights <snapshot_dir>` build that flow network at that scale unless
told otherwise (`dff_tf.cli.model_config`).

Loss: FlowNetPytorch's `multiscaleEPE` restricted to supervised pixels: for flow2..flow6 with
weights 0.005, 0.01, 0.02, 0.08, 0.32, the sum over supervised pixels of the end-point error
between the output and the target (flow-input pixels / DIV_FLOW, area-averaged over supervised
pixels to the output grid; a cell is supervised when more than half of it is), divided by the
global batch size; plus --weight_decay times the L2 of the kernels (FlowNetPytorch's Adam
weight decay 4e-4 on weights, none on biases). Adam as FlowNetPytorch (betas 0.9, 0.999) with
a poly learning rate. Checkpoints, resume, NaN stop, progress bar and TensorBoard come from
`icnet_tf.training.Trainer`; with --val_list the mean end-point error in frame pixels of the
validation pairs is printed and logged (`val/epe_px`) every --save_pred_every steps.
"""

import os

import tensorflow as tf
from absl import flags

from converters.errors import UserError
from dff_tf.cli import define_flownet_flag
from dff_tf.data import (
    MAX_KEY_DISTANCE,
    first_frame_size,
    flow_dataset,
    flow_pairs,
    read_video_list,
)
from dff_tf.flownet import DIV_FLOW, FlowNetS, build_flownet, flownet_config
from dff_tf.model import (
    flow_input_size,
    flownet_config_path,
    flownet_pair,
    saved_flownet_config,
)
from icnet_tf import cli
from icnet_tf.cli import parse_size
from icnet_tf.losses import PolyLR, num_replicas
from icnet_tf.training import compute_dtype

FLAGS = flags.FLAGS
SCALE_WEIGHTS = (0.005, 0.01, 0.02, 0.08, 0.32)  # flow2..flow6, FlowNetPytorch multiscaleEPE


def define_flags():
    flags.DEFINE_string('data_list', None, 'video list: its sequences are used (all frames)')
    flags.DEFINE_string('data_dir', '', 'directory the list paths are relative to')
    flags.DEFINE_string('videos_json', None, "videos.json with each sequence's camera_x")
    flags.DEFINE_string('val_list', None, 'video list of validation sequences (EPE)')
    flags.DEFINE_integer('val_pairs', 64, 'validation pairs used (evenly spread)', lower_bound=1)
    # FlowNetPytorch's defaults (a table row per tool: kept compact on purpose); Adam.
    # fmt: off
    cli.define_training_flags(
        batch_size=8, input_size='', learning_rate=1e-4, num_steps=2000, weight_decay=4e-4,
        snapshot_dir='./snapshots_flow/', save_pred_every=250, momentum=False,
        input_size_help='random crop h,w of the frames (default: whole frames); only pixels '
        'whose match lies in the crop are supervised',
        learning_rate_help='Adam learning rate (FlowNetPytorch: 1e-4)',
        weight_decay_help='L2 factor on kernels (FlowNetPytorch: 4e-4)',
    )
    # fmt: on
    flags.DEFINE_integer(
        'max_key_distance', MAX_KEY_DISTANCE, 'largest frame distance', lower_bound=1
    )
    flags.DEFINE_float('flow_scale', 0.5, 'FlowNetS input fraction of the frame (as in DFF)')
    define_flownet_flag()
    flags.DEFINE_bool('random_mirror', True, 'random left-right mirroring of pairs')
    flags.DEFINE_string('restore_from', None, 'FlowNetS weights to start from (.pth, checkpoint)')
    flags.mark_flag_as_required('data_list')
    flags.mark_flag_as_required('videos_json')


def target_pyramid(flow, valid, frame_size, sizes, flow_scale):
    """Known flow `[B, H, W, 2]` (frame pixels) and its mask `[B, H, W, 1]` -> per output size
    `(target, mask)`: the flow in flow-input pixels / DIV_FLOW, averaged over supervised pixels
    of each output cell (area resize), and the cells more than half supervised."""
    (h, w), (fh, fw) = frame_size, flow_input_size(*frame_size, flow_scale)
    raw = flow * tf.constant([fw / w / DIV_FLOW, fh / h / DIV_FLOW], tf.float32)
    out = []
    for size in sizes:
        weight = tf.image.resize(valid, size, method='area')
        mean = tf.image.resize(raw * valid, size, method='area') / tf.maximum(weight, 1e-6)
        out.append((mean, tf.cast(weight > 0.5, tf.float32)))
    return out


def multiscale_epe(outputs, targets, global_batch):
    """Weighted sum over scales of (sum of masked EPE) / global batch; also the flow2 term."""
    terms = []
    for out, (target, mask) in zip(outputs, targets):
        epe = tf.norm(target - out, axis=-1, keepdims=True)
        terms.append(tf.reduce_sum(epe * mask) / global_batch)
    return tf.add_n([w * t for w, t in zip(SCALE_WEIGHTS, terms)]), terms[0]


def make_loss_fn(
    flownet, *, frame_size, flow_scale, global_batch, weight_decay, precision='float32'
):
    """The replica loss (multiscale EPE + weight decay) and its parts; FlowNetS runs in the
    compute dtype of `precision`, its flows are cast to float32 for the loss."""
    dtype = compute_dtype(precision)

    def loss_fn(batch):
        (key, current), (flow, valid) = batch
        outputs = flownet(
            flownet_pair(key, current, flow_scale),
            training=True,
            outputs=FlowNetS.heads,
            compute_dtype=dtype,
        )
        outputs = [tf.cast(outputs[name], tf.float32) for name in FlowNetS.heads]
        targets = target_pyramid(
            flow, valid, frame_size, [o.shape[1:3] for o in outputs], flow_scale
        )
        epe, epe2 = multiscale_epe(outputs, targets, global_batch)
        parts = {'multiscale_epe': epe, 'epe2_sum': epe2}
        total = epe
        if weight_decay:
            parts['weight_decay'] = (
                weight_decay
                * tf.add_n([tf.nn.l2_loss(k) for k in flownet.conv_weights()])
                / num_replicas()
            )
            total += parts['weight_decay']
        return total, parts

    return loss_fn


def epe_px(flownet, batches, frame_size, flow_scale):
    """Mean end-point error in frame pixels over supervised pixels: flow2 resized to the
    frame (bilinear) and scaled by DIV_FLOW * frame / flow-input size."""
    (h, w), (fh, fw) = frame_size, flow_input_size(*frame_size, flow_scale)
    err = count = 0.0
    for (key, current), (flow, valid) in batches:
        raw = flownet(flownet_pair(key, current, flow_scale), training=False)
        pred = tf.image.resize(raw, (h, w)) * tf.constant(
            [DIV_FLOW * w / fw, DIV_FLOW * h / fh], tf.float32
        )
        err += float(tf.reduce_sum(tf.norm(pred - flow, axis=-1, keepdims=True) * valid))
        count += float(tf.reduce_sum(valid))
    return err / max(count, 1.0)


def validation_batches(pairs, limit, batch_size=4):
    """`limit` pairs spread evenly over the list, as a few fixed batches."""
    step = max(1, len(pairs.current) // limit)
    idx = list(range(0, len(pairs.current), step))[:limit]
    subset = pairs.subset(idx)
    ds = flow_dataset(subset, batch_size=min(batch_size, len(idx)), shuffle_buffer=1)
    return list(ds.take(max(1, len(idx) // min(batch_size, len(idx)))))


def main(argv):
    del argv
    videos = read_video_list(FLAGS.data_list, FLAGS.data_dir, FLAGS.videos_json)
    pairs = flow_pairs(videos, FLAGS.videos_json, FLAGS.data_dir, FLAGS.max_key_distance)
    frame_size = first_frame_size(videos)
    crop = parse_size(FLAGS.input_size, 'input_size') if FLAGS.input_size else None
    if crop and (crop[0] > frame_size[0] or crop[1] > frame_size[1]):
        raise UserError(
            f'--input_size {crop[0]}x{crop[1]} is larger than the frames '
            f'({frame_size[0]}x{frame_size[1]})'
        )
    train_size = crop or frame_size
    if not FLAGS.flow_scale > 0:
        raise UserError(f'--flow_scale must be positive, got {FLAGS.flow_scale}')
    strategy, replicas = cli.strategy()
    config = {'flownet': FLAGS.flownet, 'flow_scale': FLAGS.flow_scale}
    held = saved_flownet_config(FLAGS.snapshot_dir)
    if held is not None and held != config:
        raise UserError(
            f'{flownet_config_path(FLAGS.snapshot_dir)}: this snapshot folder trains '
            f'--flownet {held.get("flownet")} --flow_scale {held.get("flow_scale")}, not '
            f'--flownet {FLAGS.flownet} --flow_scale {FLAGS.flow_scale}; pass those or '
            'choose another --snapshot_dir'
        )
    with strategy.scope():
        flownet = build_flownet(FLAGS.flownet, seed=FLAGS.seed).build()
        schedule = PolyLR(FLAGS.learning_rate, FLAGS.num_steps, FLAGS.power)
        optimizer = tf.keras.optimizers.Adam(schedule, beta_1=0.9, beta_2=0.999)
    fh, fw = flow_input_size(*train_size, FLAGS.flow_scale)
    print(
        f'{len(pairs.current)} frame pairs (distance 1..{FLAGS.max_key_distance}) of '
        f'{len({s.sequence for s in videos.samples})} sequences, frames '
        f'{frame_size[0]}x{frame_size[1]}, crops {train_size[0]}x{train_size[1]}, '
        f'--flownet {FLAGS.flownet} ({flownet.count_params():,} parameters), input {fh}x{fw}, '
        f'{replicas} replica(s), global batch {FLAGS.batch_size}, {FLAGS.precision}'
    )
    trainer = cli.make_trainer(
        strategy=strategy,
        model=flownet,
        optimizer=optimizer,
        variables=flownet.trainable_variables,
        loss_fn=make_loss_fn(
            flownet,
            frame_size=train_size,
            flow_scale=FLAGS.flow_scale,
            global_batch=float(FLAGS.batch_size),
            weight_decay=FLAGS.weight_decay,
            precision=FLAGS.precision,
        ),
    )
    if trainer.is_chief:  # the other workers of a multi-worker run write nothing there
        os.makedirs(FLAGS.snapshot_dir, exist_ok=True)  # flownet_config_path needs the folder
        config = dict(config, flownet=flownet_config(flownet))
        cli.record_json(flownet_config_path(FLAGS.snapshot_dir), config, 'flow network')
    if cli.resume(trainer):
        pass  # the weights, optimizer and step of the checkpoint
    elif FLAGS.restore_from:
        print(flownet.load(FLAGS.restore_from, verbose=False))
    else:
        print('no --restore_from: FlowNetS starts from a fresh initialisation')
    hooks = []
    if FLAGS.val_list:
        val_videos = read_video_list(FLAGS.val_list, FLAGS.data_dir, FLAGS.videos_json)
        val = validation_batches(
            flow_pairs(val_videos, FLAGS.videos_json, FLAGS.data_dir, FLAGS.max_key_distance),
            FLAGS.val_pairs,
        )

        def validate(step, writer):
            value = epe_px(flownet, val, frame_size, FLAGS.flow_scale)
            with writer.as_default(step=step):
                tf.summary.scalar('val/epe_px', value)
            print(f'\nstep {step}: validation EPE {value:.3f} px', flush=True)

        hooks.append(validate)
    files = pairs.sample_files()  # finds a file tf.data cannot decode
    dataset = lambda input_context: flow_dataset(  # one input pipeline per worker
        pairs.subset(files.kept),
        crop_size=crop,
        random_mirror=FLAGS.random_mirror,
        **cli.stream_options(input_context),
    )
    cli.fit(
        trainer,
        dataset,
        files,
        hooks=hooks,
        hook_every=FLAGS.save_pred_every,
        learning_rate=schedule,
    )


if __name__ == '__main__':
    define_flags()
    cli.run(main)
