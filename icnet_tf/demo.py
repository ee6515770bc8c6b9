"""`make demo`: the main job on built-in data, start to finish, with the real command-line tools.

    python -m icnet_tf.demo [--out_dir demo_output] [--num_steps 400] [--weights W.npy]
        [--dataset cityscapes|ade20k|others --weights W]

1. generate a small toy city (`python -m data.toycity`),
2. train ICNet_BN on it from scratch for a few minutes (`python -m icnet_tf.train`),
3. evaluate it on the validation images (`python -m icnet_tf.evaluate`),
4. write `val_<i>.png` for a few validation images: photo | ground truth | prediction,
5. Deep Feature Flow on a toy video with the trained ICNet as feature network
   (`python -m dff_tf.inference`): `dff/video.gif`, input | segmentation. No FlowNetS weights
   ship with the project, so propagated frames use an untrained flow unless
   `--flownet_weights` (FlowNetPytorch `flownets_EPE1.951.pth.tar`) is given.
Each command is printed before it runs, so the demo doubles as a usage example. With
`--weights` (a `.npy` or checkpoint for 19 Cityscapes classes) training is skipped and those
weights are used. A few minutes of CPU training gives a rough segmentation (bench/RESULTS.md has
what longer training reaches). The toy city is labelled with the Cityscapes classes; with
another `--dataset` (its `--weights` required) the demo segments the toy city with that
dataset's classes and colours and leaves out training, evaluation and the ground truth.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import flags
from PIL import Image

from icnet_tf import build_model, cli
from icnet_tf.labels import read_label
from icnet_tf.palette import colorize
from icnet_tf.predict import Segmenter, read_image

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step(title, cmd):
    print(f'\n== {title}\n$ {" ".join(cmd)}', flush=True)
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT)
    if r.returncode:
        raise cli.UserError(f'demo step "{title}" failed (exit {r.returncode})')
    return time.perf_counter() - start


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
    out = os.path.abspath(FLAGS.out_dir)
    data, snapshots = os.path.join(out, 'toycity'), os.path.join(out, 'snapshots')
    py = sys.executable
    if not os.path.exists(os.path.join(data, 'list', 'val.txt')):
        step(
            'generate the toy city',
            [
                py,
                '-m',
                'data.toycity',
                '--out_dir',
                data,
                '--num_train',
                '60',
                '--num_val',
                '6',
                '--num_videos_train',
                '0',
                '--num_videos_val',
                '0',
                '--seed',
                str(FLAGS.seed),
            ],
        )
    weights = FLAGS.weights
    if not weights:
        seconds = step(
            'train ICNet_BN from scratch',
            [
                py,
                '-m',
                'icnet_tf.train',
                '--data_list',
                f'{data}/list/train.txt',
                '--data_dir',
                data,
                '--snapshot_dir',
                snapshots,
                '--batch_size',
                '4',
                '--input_size',
                '224,448',
                '--num_steps',
                str(FLAGS.num_steps),
                '--learning_rate',
                '0.05',
                # no --random_scale: in a few hundred steps it costs about 10 points
                # (bench/RESULTS.md, toy-city training without random scale).
                '--save_pred_every',
                '50',
                '--norandom_scale',
                '--random_mirror',
                '--update_mean_var',
                '--train_beta_gamma',
                '--seed',
                str(FLAGS.seed),
            ],
        )
        print(f'trained {FLAGS.num_steps} steps in {seconds / 60:.1f} min')
        weights = snapshots
    miou = None
    if toy_labels:
        step(
            'evaluate on the validation images',
            [
                py,
                '-m',
                'icnet_tf.evaluate',
                '--data_list',
                f'{data}/list/val.txt',
                '--data_dir',
                data,
                '--restore_from',
                weights,
                '--save_dir',
                os.path.join(out, 'eval'),
                # the toy city's 256x512 frames at their size, not padded to Cityscapes' 1025x2049
                '--protocol',
                'whole',
                '--overwrite',  # the demo's own folder: a second run replaces its files
                *dataset_args(),
            ],
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
    if not os.path.isdir(os.path.join(video, 'leftImg8bit_sequence')):
        step(
            'generate a toy video',
            [
                py,
                '-m',
                'data.toycity',
                '--out_dir',
                video,
                '--num_train',
                '0',
                '--num_val',
                '0',
                '--num_videos_train',
                '0',
                '--num_videos_val',
                '1',
                '--video_frames',
                '15',
                '--seed',
                str(FLAGS.seed),
            ],
        )
    frames = os.path.join(video, 'leftImg8bit_sequence', 'val', 'toycity', '*.png')
    dff_cmd = [
        py,
        '-m',
        'dff_tf.inference',
        '--frames',
        frames,
        '--restore_from',
        weights,
        '--feature_net',
        'icnet_bn',
        '--key_interval',
        '5',
        '--save_dir',
        os.path.join(out, 'dff'),
    ]
    if FLAGS.flownet_weights:
        dff_cmd += ['--flownet_weights', FLAGS.flownet_weights]
    dff_cmd += dataset_args()
    step('Deep Feature Flow on the toy video (key frame every 5)', dff_cmd)
    print(f'wrote {os.path.join(out, "dff", "video.gif")}')


if __name__ == '__main__':
    flags.DEFINE_string('out_dir', 'demo_output', 'where everything is written')
    flags.DEFINE_integer('num_steps', 400, 'training steps (about 3 minutes on 2 idle CPU cores)')
    flags.DEFINE_string('weights', None, 'use these weights instead of training')
    flags.DEFINE_integer('num_pictures', 3, 'validation images to draw')
    flags.DEFINE_integer('seed', 0, 'seed of the data and the training')
    flags.DEFINE_string('flownet_weights', None, 'FlowNetS weights for the DFF part (.pth)')
    cli.define_dataset_flags()
    cli.run(main)
