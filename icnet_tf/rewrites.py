"""Exact serving-graph rewrites: the table the exporter applies to a network that declares them.

A network lists the rewrites it admits in `serving_rewrites` (data, e.g. ICNet's
`('fold_batch_norm', 'zoom_before_conv', 'rgb_input')`); `serving_network(net, optimize)`
applies them in that order, each a function `net -> new net` computing the same function in
exact arithmetic (the results differ only by float rounding; tests check every one against
the unrewritten network). With `optimize=False` only the rewrites marked `always` run (batch
norm folding: the export is the merged structure either way). Adding a rewrite is one function
and one row of `REWRITES`; a network opts in by naming it.

* `fold_batch_norm`: batch norm folded into the preceding convolutions (`icnet_tf.fold`), into
  the structure the network names with `merged_network()`; auxiliary heads dropped.
* `zoom_before_conv`: the network's chain class is extended with `LazyZoomChain`: a Caffe zoom
  `interp(z_factor=2)` is kept lazy (`LazyZoom`) and a following linear layer runs on the small
  map (`zoom_dilated_conv` for `zero_padding(2)` + 3x3 dilation-2 convolutions; 1x1
  convolutions before the zoom); the final zoom of the logits is skipped when the network
  upsamples its logits with align_corners=True (`resize_ac(zoom2(z), s) == resize_ac(z, s)`:
  bilinear interpolation reproduces bilinear functions). Dilated convolutions use
  `tf.nn.conv2d(dilations=d)` (grappler fuses bias and ReLU into it) and `add` skips the
  identity resize with a run-time check.
* `rgb_input`: for a network with the Caffe input convention (`Network.preprocess`: BGR minus
  the mean), the input channels of the convolutions that read the image (`net.image_convs`) are
  reversed, so the network takes mean-subtracted RGB and the serving graph has no channel swap.
"""

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from icnet_tf.fold import fold_batch_norm, network_weights
from icnet_tf.network import (
    CAFFE_BGR_MEAN,
    Network,
    caffe_interp_size,
    layer,
    resize_bilinear_align_corners,
    resize_bilinear_legacy,
)


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


class LazyZoomChain:
    """A chain mixin with inference-only rewrites, all equal to the plain ops in real arithmetic.

    Mixed in front of a network's own chain class (`zoom_before_conv`); the plain ops are the
    next class's in the MRO (called unwrapped, so each layer is recorded once).

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
        return super().interp.__wrapped__(self, _materialized(x), s_factor, z_factor, name=name)

    @layer
    def zero_padding(self, x, paddings, *, name):
        if isinstance(x, LazyZoom) and x.pad == 0 and isinstance(paddings, int):
            return LazyZoom(x.base, pad=paddings)
        return super().zero_padding.__wrapped__(self, _materialized(x), paddings, name=name)

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
        return super().conv.__wrapped__(
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

    # Ops that take a LazyZoom; every other op gets a materialized tensor (`prepare_input`).
    LAZY_OPS = ('interp', 'zero_padding', 'conv', 'atrous_conv', 'add')

    def prepare_input(self, op_name, layer_input):
        if op_name in self.LAZY_OPS:
            return layer_input
        return _materialized(super().prepare_input(op_name, layer_input))

    def _conv_params(self, name, x, k_h, k_w, c_o, biased):
        specs = {'weights': (k_h, k_w, int(x.shape[-1]), c_o)}
        if biased:
            specs['biases'] = (c_o,)
        return self._params(name, specs)


class LazyZoomNetwork:
    """Network mixin of `zoom_before_conv` (inference only).

    `net(x)` returns the logits like the plain network; `net(x, lazy=True)` may return a
    `LazyZoom` whose `base` holds the logits before the final 2x zoom; `serving_logits(x)`
    returns what the exporter resizes to the image (the un-zoomed logits where that is exact).
    """

    def __call__(self, images, training=False, *, update_stats=False, outputs=None, lazy=False):
        if training:
            raise ValueError(f'{type(self).__name__} is for inference only (training=False)')
        out = super().__call__(images, training=False, outputs=outputs)
        if lazy:
            return out
        if isinstance(out, dict):
            return {k: _materialized(v) for k, v in out.items()}
        return _materialized(out)

    def serving_logits(self, x):
        logits = self(x, lazy=True)
        aligned = type(self).upsample_logits is Network.upsample_logits  # align_corners=True
        if isinstance(logits, LazyZoom) and logits.pad == 0 and aligned:
            return logits.base  # resize_ac(zoom2(z), s) == resize_ac(z, s)
        return _materialized(logits)


class RGBInputNetwork:
    """Network mixin of `rgb_input`: takes RGB minus the (RGB-ordered) Caffe mean."""

    input_order = 'RGB'

    def preprocess(self, rgb):
        x = tf.cast(rgb, tf.float32)
        return tf.nn.bias_add(x, -tf.constant(CAFFE_BGR_MEAN[::-1]))  # x + (-m) == x - m


def _derived(net, mixin, prefix, weights=None, **attrs):
    """A new network of class `<prefix><Class>(mixin, Class)` with `net`'s config and weights."""
    cls = type(net)
    derived = type(f'{prefix}{cls.__name__}', (mixin, cls), attrs)
    out = derived(**net.get_config())
    out.load(network_weights(net) if weights is None else weights, verbose=False)
    return out


def zoom_before_conv(net):
    chain = type(f'LazyZoom{net.chain_class.__name__}', (LazyZoomChain, net.chain_class), {})
    return _derived(net, LazyZoomNetwork, 'Serving', chain_class=chain)


def rgb_input(net):
    if type(net).preprocess is not Network.preprocess:
        raise ValueError(f'rgb_input needs the Caffe BGR input convention ({type(net).__name__})')
    weights = network_weights(net)
    for name in net.image_convs:
        weights[name]['weights'] = weights[name]['weights'][:, :, ::-1, :].copy()
    return _derived(net, RGBInputNetwork, 'RGB', weights)


@dataclass(frozen=True)
class Rewrite:
    apply: Callable
    always: bool = False  # also with optimize=False


REWRITES = {
    'fold_batch_norm': Rewrite(fold_batch_norm, always=True),
    'zoom_before_conv': Rewrite(zoom_before_conv),
    'rgb_input': Rewrite(rgb_input),
}


def serving_network(net, optimize=True):
    """`net` with its declared `serving_rewrites` applied (only the `always` ones unless
    `optimize`); a network that declares none is served as it is."""
    for name in net.serving_rewrites:
        if name not in REWRITES:
            raise ValueError(f'{type(net).__name__} declares an unknown rewrite {name!r}')
        if optimize or REWRITES[name].always:
            net = REWRITES[name].apply(net)
    return net
