r"""`python -m dff_tf.export`: a SavedModel of DFF with a key-frame and a propagation signature.

    python -m dff_tf.export --restore_from snapshots_dff/ --input_size 1024,2048 \
        --export_dir dff_saved_model [--flownet_weights W]

Signatures (batch 1, H x W fixed by --input_size: the feature networks' pyramid pooling derives
its kernels from the static size, so the graph is built for one frame size):

  key_frame(image: uint8 [1, H, W, 3] RGB)
      -> {'features': float32 [1, Gh, Gw, C], 'labels': int32 [1, H, W]}
  propagate(features: float32 [1, Gh, Gw, C], key_image: uint8 [1, H, W, 3],
            image: uint8 [1, H, W, 3])
      -> {'labels': int32 [1, H, W]}

All preprocessing (RGB -> each sub-network's input) and postprocessing (resize, argmax) is
inside. The signatures accept inputs of any shape and check them: a frame that is not
[1, H, W, 3] of the exported size, or features that are not the key frame's, fail with an
InvalidArgumentError whose message names the expected shape (e.g. `image: expected uint8 RGB
[1, 512, 1024, 3] ...`) and the shape received. Frames must be uint8 `tf.Tensor`s or arrays
(TensorFlow converts NumPy arrays of another dtype to uint8 unchecked). A client keeps the
key frame's `features` and image and calls `propagate` for the next frames;
`<export_dir>/dff_export.json` records the sizes, the grid and the model.

    loaded = tf.saved_model.load('dff_saved_model')
    key = loaded.signatures['key_frame'](image=frame0)
    labels = loaded.signatures['propagate'](features=key['features'], key_image=frame0,
                                            image=frame1)['labels']
"""

import json
import os

import tensorflow as tf
from absl import flags, logging

from converters.errors import UserError
from dff_tf.cli import define_model_flags, define_weights_flags, model_and_dataset
from dff_tf.model import build_dff, check_frame_size, load_weights
from icnet_tf import cli
from icnet_tf.cli import check_output_dir, parse_size, replacing_dir
from icnet_tf.datasets import to_record
from icnet_tf.serving import checked_input

FLAGS = flags.FLAGS


class DFFExport(tf.Module):
    """The two serving functions of a DFF model for frames of `height x width`."""

    def __init__(self, dff, height, width):
        super().__init__(name='dff_export')
        self.dff = dff
        self.height, self.width = int(height), int(width)
        grid = dff.key_features(tf.zeros([1, self.height, self.width, 3], tf.uint8)).shape
        self.grid = (int(grid[1]), int(grid[2]))
        self.channels = int(grid[3])
        # Inputs of any shape, checked inside (`icnet_tf.serving.checked_input`): a signature
        # shape would let a wrong one through unchecked.
        image = tf.TensorSpec(None, tf.uint8)
        features = tf.TensorSpec(None, tf.float32)
        self.key_frame = tf.function(self._key_frame, input_signature=[image], autograph=False)
        self.propagate = tf.function(
            self._propagate, input_signature=[features, image, image], autograph=False
        )

    def _image(self, image, name):
        shape = [1, self.height, self.width, 3]
        what = (
            f'{name}: expected uint8 RGB [1, {self.height}, {self.width}, 3] (one frame of '
            'the exported size)'
        )
        return checked_input(image, shape, what)

    def _features(self, features):
        shape = [1, *self.grid, self.channels]
        what = (
            f'features: expected float32 [1, {self.grid[0]}, {self.grid[1]}, {self.channels}] '
            "(the key_frame signature's features)"
        )
        return checked_input(features, shape, what)

    def _key_frame(self, image):
        features = self.dff.key_features(self._image(image, 'image'))
        labels = self.dff.labels(self.dff.task(features), (self.height, self.width))
        return {'features': features, 'labels': labels}

    def _propagate(self, features, key_image, image):
        logits = self.dff.propagate(
            self._features(features),
            self._image(key_image, 'key_image'),
            self._image(image, 'image'),
        )
        return {'labels': self.dff.labels(logits, (self.height, self.width))}

    def description(self):
        return {
            'input_size': [self.height, self.width],
            'feature_grid': list(self.grid),
            'feature_channels': self.channels,
            'num_classes': self.dff.num_classes,
            'model': self.dff.get_config(),
            'signatures': {
                'key_frame': 'image uint8 [1,H,W,3] RGB -> features float32 [1,Gh,Gw,C], '
                'labels int32 [1,H,W]',
                'propagate': 'features, key_image uint8, image uint8 -> labels int32 [1,H,W]',
            },
        }


def export(dff, height, width, export_dir, spec=None):
    """Write the SavedModel (+ dff_export.json, with the dataset `spec`); returns the module."""
    module = DFFExport(dff, height, width)
    signatures = {
        'key_frame': module.key_frame.get_concrete_function(),
        'propagate': module.propagate.get_concrete_function(),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    with open(os.path.join(export_dir, 'dff_export.json'), 'w', encoding='utf-8') as f:
        description = module.description()
        if spec is not None:
            description['dataset'] = to_record(spec)
        json.dump(description, f, indent=1)
    return module


def main(argv):
    del argv
    if not FLAGS.input_size:
        raise UserError('--input_size H,W is required (the SavedModel has a static frame size)')
    height, width = parse_size(FLAGS.input_size, 'input_size')
    check_output_dir(FLAGS.export_dir, 'export_dir', FLAGS.overwrite)
    config, spec = model_and_dataset(FLAGS.restore_from, flownet_weights=FLAGS.flownet_weights)
    dff = build_dff(config)
    check_frame_size(dff, height, width, '--input_size')
    load_weights(dff, FLAGS.restore_from, FLAGS.flownet_weights)
    logging.set_verbosity(logging.WARNING)  # SavedModel's INFO chatter
    with replacing_dir(FLAGS.export_dir) as tmp:
        module = export(dff, height, width, tmp, spec)
    print(
        f'wrote a SavedModel for {height}x{width} frames to {os.path.join(FLAGS.export_dir, "")} '
        f'(signatures key_frame, propagate; features {module.grid[0]}x{module.grid[1]}x'
        f'{module.channels})'
    )


def define_flags():
    define_weights_flags()
    flags.DEFINE_string('input_size', None, 'frame size H,W of the exported graph')
    flags.DEFINE_string('export_dir', 'dff_saved_model', 'SavedModel directory')
    flags.DEFINE_bool('overwrite', False, 'replace an existing, non-empty --export_dir')
    define_model_flags()


if __name__ == '__main__':
    define_flags()
    cli.run(main)
