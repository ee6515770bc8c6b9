"""Exact serving-graph rewrites: the table the exporter applies to a network that declares them.

A network lists the rewrites it admits in `serving_rewrites` (data, e.g. ICNet's
`('fold_batch_norm', 'zoom_before_conv', 'rgb_input', 'sparse_label_upsampling')`);
`serving_network(net, optimize)` applies them in that order, each a function `net -> new net`
computing the same function in exact arithmetic (the results differ only by float rounding;
tests check every one against the unrewritten network). With `optimize=False` only the
rewrites marked `always` run (batch norm folding: the export is the merged structure either
way); a TFLite model gets the rows marked `tflite`. Adding a rewrite is one function and one row
of `REWRITES`; a network opts in by naming it.

* `fold_batch_norm`: batch norm folded into the preceding convolutions (`icnet_tf.fold`), into
  the structure the network names with `merged_network()`; auxiliary heads dropped.
* `zoom_before_conv` (also a training rewrite: `training_chain`, `TrainingZoomChain`): the
  network's chain class is extended with `LazyZoomChain`: a Caffe zoom
  `interp(z_factor=2)` is kept lazy (`LazyZoom`) and a following linear layer runs on the small
  map (`zoom_dilated_conv` for `zero_padding(2)` + 3x3 dilation-2 convolutions; 1x1
  convolutions before the zoom); the final zoom of the logits is skipped when the network
  upsamples its logits with align_corners=True (`resize_ac(zoom2(z), s) == resize_ac(z, s)`:
  bilinear interpolation reproduces bilinear functions). Dilated convolutions use
  `tf.nn.conv2d(dilations=d)` (grappler fuses bias and ReLU into it) and `add` skips the
  identity resize with a run-time check.
* `rgb_input`: for a network with the Caffe input convention (`Network.preprocess`: BGR minus
  the mean), the input channels of the convolutions that read the image (`net.image_convs`) are
  reversed, so the network takes mean-subtracted RGB and the serving graph has no channel swap;
  the mean is subtracted as one bias per image row (the same float32 results, 3x faster).
* `sparse_label_upsampling` (labels-only serving): the final align-corners resize of the logits
  to the image and the argmax over classes are computed only where they can change a label
  (`bilinear_labels`); the labels are those of the unrewritten resize + `top_k`, bit for bit,
  ties included. The probabilities output (when exported) still takes the full resize.
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


def native_dilated_conv(x, kernel):
    """VALID convolution with dilation 2 (`tf.nn.conv2d(dilations=2)`)."""
    return tf.nn.conv2d(x, kernel, 1, 'VALID', dilations=2)


def space_to_batch_dilated_conv(x, kernel):
    """The same as `native_dilated_conv` through `tf.nn.atrous_conv2d` (space to batch), whose
    gradients exist on every device and dtype (TF 2.15's CPU float16 dilated kernels have none)."""
    return tf.nn.atrous_conv2d(x, kernel, 2, 'VALID')


def zoom_dilated_conv(x, kernel, bias=None, dilated_conv=native_dilated_conv):
    """`conv(pad(zoom2(x), 2), kernel, dilation=2, VALID) + bias` at a quarter of the cost.

    With `zoom2` the align-corners bilinear zoom of Caffe's `Interp(zoom_factor=2)` (h -> 2h-1)
    and a 3x3 kernel, the dilated convolution only ever combines zoomed pixels of one parity,
    and bilinear interpolation commutes with a linear filter, so

        conv_d2(pad2(zoom2(x))) = zoom2(conv3x3(pad1(x))) - conv_d2(E),

    where E = zoom2(pad1(x)) - pad2(zoom2(x)) is zero except on the frame of rows/columns next
    to the border: there the zoom of the padded map holds half the border pixels while the
    original holds its zero padding. Their contribution only reaches output rows 1 and 2h-3
    and columns 1 and 2w-3 and is computed with 1x3 / 3x1 convolutions on those lines. Needs
    h, w >= 2 (guaranteed by the serving size). The lines are subtracted with a scatter when h,
    w are only known at run time, and by slicing and concatenating when they are static (the
    ops TFLite's builtins have: `tflite_model` converts this path). `dilated_conv(x, kernel)`
    computes the lines' dilation-2 convolutions.
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
    row_top = dilated_conv(rows[:, :1], kernel[:1])  # [B,1,ow,C]
    row_bottom = dilated_conv(rows[:, 1:], kernel[2:])
    # Columns of E, without the rows already counted above (its rows 1 and 2h+1).
    cols = tf.pad(tf.concat([x[:, :, :1], x[:, :, -1:]], axis=2), [[0, 0], [1, 1], [0, 0], [0, 0]])
    cols = resize_bilinear_align_corners(cols, tf.stack([2 * h + 3, 2])) * 0.5
    one, zero = tf.ones([1], x.dtype), tf.zeros([1], x.dtype)
    keep = tf.concat([one, zero, tf.ones(tf.reshape(2 * h - 1, [1]), x.dtype), zero, one], 0)
    cols = cols * tf.reshape(keep, [1, -1, 1, 1])
    col_left = dilated_conv(cols[:, :, :1], kernel[:, :1])  # [B,oh,1,C]
    col_right = dilated_conv(cols[:, :, 1:], kernel[:, 2:])

    out_shape = [x.shape[0], None, None, kernel.shape[3]]
    if x.shape[1] is not None and x.shape[2] is not None:  # static: slices and concat
        y = _subtract_lines(y, row_top, row_bottom, axis=1, size=2 * int(x.shape[1]) - 1)
        y = _subtract_lines(y, col_left, col_right, axis=2, size=2 * int(x.shape[2]) - 1)
        return tf.ensure_shape(y, out_shape)
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
    return tf.ensure_shape(y, out_shape)


def _subtract_lines(y, first, last, *, axis, size):
    """`y` minus `first` at index 1 and minus `last` at index `size - 2` along `axis` (both at
    index 1 when size == 3), by slicing and concatenating (`size` static, >= 3)."""

    def part(start, stop):
        return y[:, start:stop] if axis == 1 else y[:, :, start:stop]

    if size == 3:
        parts = [part(0, 1), part(1, 2) - first - last, part(2, 3)]
    else:
        parts = [part(0, 1), part(1, 2) - first, part(2, size - 2)]
        parts += [part(size - 2, size - 1) - last, part(size - 1, size)]
    return tf.concat(parts, axis)


class LazyZoomChain:
    """A chain mixin with exact rewrites, all equal to the plain ops in real arithmetic.

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
      space-to-batch form, so grappler fuses bias and ReLU into them (`native_dilation`).
    * `add` with run-time shapes skips the TF1-default resize when the shapes already agree (a
      `tf.cond`; the resize is the identity then) and adds two inputs with `AddV2`, which the
      remapper can fuse into the preceding convolution.
    """

    native_dilation = True  # dilated convolutions that follow no zoom: conv2d(dilations=d)
    dilated_line_conv = staticmethod(native_dilated_conv)  # see zoom_dilated_conv

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
            y = tf.nn.conv2d(x.base, self.cast(p['weights']), 1, 'VALID')
            return LazyZoom(tf.nn.bias_add(y, self.cast(p['biases'])) if biased else y)
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
            bias = self.cast(p['biases']) if biased else None
            return zoom_dilated_conv(
                x.base, self.cast(p['weights']), bias, dilated_conv=self.dilated_line_conv
            )
        x = _materialized(x)
        if not self.native_dilation:
            return super().atrous_conv.__wrapped__(
                self,
                x,
                k_h,
                k_w,
                c_o,
                dilation,
                name=name,
                relu=relu,
                padding=padding,
                biased=biased,
            )
        p = self._conv_params(name, x, k_h, k_w, c_o, biased)
        y = tf.nn.conv2d(x, self.cast(p['weights']), 1, padding, dilations=dilation)
        if biased:
            y = tf.nn.bias_add(y, self.cast(p['biases']))
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


class TrainingZoomChain(LazyZoomChain):
    """`LazyZoomChain` for training (`training_chain`): the zooms stay lazy as in serving
    (`conv_sub4`, `conv_sub2` and the 1x1 heads of ICNet run on the un-zoomed maps; their
    gradients follow the same exact identity), every other op is the plain one (dilated
    convolutions in `atrous_conv2d`'s space-to-batch form, as the original), the network's
    outputs are materialized tensors (`result`), and the layers compute in the call's compute
    dtype."""

    native_dilation = False
    dilated_line_conv = staticmethod(space_to_batch_dilated_conv)

    def result(self, value):
        return _materialized(value)


# name -> chain mixin of the rewrites a network may run its training loss with
TRAINING_REWRITES = {'zoom_before_conv': TrainingZoomChain}


def training_chain(net):
    """The chain class `net`'s training loss runs with: its own, with the mixins of the rewrites
    it declares in `training_rewrites` in front (None when it declares none). Pass it to
    `net(..., chain_class=...)`: the same variables, the same function in exact arithmetic."""
    unknown = [name for name in net.training_rewrites if name not in TRAINING_REWRITES]
    if unknown:
        raise ValueError(
            f'{type(net).__name__} declares an unknown training rewrite {unknown[0]!r}'
        )
    if not net.training_rewrites:
        return None
    mixins = tuple(TRAINING_REWRITES[name] for name in net.training_rewrites)
    return type(f'Training{net.chain_class.__name__}', (*mixins, net.chain_class), {})


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
        """`float32(rgb) + (-mean)` (== `x - mean`, bit for bit), as one bias over whole image
        rows: `[N, H, W, 3]` is viewed as `[N * H, W * 3]` and the mean tiled W times (a bias of
        3 channels runs about 3x slower on CPU)."""
        x = tf.cast(rgb, tf.float32)
        shape = tf.shape(x)
        rows = tf.reshape(x, tf.stack([shape[0] * shape[1], shape[2] * 3]))
        bias = tf.tile(-tf.constant(CAFFE_BGR_MEAN[::-1]), shape[2:3])
        out = tf.reshape(tf.nn.bias_add(rows, bias), shape)
        return tf.ensure_shape(out, x.shape)


def _derived(net, mixin, prefix, weights=None, **attrs):
    """A new network of class `<prefix><Class>(mixin, Class)` with `net`'s config and weights."""
    cls = type(net)
    # A serving variant is not a network a weights file holds: it never claims one.
    attrs.setdefault('recognise', classmethod(lambda _, weights: None))
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


# ---------------------------------------------------------------------------------------------
# sparse_label_upsampling: the final resize + argmax only where it can change a label
# ---------------------------------------------------------------------------------------------
# A margin above MARGIN_SCALE * M + MARGIN_FLOOR (M: largest |logit| among the four corners of a
# cell) cannot be closed by the float rounding of TF's bilinear kernel (see `bilinear_labels`).
MARGIN_SCALE = 2.0**-18  # 64 u (u = 2**-24); two mixed logits' rounding: < 20.1 u M
MARGIN_FLOOR = 2.0**-126  # the smallest normal float32: covers subnormal rounding (< 2**-145)
# Logits of at least this magnitude (or not finite) take the plain resize + top_k instead.
LOGIT_LIMIT = 2.0**126


def align_corners_table(in_size, out_size, count):
    """`(lower, upper, lerp)` for output indices `0..count-1` of `ResizeBilinear(align_corners=
    True)` from `in_size` to `out_size` samples, computed with the CPU kernel's float32 ops:

        scale = float32(in_size - 1) / float32(out_size - 1)   (in_size / out_size if out_size == 1)
        pos   = float32(i) * scale
        lower = max(floor(pos), 0),  upper = min(ceil(pos), in_size - 1),  lerp = pos - floor(pos)

    Sizes are Python ints or int32 scalars; the three results are `[count]` (int32, int32,
    float32).
    """
    in_size = tf.cast(in_size, tf.int32)
    out_size = tf.cast(out_size, tf.int32)
    scale = tf.where(
        out_size > 1,
        tf.cast(in_size - 1, tf.float32) / tf.cast(tf.maximum(out_size - 1, 1), tf.float32),
        tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32),
    )
    pos = tf.cast(tf.range(count), tf.float32) * scale
    floor = tf.floor(pos)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(pos), tf.int32), in_size - 1)
    return lower, upper, pos - floor


def _top_two(x):
    """`(label, first, second)` over the last axis: the first index of the maximum (top_k's
    rule), the maximum, and the maximum of the other channels (equal to `first` on a tie)."""
    top = tf.math.top_k(x, 1)
    label = top.indices[..., 0]
    others = tf.where(
        tf.equal(tf.range(x.shape[-1]), tf.expand_dims(label, -1)), tf.constant(-float('inf')), x
    )
    return label, top.values[..., 0], tf.reduce_max(others, -1)


def _with_next(t, axis):
    """`t` shifted by one along `axis` (1 or 2), the last row/column repeated."""
    if axis == 1:
        return tf.concat([t[:, 1:], t[:, -1:]], axis=1)
    return tf.concat([t[:, :, 1:], t[:, :, -1:]], axis=2)


def _cell_reduce(t, op):
    """`op` over the 2x2 corners `(i, j), (i, j+1), (i+1, j), (i+1, j+1)` of every cell, the last
    row/column clamped: `[N, h, w] -> [N, h, w]`."""
    right = _with_next(t, 2)
    return op(op(t, right), op(_with_next(t, 1), _with_next(right, 1)))


def _full_labels(logits, size, crop):
    up = resize_bilinear_align_corners(logits, size)[:, : crop[0], : crop[1]]
    return tf.math.top_k(up, 1).indices[..., 0]


def bilinear_labels(logits, size, crop=None):
    """`top_k(resize_bilinear_align_corners(logits, size)[:, :crop_h, :crop_w], 1).indices[..., 0]`
    without resizing every class of every pixel.

    `logits` `[N, h, w, C]` float32, `size` `(H, W)` (ints or an int32 tensor), `crop` `(ch, cw)`
    <= `(H, W)` (default: all of it); returns int32 labels `[N, ch, cw]`, identical to the
    expression above (asserted by the tests, ties included).

    Output pixel (y, x) is a bilinear mix of the four logits vectors at rows `lower(y)`,
    `upper(y)` and columns `lower(x)`, `upper(x)` (`align_corners_table`), with weights >= 0
    that sum to 1. Call a low-resolution *cell* (i, j) the 2x2 corners (i, j) .. (i+1, j+1)
    (clamped at the last row/column): every output pixel with `lower = (i, j)` reads only
    those. If all four corners have the same first-index argmax c and each corner's margin
    `logit_c - max_{k != c} logit_k` exceeds a bound B, then for every class k the mix of
    `logit_c - logit_k` is a convex combination of numbers > B, so c is the unique maximum of
    the mixed logits in real arithmetic by more than B; TF's CPU kernel computes each mixed
    logit as `top = tl + (tr - tl) * lx`, `bottom = bl + (br - bl) * lx`,
    `top + (bottom - top) * ly` (separate float32 multiply and add), whose rounding error is
    below 10.1 u M + 6.1 * 2**-150 per value (u = 2**-24, M = the largest |logit| at the four
    corners; no overflow below LOGIT_LIMIT), so with B = MARGIN_SCALE * M + MARGIN_FLOOR
    (> 2 x that error, with room) the kernel's argmax is c too: those pixels get c directly.

    Every other pixel (corners that disagree, near-ties, exact ties) is computed from its cell's
    corners with the kernel's own formula and float32 ops, then `top_k`; where a lerp weight is
    0 the kernel reads the same row/column twice while this reads the next one (times 0), which
    can only change the sign of a zero value, invisible to `top_k`'s index. `top_k(k=1)` on CPU
    takes the maximum and then the FIRST index whose value equals it (so ties go to the lowest
    class, and -0.0 == +0.0); `tf.argmax` (the TF1 graph's op) breaks ties the same way.
    Logits that are not finite or reach LOGIT_LIMIT send the whole call to the plain resize.

    Cost: a `top_k` over the low-resolution logits, the label map gathered to the output size,
    and the full computation on the cells along class boundaries only (a few % of an ICNet
    output), instead of a C-channel resize of every output pixel and a `top_k` over all of it.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    classes = logits.shape[-1]
    if classes is None:
        raise ValueError('bilinear_labels needs a static number of classes')
    if crop is None:
        crop = (size[0], size[1])
    size = tf.cast(tf.stack([size[0], size[1]]), tf.int32)
    if classes == 1:  # top_k over one class
        shape = tf.stack([tf.shape(logits)[0], crop[0], crop[1]])
        return tf.zeros(shape, tf.int32)
    finite = tf.reduce_all(tf.abs(logits) < LOGIT_LIMIT)  # False for inf and NaN
    return tf.cond(
        finite,
        lambda: _sparse_labels(logits, size, crop),
        lambda: _full_labels(logits, size, crop),
    )


def certain_cells(logits):
    """`[N, h, w]` int32: the label every output pixel of cell (i, j) has (see
    `bilinear_labels`: its four corners agree with a margin rounding cannot close), else -1."""
    label, first, second = _top_two(logits)
    magnitude = tf.reduce_max(tf.abs(logits), -1)
    agree = tf.equal(_cell_reduce(label, lambda a, b: tf.where(tf.equal(a, b), a, -1)), label)
    bound = _cell_reduce(magnitude, tf.maximum) * MARGIN_SCALE + MARGIN_FLOOR
    certain = tf.logical_and(agree, _cell_reduce(first - second, tf.minimum) > bound)
    return tf.where(certain, label, -1)


def _lines_of_cells(lower, cells):
    """`(start, count)` of the output lines whose `lower` source line is each of `cells`
    (`lower` is non-decreasing), by comparisons (TFLite has no searchsorted)."""
    lower, cells = tf.expand_dims(lower, 0), tf.expand_dims(cells, 1)
    start = tf.reduce_sum(tf.cast(lower < cells, tf.int32), 1)
    return start, tf.reduce_sum(tf.cast(lower <= cells, tf.int32), 1) - start


def _sparse_labels(logits, size, crop):
    # (tf.expand_dims rather than x[:, None]: TFLite's builtins lack new-axis strided slices.)
    expand = tf.expand_dims
    shape = tf.shape(logits)
    h, w = shape[1], shape[2]
    out_h, out_w = crop
    row_lo, _, row_lerp = align_corners_table(h, size[0], out_h)
    col_lo, _, col_lerp = align_corners_table(w, size[1], out_w)

    cell_label = certain_cells(logits)
    certain = cell_label >= 0
    # Gather columns on the small map first (a transposed row gather), then rows.
    cols = tf.transpose(tf.gather(tf.transpose(cell_label, [0, 2, 1]), col_lo, axis=1), [0, 2, 1])
    labels = tf.gather(cols, row_lo, axis=1)  # [N, out_h, out_w], -1 where not certain

    # The cells some output pixel reads, not certain: [K] batch, row, column.
    row_start, row_count = _lines_of_cells(row_lo, tf.range(h))
    col_start, col_count = _lines_of_cells(col_lo, tf.range(w))
    used = tf.logical_and(expand(expand(row_count > 0, 0), 2), expand(expand(col_count > 0, 0), 1))
    cells = tf.cast(tf.where(tf.logical_and(tf.logical_not(certain), used)), tf.int32)
    b, i, j = cells[:, 0], cells[:, 1], cells[:, 2]
    flat = tf.reshape(logits, [-1, logits.shape[-1]])

    def corner(r, c):
        return tf.gather(flat, (b * h + r) * w + c)  # [K, C]

    i1, j1 = tf.minimum(i + 1, h - 1), tf.minimum(j + 1, w - 1)
    top_left, top_right = corner(i, j), corner(i, j1)
    bottom_left, bottom_right = corner(i1, j), corner(i1, j1)
    # Every pixel of a cell, as a [K, R, S] block (R, S: the most rows/columns of a cell).
    rows_max, cols_max = tf.reduce_max(row_count), tf.reduce_max(col_count)
    r, s = expand(tf.range(rows_max), 0), expand(tf.range(cols_max), 0)
    ys = expand(tf.gather(row_start, i), 1) + r  # [K, R]
    xs = expand(tf.gather(col_start, j), 1) + s  # [K, S]
    valid = tf.logical_and(
        expand(r < expand(tf.gather(row_count, i), 1), 2),
        expand(s < expand(tf.gather(col_count, j), 1), 1),
    )
    lx = expand(tf.gather(col_lerp, tf.minimum(xs, out_w - 1)), 2)  # [K, S, 1]
    ly = expand(tf.gather(row_lerp, tf.minimum(ys, out_h - 1)), 2)  # [K, R, 1]
    # The kernel's arithmetic, op for op.
    top = expand(top_left, 1) + expand(top_right - top_left, 1) * lx  # [K, S, C]
    bottom = expand(bottom_left, 1) + expand(bottom_right - bottom_left, 1) * lx
    k, classes = tf.shape(cells)[0], logits.shape[-1]
    row_shape = tf.stack([k, 1, cols_max * classes])
    mixed = tf.reshape(top, row_shape) + tf.reshape(bottom - top, row_shape) * ly
    block = tf.math.top_k(tf.reshape(mixed, tf.stack([k, rows_max, cols_max, classes])), 1)
    index = expand((expand(b, 1) * out_h + ys) * out_w, 2) + expand(xs, 1)  # [K, R, S]
    updated = tf.tensor_scatter_nd_update(
        tf.reshape(labels, [-1]),
        expand(tf.boolean_mask(index, valid), 1),
        tf.boolean_mask(block.indices[..., 0], valid),
    )
    return tf.reshape(updated, tf.shape(labels))


class SparseLabelNetwork:
    """Network mixin of `sparse_label_upsampling`: `upsample_labels(logits, size, crop)` is
    `bilinear_labels` (the labels of `upsample_logits`, cropped, computed where needed)."""

    def upsample_labels(self, logits, size, crop=None):
        return bilinear_labels(logits, size, crop)


def sparse_label_upsampling(net):
    if type(net).upsample_logits is not Network.upsample_logits:
        raise ValueError(
            f'sparse_label_upsampling needs the align-corners bilinear upsample_logits '
            f'({type(net).__name__} has its own)'
        )
    return _derived(net, SparseLabelNetwork, 'Labels')


@dataclass(frozen=True)
class Rewrite:
    apply: Callable
    always: bool = False  # also with optimize=False
    # Also for TFLite (`serving_network(tflite=True)`): the converter accepts it with TFLite's
    # builtin ops and it is not slower there.
    tflite: bool = True


REWRITES = {
    'fold_batch_norm': Rewrite(fold_batch_norm, always=True),
    'zoom_before_conv': Rewrite(zoom_before_conv),
    'rgb_input': Rewrite(rgb_input),
    # Its gathers, top_k and scatter run on TFLite's builtin kernels (not XNNPACK): with it 191,
    # without it 153 ms at 512x1024 (XNNPACK, 1 thread; bench/RESULTS.md).
    'sparse_label_upsampling': Rewrite(sparse_label_upsampling, tflite=False),
}


def serving_network(net, optimize=True, *, tflite=False):
    """`net` with its declared `serving_rewrites` applied (only the `always` ones unless
    `optimize`; only the `tflite` ones for a TFLite model); a network that declares none is
    served as it is."""
    for name in applied_rewrites(net, optimize, tflite=tflite):
        net = REWRITES[name].apply(net)
    return net


def applied_rewrites(net, optimize=True, *, tflite=False):
    """The names of the rewrites `serving_network` applies to `net`, in order."""
    names = []
    for name in net.serving_rewrites:
        if name not in REWRITES:
            raise ValueError(f'{type(net).__name__} declares an unknown rewrite {name!r}')
        row = REWRITES[name]
        if (optimize or row.always) and (row.tflite or not tflite):
            names.append(name)
    return names
