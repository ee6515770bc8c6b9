"""`make demo`: segment a street scene with ICNet_BN and write the colourised result.

    python -m icnet_tf.demo --out_dir demo_output [--weights icnet_cityscapes_train_30k_bnnomerge.npy]
        [--image photo.png]

Without --image a synthetic toy-city scene is rendered (data/toycity.py). Without --weights the
network keeps its random initialisation and the demo says so: the picture then shows noise,
which is still a complete run of the pipeline (preprocessing, network, postprocessing, colours).
"""
import os
import time

import numpy as np
from absl import flags
from PIL import Image

from icnet_tf import build_model, cli
from icnet_tf.palette import colorize, overlay
from icnet_tf.predict import read_image, segment

FLAGS = flags.FLAGS


def _scene(seed):
    from data import toycity  # repository-local generator (not part of the installed package)
    image, label = toycity.render_scene(np.random.default_rng(seed), 256, 512)
    return image, label


def main(argv):
    del argv
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    if FLAGS.image:
        image, label = read_image(FLAGS.image), None
    else:
        image, label = _scene(FLAGS.seed)
    net = build_model(FLAGS.model, num_classes=FLAGS.num_classes, filter_scale=FLAGS.filter_scale)
    if FLAGS.weights:
        print(net.load(FLAGS.weights, skip=cli.csv(FLAGS.skip_layers), verbose=False))
    else:
        print('no --weights given: the network keeps its random initialisation, so the '
              'segmentation below is noise (train with `python -m icnet_tf.train` or pass the '
              'Caffe weights)')
    start = time.perf_counter()
    labels = segment(net, image)
    print(f'segmented a {image.shape[1]}x{image.shape[0]} image in '
          f'{time.perf_counter() - start:.2f} s ({FLAGS.model}, eager, first call)')
    outputs = {'input.png': image, 'prediction.png': colorize(labels),
               'overlay.png': overlay(image, labels)}
    if label is not None:
        outputs['ground_truth.png'] = colorize(label)
    for name, array in outputs.items():
        Image.fromarray(array).save(os.path.join(FLAGS.out_dir, name))
    print(f'wrote {", ".join(outputs)} to {FLAGS.out_dir}/')


if __name__ == '__main__':
    flags.DEFINE_string('out_dir', 'demo_output', 'where to write the PNGs')
    flags.DEFINE_string('weights', None, '.npy or checkpoint to load (random weights if unset)')
    flags.DEFINE_string('skip_layers', 'sub4_out,sub24_out',
                        'layers not to load (the Caffe files have no auxiliary heads)')
    flags.DEFINE_string('image', None, 'an image to segment (default: a toy-city scene)')
    flags.DEFINE_integer('seed', 0, 'seed of the rendered scene')
    cli.define_model_flags()
    cli.run(main)
