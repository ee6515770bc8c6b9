"""The serving module: uint8 images in, labels out, for any network of the registry.

`SegmentationModule` wraps a network (after its declared exact rewrites,
`icnet_tf.rewrites.serving_network`) in a `tf.function` whose `serving_default` signature takes
`images`: uint8 RGB `[N, H, W, 3]` (any height and width unless a fixed `input_size` is given)
and returns `labels` (int32 `[N, H, W]`) and optionally `probabilities` (float32
`[N, H, W, C]`). The signature declares `images` uint8 of any shape and checks the shape
itself (`checked_input`): a gray `[N, H, W, 1]`, RGBA, unbatched `[H, W, 3]` or empty input
fails with an InvalidArgumentError whose message says
`images: expected uint8 RGB [N, H, W, 3] ...` and the shape received. The dtype is the
signature's: a float `tf.Tensor` is refused by TensorFlow ("expected to be a uint8 tensor but
is a float tensor"), but a NumPy array or list of another dtype is converted to uint8 by
TensorFlow without a check (float images in 0..1 become 0, values wrap modulo 256): give
uint8 arrays. Everything around the graph happens inside: the network's `preprocess`, zero
padding (bottom/right) to the original's multiple of 32 and to at least the network's minimum
size, the forward pass, the network's `upsample_logits` to the padded size, crop, argmax /
softmax (labels only: the network's `upsample_labels` when a rewrite gives it one, the same
labels computed only where they can change). Also: SavedModel writing and loading, TFLite
conversion and running.
"""

import contextlib
import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

from converters.errors import UserError
from icnet_tf.models import model_name
from icnet_tf.predict import padded_size
from icnet_tf.rewrites import serving_network

METADATA = os.path.join('assets.extra', 'icnet_tf.json')
SIGNATURE = 'serving_default'


# ---------------------------------------------------------------------------------------------
# The serving function
# ---------------------------------------------------------------------------------------------
def checked_input(tensor, shape, what):
    """`tensor` checked in the graph to have `shape` (a list of fixed sizes, or None for any
    size >= 1): the rank, each fixed size, and no empty dimension. Otherwise the call fails with
    an InvalidArgumentError whose message is `what` (naming the expected shape and dtype) and
    the shape received. Returns `tensor` with `shape` as its static shape.

    The serving signatures declare an input of unknown shape and check it here: a declared
    `[None, None, None, 3]` would let a gray `[N, H, W, 1]`, RGBA or unbatched `[H, W, 3]` array
    in unchecked (TensorFlow does not compare a signature's shape with the tensor fed, and the
    graph would compute garbage or fail deep inside), and would fold such a check away."""
    actual = tf.shape(tensor)
    rank = len(shape)
    # the first `rank` sizes, zero-padded, so that no slice can fail before the check does
    sizes = tf.concat([actual, tf.zeros([rank], tf.int32)], axis=0)[:rank]
    ok = tf.logical_and(tf.equal(tf.size(actual), rank), tf.reduce_all(sizes > 0))
    for i, size in enumerate(shape):
        if size is not None:
            ok = tf.logical_and(ok, tf.equal(sizes[i], size))
    check = tf.debugging.Assert(ok, [what, 'got shape', actual], summarize=16)
    with tf.control_dependencies([check]):
        tensor = tf.identity(tensor)
    # The static shape only: a runtime `tf.ensure_shape` of a fully known shape is run before
    # the check by Grappler's rewrites (its own, less telling error comes first).
    tensor.set_shape(shape)
    return tensor


def expected_images(size=None, batch=None):
    """The message of a bad `images` input, e.g. 'images: expected uint8 RGB [N, H, W, 3]'."""
    n = 'N' if batch is None else str(batch)
    h, w = ('H', 'W') if size is None else size
    return (
        f'images: expected uint8 RGB [{n}, {h}, {w}, 3] (a batch of RGB images; no empty dimension)'
    )


def serving_size(h, w, min_size):
    """Padded size of the original's check_input (`predict.padded_size`), at least min_size."""
    ph, pw = padded_size(h, w)
    return tf.maximum(ph, min_size), tf.maximum(pw, min_size)


class SegmentationModule(tf.Module):
    """uint8 RGB images -> labels (and softmax), the network's pre- and postprocessing inside.

    `input_size=(H, W)` fixes the signature's image size (for networks that need static sizes,
    and TFLite); otherwise any height and width are accepted.
    """

    def __init__(self, net, *, probabilities=True, input_size=None, name='icnet_serving'):
        super().__init__(name=name)
        self.net = net
        self.num_classes = net.num_classes
        self.min_size = int(net.build_input_shape()[1])
        self.with_probabilities = bool(probabilities)
        self.input_size = tuple(input_size) if input_size else None
        # Any shape is accepted by the signature and checked inside (`checked_input`).
        self.serve = tf.function(
            self.checked_segment,
            input_signature=[tf.TensorSpec(None, tf.uint8, name='images')],
        )

    def checked_segment(self, images):
        """`segment` after checking that `images` is [N, H, W, 3] (H, W fixed if the module
        has an `input_size`), every dimension >= 1; InvalidArgumentError naming the expected
        shape otherwise."""
        h, w = self.input_size or (None, None)
        images = checked_input(images, [None, h, w, 3], expected_images(self.input_size))
        return self.segment(images)

    def segment(self, images):
        images = tf.convert_to_tensor(images, tf.uint8)
        if images.shape[1] is not None and images.shape[2] is not None:
            h, w = int(images.shape[1]), int(images.shape[2])
            ph, pw = padded_size(h, w)
            ph, pw = max(ph, self.min_size), max(pw, self.min_size)
        else:
            shape = tf.shape(images)
            h, w = shape[1], shape[2]
            ph, pw = serving_size(h, w, self.min_size)
        x = self.net.preprocess(images)
        x = tf.pad(x, [[0, 0], [0, ph - h], [0, pw - w], [0, 0]])  # zeros after preprocessing
        serving_logits = getattr(self.net, 'serving_logits', None)
        logits = serving_logits(x) if serving_logits else self.net(x, training=False)
        upsample_labels = getattr(self.net, 'upsample_labels', None)  # sparse_label_upsampling
        if upsample_labels and not self.with_probabilities:
            return {'labels': upsample_labels(logits, tf.stack([ph, pw]), (h, w))}
        logits = self.net.upsample_logits(logits, tf.stack([ph, pw]))[:, :h, :w]
        # top_k(1): the argmax (first index among equals) at half the cost of ArgMax on CPU
        out = {'labels': tf.math.top_k(logits, k=1).indices[..., 0]}
        if self.with_probabilities:
            out['probabilities'] = tf.nn.softmax(logits, axis=-1)
        return out


def export_saved_model(
    net, export_dir, *, probabilities=True, optimize=True, input_size=None, metadata=None
):
    """`net` with its serving rewrites in a `SegmentationModule`, saved; returns the module."""
    module = SegmentationModule(
        serving_network(net, optimize), probabilities=probabilities, input_size=input_size
    )
    signature = module.serve.get_concrete_function()
    tf.saved_model.save(module, export_dir, signatures={SIGNATURE: signature})
    info = dict(
        metadata or {},
        num_classes=module.num_classes,
        min_size=module.min_size,
        probabilities=module.with_probabilities,
        optimize=bool(optimize),
        network=dict(class_name=model_name(net), **net.get_config()),
        tensorflow=tf.__version__,
    )
    os.makedirs(os.path.join(export_dir, os.path.dirname(METADATA)), exist_ok=True)
    with open(os.path.join(export_dir, METADATA), 'w') as f:
        json.dump(info, f, indent=1)
    return module


def is_saved_model(path):
    return os.path.isdir(path) and (
        os.path.isfile(os.path.join(path, 'saved_model.pb'))
        or os.path.isfile(os.path.join(path, 'saved_model.pbtxt'))
    )


def load_metadata(export_dir):
    path = os.path.join(export_dir, METADATA)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_signature(export_dir):
    """(serving_default concrete function, loaded object) of an exported SavedModel.

    Keep the loaded object alive as long as the function is used.
    """
    try:
        loaded = tf.saved_model.load(export_dir)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise UserError(
            f'{export_dir}: not a loadable SavedModel '
            f'({str(e).splitlines()[0] if str(e) else type(e).__name__})'
        ) from None
    if SIGNATURE not in loaded.signatures:
        raise UserError(
            f'{export_dir}: SavedModel has no {SIGNATURE!r} signature '
            f'(has: {", ".join(loaded.signatures) or "none"})'
        )
    return loaded.signatures[SIGNATURE], loaded


# ---------------------------------------------------------------------------------------------
# TFLite
# ---------------------------------------------------------------------------------------------
def tflite_model(net, input_size, *, probabilities=True, optimize=True):
    """TFLite flatbuffer (bytes) for uint8 images [1, H, W, 3]: `net` with the serving rewrites
    TFLite takes (`serving_network(tflite=True)`; only batch-norm folding unless `optimize`)."""
    h, w = input_size
    module = SegmentationModule(
        serving_network(net, optimize, tflite=True),
        probabilities=probabilities,
        name='icnet_tflite',
    )
    fixed = tf.function(
        module.segment, input_signature=[tf.TensorSpec([1, h, w, 3], tf.uint8, name='images')]
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fixed.get_concrete_function()], module
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with _captured_stderr() as captured:  # the MLIR converter's op summary, shown on failure
        try:
            return converter.convert()
        except Exception:
            sys.stderr.write(captured())
            raise


@contextlib.contextmanager
def _captured_stderr():
    """Redirect file descriptor 2 (C++ logging) to a temporary file; yields a reader."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode='w+b') as f:
        os.dup2(f.fileno(), 2)

        def read():
            f.seek(0)
            return f.read().decode('utf-8', 'replace')

        try:
            yield read
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def tflite_interpreter(model_content, num_threads=None):
    """A `tf.lite.Interpreter` for a `tflite_model`, tensors allocated.

    `allocate_tensors()` comes first: TFLite applies its default XNNPACK delegate only then (a
    model used only through `get_signature_runner()` runs without it: `xnnpack_partitions` is
    0 and the convolutions run on TFLite's own kernels).
    """
    interpreter = tf.lite.Interpreter(model_content=model_content, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def xnnpack_partitions(interpreter):
    """How many parts of the graph a delegate (XNNPACK, the CPU default) runs: its DELEGATE
    nodes (0: no delegate applied)."""
    return sum(op['op_name'] == 'DELEGATE' for op in interpreter._get_ops_details())


def run_tflite(model_content, images, num_threads=None):
    """Run a `tflite_model` on uint8 images [1, H, W, 3] (XNNPACK on, see
    `tflite_interpreter`); returns {output name: array}."""
    runner = tflite_interpreter(model_content, num_threads).get_signature_runner()
    return runner(images=np.asarray(images, np.uint8))


def sample_image(h, w, seed=0):
    """A smooth deterministic uint8 RGB test image [1, h, w, 3] (not noise: stable labels)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    channels = [
        127.5
        + 120
        * np.sin(xx / (w / rng.uniform(2, 6)) + yy / (h / rng.uniform(2, 6)) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    return np.stack(channels, -1).clip(0, 255).astype(np.uint8)[None]
