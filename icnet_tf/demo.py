"""`make demo`: the main job on built-in data, start to finish, with the real command-line tools.

    python -m icnet_tf.demo [--out_dir demo_output] [--num_steps 400] [--weights W.npy]
        [--dataset cityscapes|ade20k|others --weights W]
        [--flownet quarter --flow_scale 0.25 --flow_steps 600]
        [--flownet_weights flownets_EPE1.951.pth.tar]

1. generate a small toy city (`python -m data.toycity`),
2. train ICNet_BN on it from scratch for a few minutes (`python -m icnet_tf.train`),
3. evaluate it on the validation images (`python -m icnet_tf.evaluate`),
4. write `val_<i>.png` for a few validation images: photo | ground truth | prediction,
5. generate toy videos (`python -m data.toycity`): a few to train the flow network on, one to
   show,
6. pretrain a light flow network (`--flownet`, default the quarter-width FlowNetS at a quarter
   of the frame size) on the known camera flow of the training videos for about 2 minutes
   (`python -m dff_tf.train_flownet`; no FlowNet weights ship with the project). The flow
   is learned, not given: on static content it is what the toy city's camera motion implies,
   and moving cars and persons are not supervised,
7. Deep Feature Flow on the shown video with the trained ICNet as feature network and a key
   frame every 5 (`python -m dff_tf.inference`): `dff/video.gif`, input | segmentation,
8. score that video against its ground truth: mIoU of the key frames, of the propagated frames,
   and of the same frames segmented one by one (what propagation costs).
With `--flownet_weights` (FlowNetPytorch `flownets_EPE1.951.pth.tar`) step 6 is skipped and
FlowNetS runs with those weights. Each command is printed before it runs, so the demo doubles as
a usage example. With `--weights` (a `.npy` or checkpoint for 19 Cityscapes classes) training is
skipped and those weights are used. A few minutes of CPU training gives a rough segmentation
(bench/RESULTS.md has what longer training reaches).
The toy city is labelled with the Cityscapes classes; with another `--dataset` (its
`--weights` required) the demo segments the toy city with that dataset's classes and
colours and leaves out training, evaluation, the ground truth and step 8.
"""

import json
import os
import resource
import subprocess
import time

import numpy as np
from absl import flags
from PIL import Image

from dff_tf.flownet import FLOWNET_VARIANTS
from dff_tf.model import VideoRunner, build_dff, load_weights, saved_flownet_config
from icnet_tf import build_model, cli
from icnet_tf.data import read_list
from icnet_tf.labels import read_label
from icnet_tf.metrics import confusion_matrix, scores
from icnet_tf.palette import colorize
from icnet_tf.predict import Segmenter, read_image

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def step(title, cmd):
    """Run one command of the demo; prints its wall and CPU time, returns the wall time."""
    print(f'\n== {title}\n$ {" ".join(cmd)}', flush=True)
    start, cpu = time.perf_counter(), _children_cpu()
    r = subprocess.run(cmd, cwd=ROOT)
    if r.returncode:
        raise cli.UserError(f'demo step "{title}" failed (exit {r.returncode})')
    seconds = time.perf_counter() - start
    print(f'({seconds:.0f} s wall, {_children_cpu() - cpu:.0f} s CPU)', flush=True)
    return seconds


def score_video(out, video, weights, flownet_weights, key_interval):
    """mIoU of key frames, propagated frames and those same frames segmented one by one, over
    the shown video with the schedule of `dff_tf.inference` (a key frame every
    `key_interval`, the first frame a key frame)."""
    flow = saved_flownet_config(flownet_weights) or {}
    dff = build_dff(
        {
            'feature_net': 'icnet_bn',
            'num_classes': 19,
            'flownet': flow.get('flownet', 'plain'),
            'flow_scale': flow.get('flow_scale', 0.5),
        }
    )
    load_weights(dff, weights, flownet_weights, log=lambda *a: None)
    pairs = read_list(os.path.join(video, 'list', 'video_val.txt'), video)
    runner = VideoRunner(dff, key_interval=key_interval)
    frames = [read_image(image) for image, _ in pairs]
    cm = {k: np.zeros((19, 19), np.int64) for k in ('key', 'propagated', 'one by one')}
    count = {'key': 0, 'propagated': 0}
    for (index, labels, is_key), (_, label_path) in zip(runner.run(frames), pairs):
        label = np.asarray(Image.open(label_path))
        kind = 'key' if is_key else 'propagated'
        cm[kind] += confusion_matrix(labels, label, 19)
        count[kind] += 1
        if not is_key:
            cm['one by one'] += confusion_matrix(runner.key_step(frames[index])[1], label, 19)
    miou = {k: scores(v)[1] * 100 for k, v in cm.items()}
    print(
        f'\nDFF on the shown video ({len(frames)} frames, a key frame every {key_interval}, '
        f'flow network {dff.get_config()["flownet"]} at {dff.flow_scale:g} of the frame): '
        f'mIoU of the {count["key"]} key frames {miou["key"]:.1f}, of the '
        f'{count["propagated"]} propagated frames {miou["propagated"]:.1f} (the same frames '
        f'segmented one by one: {miou["one by one"]:.1f})'
    )
    cli.write_json(
        os.path.join(out, 'dff', 'video_miou.json'), {k: v / 100 for k, v in miou.items()}
    )
    return miou


def dataset_args():
    """The dataset flags given to the demo, for the tools it runs."""
    names = ('dataset', 'num_classes', 'ignore_label', 'class_names_json')
    return [a for n in names if FLAGS[n].present for a in (f'--{n}', str(FLAGS[n].value))]


def main(argv):
    del argv
    spec = cli.dataset_spec(restore_from=FLAGS.weights)
    toy_labels = spec.name == 'cityscapes'  # the toy city's labels are Cityscapes trainIds
    if not toy_labels and not FLAGS.weights:
        raise cli.UserError(
            f'--dataset {spec.name}: the toy city is labelled with the Cityscapes classes, so '
            'the demo cannot train for it: pass --weights of a model for that dataset'
        )
    started = time.perf_counter()
    out = os.path.abspath(FLAGS.out_dir)
    data, snapshots = os.path.join(out, 'toycity'), os.path.join(out, 'snapshots')
    if not os.path.exists(os.path.join(data, 'list', 'val.txt')):
        step(
            'generate the toy city',
            cli.tool_command(
                'data.toycity',
                out_dir=data,
                num_train=60,
                num_val=6,
                num_videos_train=0,
                num_videos_val=0,
                seed=FLAGS.seed,
            ),
        )
    weights = FLAGS.weights
    if not weights:
        seconds = step(
            'train ICNet_BN from scratch',
            cli.tool_command(
                'icnet_tf.train',
                data_list=f'{data}/list/train.txt',
                data_dir=data,
                snapshot_dir=snapshots,
                batch_size=4,
                input_size='224,448',
                num_steps=FLAGS.num_steps,
                learning_rate=0.05,
                save_pred_every=50,
                # no --random_scale: in a few hundred steps it costs about 10 points
                # (bench/RESULTS.md, toy-city training without random scale).
                random_scale=False,
                random_mirror=True,
                update_mean_var=True,
                train_beta_gamma=True,
                seed=FLAGS.seed,
            ),
        )
        print(f'trained {FLAGS.num_steps} steps in {seconds / 60:.1f} min')
        weights = snapshots
    miou = None
    if toy_labels:
        step(
            'evaluate on the validation images',
            cli.tool_command(
                'icnet_tf.evaluate',
                *dataset_args(),
                data_list=f'{data}/list/val.txt',
                data_dir=data,
                restore_from=weights,
                save_dir=os.path.join(out, 'eval'),
                # the toy city's 256x512 frames at their size, not padded to Cityscapes' 1025x2049
                protocol='whole',
                overwrite=True,  # the demo's own folder: a second run replaces its files
            ),
        )
        miou = json.load(open(os.path.join(out, 'eval', 'metrics.json')))['mIoU']

    net = build_model('ICNet_BN', num_classes=spec.num_classes)
    net.load(weights, skip=('sub4_out', 'sub24_out'), verbose=False)
    segmenter = Segmenter(net)
    with open(os.path.join(data, 'list', 'val.txt')) as f:
        pairs = [line.split() for line in f if line.strip()][: FLAGS.num_pictures]
    written = []
    for i, (img_rel, lab_rel) in enumerate(pairs):
        image = read_image(os.path.join(data, img_rel))
        panels = [image, colorize(segmenter(image), spec.palette, spec.num_classes)]
        if toy_labels:
            label = read_label(os.path.join(data, lab_rel), spec)
            panels.insert(1, colorize(label, spec.palette, spec.num_classes))
        written.append(os.path.join(out, f'val_{i}.png'))
        Image.fromarray(np.concatenate(panels, axis=1)).save(written[-1])
    what = 'photo | ground truth | prediction' if toy_labels else 'photo | prediction'
    score = f'validation mIoU {miou * 100:.1f}; ' if miou is not None else ''
    print(f'\n{score}wrote {len(written)} pictures ({what}): {", ".join(written)}')

    video = os.path.join(out, 'toyvideo')
    if not os.path.exists(os.path.join(video, 'videos.json')):
        step(
            'generate toy videos (to train the flow network on, and one to show)',
            cli.tool_command(
                'data.toycity',
                out_dir=video,
                num_train=0,
                num_val=0,
                num_videos_train=FLAGS.flow_videos,
                num_videos_val=1,
                video_frames=15,
                seed=FLAGS.seed,
            ),
        )
    flownet_weights = FLAGS.flownet_weights
    if not flownet_weights:
        flownet_weights = os.path.join(out, 'flownet')
        step(
            f'pretrain the {FLAGS.flownet} flow network on the known camera flow of the '
            'training videos',
            cli.tool_command(
                'dff_tf.train_flownet',
                data_list=f'{video}/list/video_train.txt',
                data_dir=video,
                videos_json=f'{video}/videos.json',
                val_list=f'{video}/list/video_val.txt',
                val_pairs=32,
                flownet=FLAGS.flownet,
                flow_scale=FLAGS.flow_scale,
                batch_size=8,
                learning_rate=5e-4,
                num_steps=FLAGS.flow_steps,
                save_pred_every=FLAGS.flow_steps,
                seed=FLAGS.seed,
                snapshot_dir=flownet_weights,
            ),
        )
    frames = os.path.join(video, 'leftImg8bit_sequence', 'val', 'toycity', '*.png')
    dff_cmd = cli.tool_command(
        'dff_tf.inference',
        *dataset_args(),
        frames=frames,
        restore_from=weights,
        feature_net='icnet_bn',
        flownet_weights=flownet_weights,
        key_interval=5,
        save_dir=os.path.join(out, 'dff'),
        overwrite=True,  # the demo's own folder: a rerun replaces its earlier GIF and PNGs
    )
    step('Deep Feature Flow on the shown video (key frame every 5)', dff_cmd)
    print(f'wrote {os.path.join(out, "dff", "video.gif")}')
    if toy_labels:
        score_video(out, video, weights, flownet_weights, key_interval=5)
    print(f'\ndemo done in {(time.perf_counter() - started) / 60:.1f} min')


if __name__ == '__main__':
    flags.DEFINE_string('out_dir', 'demo_output', 'where everything is written')
    flags.DEFINE_integer('num_steps', 400, 'training steps (about 3 minutes on 2 idle CPU cores)')
    flags.DEFINE_string('weights', None, 'use these weights instead of training')
    flags.DEFINE_integer('num_pictures', 3, 'validation images to draw')
    flags.DEFINE_integer('seed', 0, 'seed of the data and the training')
    flags.DEFINE_string(
        'flownet_weights',
        None,
        'FlowNetS weights for the DFF part (FlowNetPytorch .pth): no flow pretraining',
    )
    flags.DEFINE_enum(
        'flownet', 'quarter', list(FLOWNET_VARIANTS), 'flow network pretrained for the video'
    )
    flags.DEFINE_float('flow_scale', 0.25, 'the flow network runs at this fraction of the frame')
    flags.DEFINE_integer(
        'flow_steps', 600, 'flow pretraining steps (about 2 minutes on 2 idle CPU cores)'
    )
    flags.DEFINE_integer('flow_videos', 16, 'toy videos of 15 frames to pretrain it on')
    cli.define_dataset_flags()
    cli.run(main)
