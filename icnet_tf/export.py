"""`python -m icnet_tf.export`: a SavedModel (and optionally TFLite) for serving ICNet.

    python -m icnet_tf.export --restore_from W --model ICNet_BN --num_classes 19 \
        [--filter_scale 1] --export_dir DIR [--no_probabilities] [--tflite --input_size 1024,2048]

The SavedModel's `serving_default` signature takes `images`: uint8 RGB `[N, H, W, 3]` of ANY
height and width and returns `labels` (int32 `[N, H, W]`, trainIds) and, unless
--no_probabilities, `probabilities` (float32 `[N, H, W, C]`). Everything the original does
around the graph happens inside: RGB -> BGR, mean subtraction, zero padding (bottom/right) to a
multiple of 32 and to at least the network's minimum size, the forward pass, `conv6_cls`
resized with align_corners=True to the padded size, cropped back, argmax / softmax.

The exported network is the BN-merged `ICNet` made by `fold.fold_batch_norm` (an `ICNet_BN` is
folded; the auxiliary heads are dropped), so the SavedModel holds 64 biased convolutions and no
batch norm. With --optimize (the default) it also runs through `ServingChain`, which rewrites a
few spots of the graph into cheaper forms that are equal in exact arithmetic (see there);
--nooptimize exports the plain folded graph. `--tflite` additionally writes `model.tflite` for
one fixed `--input_size` (TFLite cannot resize to run-time sizes well) from the plain folded
graph, and checks that it runs and agrees with the SavedModel on a test image.

Load the result with `tf.saved_model.load(DIR).signatures['serving_default']`, or pass DIR as
`--restore_from` to `python -m icnet_tf.inference`.
"""

import contextlib
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import flags

from converters.errors import UserError
from icnet_tf import cli
from icnet_tf.fold import fold_batch_norm
from icnet_tf.icnet import ICNet, ICNetChain
from icnet_tf.network import (
    caffe_interp_size,
    layer,
    resize_bilinear_align_corners,
    resize_bilinear_legacy,
)
from icnet_tf.predict import IMG_MEAN_BGR, padded_size

FLAGS = flags.FLAGS

METADATA = os.path.join('assets.extra', 'icnet_tf.json')
SIGNATURE = 'serving_default'


# ---------------------------------------------------------------------------------------------
# Serving-graph rewrites (exact in real arithmetic)
# ---------------------------------------------------------------------------------------------
class LazyZoom:
    """Stands for `pad(interp(base, z_factor=2), pad)` without computing it.

    The Caffe zoom (`interp(z_factor=2)`, size 2h-1, align_corners=True) is linear, so a linear
    layer that follows it can often run on the 4x smaller `base` instead; see `ServingChain`.
    """

    def __init__(self, base, pad=0):
        self.base = base
        self.pad = pad

    def materialize(self):
        shape = tf.shape(self.base)
        size = tf.stack(
            [caffe_interp_size(shape[1], z_factor=2), caffe_interp_size(shape[2], z_factor=2)]
        )
        out = resize_bilinear_align_corners(self.base, size)
        if self.pad:
            p = self.pad
            out = tf.pad(out, [[0, 0], [p, p], [p, p], [0, 0]])
        return out


def _materialized(value):
    if isinstance(value, LazyZoom):
        return value.materialize()
    if isinstance(value, list):
        return [_materialized(v) for v in value]
    return value


def zoom_dilated_conv(x, kernel, bias=None):
    """`conv(pad(zoom2(x), 2), kernel, dilation=2, VALID) + bias` at a quarter of the cost.

    With `zoom2` the align-corners bilinear zoom of Caffe's `Interp(zoom_factor=2)` (h -> 2h-1)
    and a 3x3 kernel, the dilated convolution only ever combines zoomed pixels of one parity,
    and bilinear interpolation commutes with a linear filter, so

        conv_d2(pad2(zoom2(x))) = zoom2(conv3x3(pad1(x))) - conv_d2(E),

    where E = zoom2(pad1(x)) - pad2(zoom2(x)) is zero except on the frame of rows/columns next
    to the border: there the zoom of the padded map holds half the border pixels while the
    original holds its zero padding. Their contribution only reaches output rows 1 and 2h-3
    and columns 1 and 2w-3 and is computed with 1x3 / 3x1 convolutions on those lines. Needs
    h, w >= 2 (guaranteed by the serving size).
    """
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    low = tf.nn.conv2d(x, kernel, 1, 'SAME')
    if bias is not None:
        low = tf.nn.bias_add(low, bias)
    oh, ow = 2 * h - 1, 2 * w - 1
    y = resize_bilinear_align_corners(low, tf.stack([oh, ow]))

    # Rows of E: the first/last image row, zero-padded by one column, zoomed along the width, /2.
    rows = tf.pad(tf.concat([x[:, :1], x[:, -1:]], axis=1), [[0, 0], [0, 0], [1, 1], [0, 0]])
    rows = resize_bilinear_align_corners(rows, tf.stack([2, 2 * w + 3])) * 0.5
    row_top = tf.nn.conv2d(rows[:, :1], kernel[:1], 1, 'VALID', dilations=2)  # [B,1,ow,C]
    row_bottom = tf.nn.conv2d(rows[:, 1:], kernel[2:], 1, 'VALID', dilations=2)
    # Columns of E, without the rows already counted above (its rows 1 and 2h+1).
    cols = tf.pad(tf.concat([x[:, :, :1], x[:, :, -1:]], axis=2), [[0, 0], [1, 1], [0, 0], [0, 0]])
    cols = resize_bilinear_align_corners(cols, tf.stack([2 * h + 3, 2])) * 0.5
    keep = tf.tensor_scatter_nd_update(
        tf.ones([2 * h + 3], x.dtype), [[1], [2 * h + 1]], tf.zeros([2], x.dtype)
    )
    cols = cols * tf.reshape(keep, [1, -1, 1, 1])
    col_left = tf.nn.conv2d(cols[:, :, :1], kernel[:, :1], 1, 'VALID', dilations=2)  # [B,oh,1,C]
    col_right = tf.nn.conv2d(cols[:, :, 1:], kernel[:, 2:], 1, 'VALID', dilations=2)

    channels = tf.shape(kernel)[3]
    batch = tf.range(b)
    row_index = tf.reshape(
        tf.stack(tf.meshgrid(batch, tf.stack([1, oh - 2]), indexing='ij'), axis=-1), [-1, 2]
    )
    row_update = tf.reshape(tf.concat([row_top, row_bottom], axis=1), [-1, ow, channels])
    y = tf.tensor_scatter_nd_sub(y, row_index, row_update)
    col_index = tf.reshape(
        tf.stack(tf.meshgrid(batch, tf.range(oh), tf.stack([1, ow - 2]), indexing='ij'), axis=-1),
        [-1, 3],
    )
    col_update = tf.reshape(tf.concat([col_left, col_right], axis=2), [-1, channels])
    y = tf.tensor_scatter_nd_sub(y, col_index, col_update)
    return tf.ensure_shape(y, [x.shape[0], None, None, kernel.shape[3]])


class ServingChain(ICNetChain):
    """ICNet's chain with inference-only rewrites, all equal to the plain ops in real arithmetic.

    * `interp(z_factor=2)` returns a `LazyZoom`; a following `zero_padding(2)` + 3x3 convolution
      with dilation 2 and no ReLU (`conv_sub4`, `conv_sub2`) runs as `zoom_dilated_conv` on the
      un-zoomed map (4x fewer multiply-adds in the two most expensive convolutions), and a 1x1
      convolution without ReLU (`conv6_cls`) runs before the zoom and stays lazy, so the final
      resize to the image size samples the 1/8 logits directly (a bilinear zoom followed by an
      align-corners resize is the align-corners resize of the original: bilinear interpolation
      reproduces bilinear functions). Every other op materializes a lazy input first.
    * Dilated convolutions call `tf.nn.conv2d(dilations=d)` instead of `atrous_conv2d`'s
      space-to-batch form, so grappler fuses bias and ReLU into them.
    * `add` with run-time shapes skips the TF1-default resize when the shapes already agree (a
      `tf.cond`; the resize is the identity then) and adds two inputs with `AddV2`, which the
      remapper can fuse into the preceding convolution.
    """

    @layer
    def interp(self, x, s_factor=1, z_factor=1, *, name):
        if s_factor == 1 and z_factor == 2 and not isinstance(x, LazyZoom):
            return LazyZoom(x)
        return ICNetChain.interp.__wrapped__(self, _materialized(x), s_factor, z_factor, name=name)

    @layer
    def zero_padding(self, x, paddings, *, name):
        if isinstance(x, LazyZoom) and x.pad == 0 and isinstance(paddings, int):
            return LazyZoom(x.base, pad=paddings)
        return ICNetChain.zero_padding.__wrapped__(self, _materialized(x), paddings, name=name)

    @layer
    def conv(self, x, k_h, k_w, c_o, s_h, s_w, *, name, relu=True, padding='VALID', biased=True):
        if (
            isinstance(x, LazyZoom)
            and x.pad == 0
            and (k_h, k_w, s_h, s_w) == (1, 1, 1, 1)
            and not relu
        ):
            p = self._conv_params(name, x.base, k_h, k_w, c_o, biased)
            y = tf.nn.conv2d(x.base, p['weights'], 1, 'VALID')
            return LazyZoom(tf.nn.bias_add(y, p['biases']) if biased else y)
        return ICNetChain.conv.__wrapped__(
            self,
            _materialized(x),
            k_h,
            k_w,
            c_o,
            s_h,
            s_w,
            name=name,
            relu=relu,
            padding=padding,
            biased=biased,
        )

    @layer
    def atrous_conv(
        self, x, k_h, k_w, c_o, dilation, *, name, relu=True, padding='VALID', biased=True
    ):
        if (
            isinstance(x, LazyZoom)
            and x.pad == 2
            and dilation == 2
            and (k_h, k_w) == (3, 3)
            and padding == 'VALID'
            and not relu
        ):
            p = self._conv_params(name, x.base, k_h, k_w, c_o, biased)
            return zoom_dilated_conv(x.base, p['weights'], p.get('biases'))
        x = _materialized(x)
        p = self._conv_params(name, x, k_h, k_w, c_o, biased)
        y = tf.nn.conv2d(x, p['weights'], 1, padding, dilations=dilation)
        if biased:
            y = tf.nn.bias_add(y, p['biases'])
        return tf.nn.relu(y) if relu else y

    @layer
    def add(self, inputs, *, name):
        inputs = _materialized(inputs)
        first, second = inputs[0], inputs[1]
        known = first.shape[1:3].is_fully_defined() and second.shape[1:3].is_fully_defined()
        target = tf.shape(second)[1:3]
        if known and first.shape[1:3] != second.shape[1:3]:
            first = resize_bilinear_legacy(first, target)
        elif not known:
            first = tf.cond(
                tf.reduce_all(tf.equal(tf.shape(first)[1:3], target)),
                lambda: first,
                lambda: resize_bilinear_legacy(first, target),
            )
        rest = list(inputs[1:])
        return tf.add(first, rest[0]) if len(rest) == 1 else tf.add_n([first] + rest)

    def _conv_params(self, name, x, k_h, k_w, c_o, biased):
        specs = {'weights': (k_h, k_w, int(x.shape[-1]), c_o)}
        if biased:
            specs['biases'] = (c_o,)
        return self._params(name, specs)


def _materializing(op):
    raw = op.__wrapped__

    def materialize_inputs(self, x, *args, **kwargs):
        return raw(self, _materialized(x), *args, **kwargs)

    materialize_inputs.__name__ = raw.__name__
    return layer(materialize_inputs)


# Every other layer op of the chain materializes lazy inputs before running.
for _name in dir(ICNetChain):
    _op = getattr(ICNetChain, _name)
    if hasattr(_op, '__wrapped__') and _name not in vars(ServingChain):
        setattr(ServingChain, _name, _materializing(_op))


class ServingICNet(ICNet):
    """The BN-merged ICNet built with `ServingChain` (inference only).

    `net(x)` returns the `conv6_cls` logits like `ICNet`; `net(x, lazy=True)` may return a
    `LazyZoom` whose `base` holds the logits before the final 2x zoom. With `input_order`
    'RGB' (set by `serving_network`) the two convolutions that read the image have their input
    channels reversed, so the network takes mean-subtracted RGB instead of BGR and the serving
    function needs no channel swap.
    """

    chain_class = ServingChain
    input_order = 'BGR'

    def __call__(self, images, training=False, *, update_stats=False, outputs=None, lazy=False):
        if training:
            raise ValueError('ServingICNet is for inference only (training=False)')
        out = super().__call__(images, training=False, outputs=outputs)
        if lazy:
            return out
        if isinstance(out, dict):
            return {k: _materialized(v) for k, v in out.items()}
        return _materialized(out)


# The convolutions that read the image itself (directly, or after the channel-wise data_sub2).
IMAGE_CONVS = ('conv1_sub1', 'conv1_1_3x3_s2')


def serving_network(net, optimize=True):
    """The folded (BN-merged) network to export: `ServingICNet` (RGB input) or plain `ICNet`."""
    if not optimize:
        return fold_batch_norm(net, cls=ICNet)
    folded = fold_batch_norm(net, cls=ServingICNet)
    for name in IMAGE_CONVS:
        kernel = folded.params[name]['weights']
        kernel.assign(tf.reverse(kernel, axis=[2]))
    folded.input_order = 'RGB'
    return folded


# ---------------------------------------------------------------------------------------------
# The serving function
# ---------------------------------------------------------------------------------------------
def serving_size(h, w, min_size):
    """Padded size of the original's check_input (`predict.padded_size`), at least min_size."""
    ph, pw = padded_size(h, w)
    return tf.maximum(ph, min_size), tf.maximum(pw, min_size)


class SegmentationModule(tf.Module):
    """uint8 RGB images of any size -> trainId labels (and softmax), preprocessing included."""

    def __init__(self, net, *, probabilities=True, name='icnet_serving'):
        super().__init__(name=name)
        self.net = net
        self.num_classes = net.num_classes
        self.min_size = int(net.build_input_shape()[1])
        self.with_probabilities = bool(probabilities)
        self.serve = tf.function(
            self.segment,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name='images')],
        )

    def segment(self, images):
        images = tf.convert_to_tensor(images, tf.uint8)
        shape = tf.shape(images)
        h, w = shape[1], shape[2]
        ph, pw = serving_size(h, w, self.min_size)
        x = tf.cast(images, tf.float32)
        if getattr(self.net, 'input_order', 'BGR') == 'RGB':
            x = tf.nn.bias_add(x, -tf.constant(IMG_MEAN_BGR[::-1]))  # x + (-m) == x - m
        else:
            x = tf.nn.bias_add(tf.reverse(x, axis=[-1]), -tf.constant(IMG_MEAN_BGR))
        x = tf.pad(x, [[0, 0], [0, ph - h], [0, pw - w], [0, 0]])  # zeros after the mean
        if isinstance(self.net, ServingICNet):
            logits = self.net(x, lazy=True)
            if isinstance(logits, LazyZoom) and logits.pad == 0:
                logits = logits.base  # resize_ac(zoom2(z), s) == resize_ac(z, s)
            logits = _materialized(logits)
        else:
            logits = self.net(x, training=False)
        logits = resize_bilinear_align_corners(logits, tf.stack([ph, pw]))[:, :h, :w]
        # top_k(1): the argmax (first index among equals) at half the cost of ArgMax on CPU
        out = {'labels': tf.math.top_k(logits, k=1).indices[..., 0]}
        if self.with_probabilities:
            out['probabilities'] = tf.nn.softmax(logits, axis=-1)
        return out


def export_saved_model(net, export_dir, *, probabilities=True, optimize=True, metadata=None):
    """Fold `net` (ICNet_BN or ICNet), wrap it in `SegmentationModule`, save; returns the module."""
    module = SegmentationModule(serving_network(net, optimize), probabilities=probabilities)
    signature = module.serve.get_concrete_function()
    tf.saved_model.save(module, export_dir, signatures={SIGNATURE: signature})
    info = dict(
        metadata or {},
        num_classes=module.num_classes,
        min_size=module.min_size,
        probabilities=module.with_probabilities,
        optimize=bool(optimize),
        network=dict(class_name=type(module.net).__name__, **module.net.get_config()),
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
def tflite_model(net, input_size, *, probabilities=True):
    """TFLite flatbuffer (bytes) of the plain folded graph for uint8 images [1, H, W, 3]."""
    h, w = input_size
    module = SegmentationModule(
        serving_network(net, optimize=False), probabilities=probabilities, name='icnet_tflite'
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


def run_tflite(model_content, images):
    """Run a `tflite_model` on uint8 images [1, H, W, 3]; returns {output name: array}."""
    interpreter = tf.lite.Interpreter(model_content=model_content)
    runner = interpreter.get_signature_runner()
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


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _parse_size(value, flag):
    parts = cli.csv(value)
    try:
        size = tuple(int(v) for v in parts)
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise UserError(f'--{flag}: expected H,W (two positive integers), got {value!r}')
    return size


def main(argv):
    del argv
    from icnet_tf import build_model

    tf.get_logger().setLevel(logging.ERROR)  # SavedModel/converter INFO chatter
    if not FLAGS.export_dir:
        raise UserError('--export_dir is required: the directory to write the SavedModel to')
    if os.path.exists(FLAGS.export_dir) and os.listdir(FLAGS.export_dir) and not FLAGS.overwrite:
        raise UserError(f'{FLAGS.export_dir}: exists and is not empty (pass --overwrite)')
    if FLAGS.tflite and not FLAGS.input_size:
        raise UserError('--tflite needs --input_size H,W (TFLite models have a fixed size)')
    tflite_size = _parse_size(FLAGS.input_size, 'input_size') if FLAGS.tflite else None
    if FLAGS.model not in ('ICNet_BN', 'ICNet'):
        raise UserError(f'--model {FLAGS.model}: export supports ICNet_BN and ICNet')
    try:
        bins = tuple(int(b) for b in cli.csv(FLAGS.psp_bins))
    except ValueError:
        raise UserError(
            f'--psp_bins: expected integers like 1,2,3,6, got {FLAGS.psp_bins!r}'
        ) from None
    try:
        net = build_model(
            FLAGS.model,
            num_classes=FLAGS.num_classes,
            filter_scale=FLAGS.filter_scale,
            psp_bins=bins,
            psp_pooling=FLAGS.psp_pooling,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    if FLAGS.restore_from:
        if is_saved_model(FLAGS.restore_from):
            raise UserError(f'{FLAGS.restore_from}: is already an exported SavedModel')
        print(net.load(FLAGS.restore_from, skip=('sub4_out', 'sub24_out'), verbose=False))
    else:
        print(
            'warning: no --restore_from given: exporting RANDOM weights (useful for tests '
            'and benchmarks only)',
            file=sys.stderr,
        )
    start = time.perf_counter()
    module = export_saved_model(
        net,
        FLAGS.export_dir,
        probabilities=not FLAGS.no_probabilities,
        optimize=FLAGS.optimize,
        metadata=dict(model=FLAGS.model, restore_from=FLAGS.restore_from),
    )
    outputs = 'labels' + ('' if FLAGS.no_probabilities else ', probabilities')
    print(
        f'wrote SavedModel to {FLAGS.export_dir}/ in {time.perf_counter() - start:.1f} s: '
        f'{type(net).__name__} folded into {type(module.net).__name__} '
        f'({len(module.net.params)} convolutions, no batch norm); signature '
        f'{SIGNATURE!r}: images uint8 [N, H, W, 3] -> {outputs}'
    )
    if tflite_size:
        h, w = tflite_size
        content = tflite_model(net, (h, w), probabilities=not FLAGS.no_probabilities)
        path = os.path.join(FLAGS.export_dir, 'model.tflite')
        with open(path, 'wb') as f:
            f.write(content)
        image = sample_image(h, w)
        got = run_tflite(content, image)['labels']
        ref = module.serve(tf.constant(image))['labels'].numpy()
        agreement = float(np.mean(got == ref))
        print(
            f'wrote {path} ({len(content) / 1e6:.1f} MB, input uint8 [1, {h}, {w}, 3]); '
            f'it runs and agrees with the SavedModel on {agreement * 100:.3f}% of the pixels '
            'of a test image'
        )


if __name__ == '__main__':
    flags.DEFINE_string('restore_from', None, '.npy, checkpoint directory or prefix')
    flags.DEFINE_string('export_dir', None, 'directory to write the SavedModel to')
    flags.DEFINE_bool('no_probabilities', False, 'export only the labels output')
    flags.DEFINE_bool('optimize', True, 'apply the exact serving-graph rewrites (ServingChain)')
    flags.DEFINE_bool('tflite', False, 'also write model.tflite for a fixed --input_size')
    flags.DEFINE_string('input_size', None, 'H,W of the TFLite model, e.g. 1024,2048')
    flags.DEFINE_string('psp_bins', '1,2,3,6', 'pyramid bins (the TF1 ICNet_BN used 1,2,3,4)')
    flags.DEFINE_enum(
        'psp_pooling',
        'caffe',
        ['caffe', 'adaptive'],
        'pyramid kernels: caffe (prototxt table at conv5_3 33x65) or adaptive',
    )
    flags.DEFINE_bool('overwrite', False, 'allow writing into a non-empty --export_dir')
    cli.define_model_flags()
    cli.run(main)
