"""PSPNet-101 (Zhao et al., CVPR 2017) on the chained builder, in three layouts.

* `layout='caffe'` (default): the Caffe PSPNet-101 as the released weights were trained and
  evaluated, hszhao/PSPNet `evaluation/prototxt/pspnet101_cityscapes_713.prototxt`: deep stem
  64/64/128, bottlenecks 3/4/23/3, the stride-2 of conv3_1 in `conv3_1_3x3`, dilation 2 in every
  conv4 block and 4 in every conv5 block, pyramid pooling (PPM) by plain average pooling,
  concat(conv5_3, pool6, pool3, pool2, pool1), `conv5_4` 3x3 512 + BN + ReLU, dropout 0.1
  (training only) and the classifier `conv6`. Its weights are caffe-tensorflow `.npy` files; the
  layer names are the Caffe names with '/' replaced by '_' (`conv1_1_3x3_s2_bn`), as in the TF1
  port. `tests/test_pspnet.py` checks every layer against a summary of that prototxt
  (`tests/data/pspnet101_prototxt.json`).
* `layout='caffe_tf1'`: the same network and weights as hellochick/PSPNet-tensorflow
  (`model.py`, class `PSPNet101`) runs them: stride-2 of conv3_1 in `conv3_1_1x1_reduce`,
  TF 'SAME' stem, no dropout layer, and the prototxt's fixed pyramid kernels at every size.
* `layout='mmseg'`: mmsegmentation `pspnet_r101-d8` (ResNetV1c backbone + PSPHead): stem
  32/32/64, stride in the 3x3 conv, contracted first dilation of layer3/layer4, PyTorch adaptive
  average pooling, concat(x, pool1, pool2, pool3, pool6), bilinear with align_corners=False.
  Same layer names as the Caffe layout; `converters.mmseg_keys` maps the PyTorch keys onto them,
  so `net.load('pspnet_r101-d8_....pth')` works (the auxiliary FCN head is training-only and is
  skipped with a note).

Every difference between them is data (`PSPLayout`, table `_LAYOUT_TABLE`); there is one
`setup()`. All three take the same Caffe-layout weights except mmseg (its own stem widths).

    field              caffe (prototxt)      caffe_tf1 (TF1 port)     mmseg
    stem               (64, 64, 128)         (64, 64, 128)            (32, 32, 64)
    stem_padding       'caffe'               'same'                   'pytorch'
    stride_on          '3x3' (conv3_1_3x3)   '1x1' (conv3_1_1x1_red.) '3x3' (layer2.0.conv2)
    contract_dilation  False                 False                    True
    ppm_pooling        'floor'               'fixed'                  'adaptive'
    ppm_resize         'align_corners'       'align_corners'          'half_pixel'
    ppm_order          'reversed'            'reversed'               'forward'
    dropout            'element'             'none'                   'channel'
    input_format       'bgr_mean'            'bgr_mean'               'rgb_mean_std'
    torch_keys         None                  None                     'mmseg'

Stride position: the prototxt has `conv3_1_1x1_reduce` stride 1 and `conv3_1_3x3` stride 2,
pad 1; the TF1 port (`conv(1, 1, 128, 2, 2, name='conv3_1_1x1_reduce')`) moved the stride into
the 1x1 conv, which then samples every other pixel before the 3x3 sees them. The weights fit
either way (same shapes); only the forward pass differs, and the weights were trained with the
prototxt's. (`conv3_1_1x1_proj` has stride 2 in both.)

Stem padding: the prototxt pads the stem convs by 1 and its max pool by 1 in Caffe's ceil mode
('caffe'); the TF1 port uses padding='SAME' for both ('same'). They agree whenever the input
side is 4k+1 (e.g. the canonical 713), and differ by a pixel shift otherwise.

Pyramid pooling: the prototxt and the TF1 port hard-code the kernels of a 90x90 conv5_3 (input
713 in Caffe, 713 or 720 in the TF1 port): 90/45/30/15, stride = kernel, and the prototxt's
Interp layers resize to a fixed 90x90. The Caffe network therefore runs only where conv5_3 is
90x90 (input sides 711..718; elsewhere its Concat refuses the shapes), and hszhao's evaluation
feeds it nothing else (713x713 sliding crops). There:
* 'floor' (caffe): `kernel = stride = (floor(h/n), floor(w/n))`, VALID. Equal to the prototxt
  at 90x90, and keeps n x n bins at every other size (when h < 2n this yields more than n
  cells, as in the TF1/ICNet rule). Caffe's own Pooling with the fixed kernels would give
  ceil-mode cells at other sizes (e.g. 2/3/5/9 per side at 128; `pool_cells` in the JSON);
  no Caffe network runs there, so that is not reproduced.
* 'fixed' (caffe_tf1): the TF1 port's `avg_pool(90, 90, 90, 90)` ... VALID at every size,
  i.e. kernel = stride = floor(90/n) (`FIXED_PPM_GRID`), floor mode: at the TF1 evaluation of a
  whole 1024x2048 Cityscapes image (conv5_3 128x256) pool1 is 1x2, pool6 8x17. It needs conv5_3
  of at least 90x90 (input 713x713; the TF1 scripts pad to at least 720x720).
* 'adaptive' (mmseg): PyTorch's adaptive windows `[floor(i*H/n), ceil((i+1)*H/n))` (neighbouring
  windows overlap when n does not divide H), implemented exactly by `adaptive_avg_pool2d`.
Each level is resized back to (h, w): align_corners=True (Caffe Interp = TF1 resize_bilinear)
or half-pixel centres (mmseg).

Dropout: the prototxt has `conv5_4/dropout` (ratio 0.1, element-wise, inverted scaling; an
identity at inference); the TF1 port has no dropout layer ('none'); mmseg uses Dropout2d.

Inputs (float32 NHWC; `preprocess()` makes them from uint8 RGB):
* caffe, caffe_tf1: BGR, mean (103.939, 116.779, 123.68) subtracted, no scaling (hszhao's
  `pre_img.m`; the project standard);
* mmseg: RGB, (x - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375] (mmseg's
  `data_preprocessor` with `bgr_to_rgb=True`).

Outputs: `net(images)` returns the `conv6` logits at 1/8 of the input: ceil(h/8) x ceil(w/8)
with 'pytorch' or 'same' stem padding, and with 'caffe' padding whenever the side is 4k+1 or
4k+2 (713 -> 90); at other sides Caffe's ceil-mode max pool yields one more row/column
(e.g. 720 -> 181 after pool1), which can reach the logits (71 -> 10, not 9). The prototxt's
`conv6_interp` (Interp zoom 8: 90 -> 713) is `upsample_logits(logits, (713, 713))`.

For Deep Feature Flow, `net.feature_layer` ('conv5_4_bn': conv5_4 after BN+ReLU) is
N_feat's output and `net.classify(features, training)` is N_task: the classifier's dropout
(training only) and the 1x1 `conv6`, using the network's own `conv6` variables; at inference
`net.classify(net.layers[net.feature_layer])` equals `net(images)`.

`blocks` and `width_multiplier` are test-only knobs (reduced depth/width for parity tests); the
real network is `blocks=(3, 4, 23, 3), width_multiplier=1`.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from converters.errors import WeightsFileError
from icnet_tf.icnet import Stage
from icnet_tf.network import (
    Chain,
    Network,
    caffe_bgr_input,
    keep_half_dtype,
    layer,
    resize_bilinear_align_corners,
)

MMSEG_RGB_MEAN = (123.675, 116.28, 103.53)
MMSEG_RGB_STD = (58.395, 57.12, 57.375)

# name, blocks (overridden by `blocks=`), 1x1-reduce/3x3 width, output width, stride of the
# first block, dilation of the 3x3 convs.
PSP_STAGES = (
    Stage('conv2', blocks=3, width=64, out=256, stride=1, dilation=1),
    Stage('conv3', blocks=4, width=128, out=512, stride=2, dilation=1),
    Stage('conv4', blocks=23, width=256, out=1024, stride=1, dilation=2),
    Stage('conv5', blocks=3, width=512, out=2048, stride=1, dilation=4),
)
PPM_WIDTH = 512  # channels of each pyramid level's 1x1 conv
BOTTLENECK_WIDTH = 512  # channels of conv5_4 (mmseg: decode_head.bottleneck)
DROPOUT_RATIO = 0.1
# The conv5_3 side the prototxt's pyramid kernels were written for (input 713): 'fixed' pooling
# uses kernel = stride = FIXED_PPM_GRID // n (90, 45, 30, 15), as the TF1 port hard-codes them.
FIXED_PPM_GRID = 90

_CHOICES = {
    'stem_padding': ('caffe', 'same', 'pytorch'),
    'stride_on': ('1x1', '3x3'),
    'ppm_pooling': ('floor', 'fixed', 'adaptive'),
    'ppm_resize': ('align_corners', 'half_pixel'),
    'ppm_order': ('reversed', 'forward'),
    'dropout': ('element', 'channel', 'none'),
    'input_format': ('bgr_mean', 'rgb_mean_std'),
    'torch_keys': (None, 'mmseg'),
}


@dataclass(frozen=True)
class PSPLayout:
    """Everything that differs between the Caffe, the TF1-port and the mmseg PSPNet-101.

    stem:              widths of conv1_1_3x3_s2, conv1_2_3x3, conv1_3_3x3.
    stem_padding:      'caffe' (convs pad 1; max pool pad 1, Caffe ceil mode), 'same' (the TF1
                       code: padding='SAME' for the stem convs and the max pool), 'pytorch'
                       (convs pad 1; max pool pad 1, floor mode).
    stride_on:         which conv of a stage's first bottleneck has the stride: '3x3' (Caffe
                       prototxt, mmseg) or '1x1' (the 1x1 reduce: TF1 port). The projection
                       shortcut always has it.
    contract_dilation: halve the dilation of a dilated stage's first block (mmseg).
    ppm_pooling:       'floor' (kernel = stride = floor(h/n), VALID), 'fixed' (kernel = stride
                       = FIXED_PPM_GRID // n, VALID, at every size: TF1 port) or 'adaptive'
                       (PyTorch).
    ppm_resize:        'align_corners' (Caffe Interp / TF1 resize_bilinear(align_corners=True))
                       or 'half_pixel' (PyTorch F.interpolate(align_corners=False)).
    ppm_order:         concat order: 'reversed' = conv5_3 then the bins last to first (Caffe),
                       'forward' = conv5_3 then the bins in `psp_bins` order (mmseg).
    dropout:           'element' (Caffe Dropout), 'channel' (nn.Dropout2d), both training
                       only, or 'none' (no dropout layer: TF1 port).
    input_format:      'bgr_mean' or 'rgb_mean_std' (see `preprocess`).
    torch_keys:        the PyTorch key map that loads into this layout ('mmseg') or None.
    """

    name: str
    stem: tuple
    stem_padding: str
    stride_on: str
    contract_dilation: bool
    ppm_pooling: str
    ppm_resize: str
    ppm_order: str
    dropout: str
    input_format: str
    torch_keys: object = None

    def __post_init__(self):
        for field, choices in _CHOICES.items():
            if getattr(self, field) not in choices:
                raise ValueError(
                    f'PSPLayout.{field} must be one of {choices}, got {getattr(self, field)!r}'
                )
        if len(self.stem) != 3:
            raise ValueError(f'PSPLayout.stem needs three widths, got {self.stem!r}')


# The layouts side by side: (field, Caffe prototxt, TF1 port (hellochick/PSPNet-tensorflow),
# mmsegmentation pspnet_r101-d8).
_LAYOUT_NAMES = ('caffe', 'caffe_tf1', 'mmseg')
_LAYOUT_TABLE = (
    ('stem', (64, 64, 128), (64, 64, 128), (32, 32, 64)),
    ('stem_padding', 'caffe', 'same', 'pytorch'),
    ('stride_on', '3x3', '1x1', '3x3'),
    ('contract_dilation', False, False, True),
    ('ppm_pooling', 'floor', 'fixed', 'adaptive'),
    ('ppm_resize', 'align_corners', 'align_corners', 'half_pixel'),
    ('ppm_order', 'reversed', 'reversed', 'forward'),
    ('dropout', 'element', 'none', 'channel'),
    ('input_format', 'bgr_mean', 'bgr_mean', 'rgb_mean_std'),
    ('torch_keys', None, None, 'mmseg'),
)
LAYOUTS = {
    name: PSPLayout(name, **{row[0]: row[1 + i] for row in _LAYOUT_TABLE})
    for i, name in enumerate(_LAYOUT_NAMES)
}
CAFFE, CAFFE_TF1, MMSEG = (LAYOUTS[name] for name in _LAYOUT_NAMES)


def get_layout(layout):
    """A `PSPLayout` from a name in `LAYOUTS` or a `PSPLayout` (returned as is)."""
    if isinstance(layout, PSPLayout):
        return layout
    if layout not in LAYOUTS:
        raise ValueError(
            f'layout must be one of {", ".join(map(repr, LAYOUTS))} or a PSPLayout, got {layout!r}'
        )
    return LAYOUTS[layout]


def preprocess(rgb, layout='caffe'):
    """uint8 (or 0..255 float) RGB images, HWC or NHWC -> the float32 input `layout` expects.

    caffe, caffe_tf1: channels reversed to BGR, `CAFFE_BGR_MEAN` subtracted, no scaling.
    mmseg: RGB kept, `(x - MMSEG_RGB_MEAN) / MMSEG_RGB_STD`.
    """
    x = tf.cast(tf.convert_to_tensor(rgb), tf.float32)
    if x.shape[-1] != 3:
        raise ValueError(f'preprocess expects RGB images (3 channels), got shape {x.shape}')
    if get_layout(layout).input_format == 'bgr_mean':
        return caffe_bgr_input(x)
    return (x - tf.constant(MMSEG_RGB_MEAN, tf.float32)) / tf.constant(MMSEG_RGB_STD, tf.float32)


# ------------------------------------------------------------------------------ pooling ops
def adaptive_windows(size, bins):
    """PyTorch AdaptiveAvgPool windows `[floor(i*size/bins), ceil((i+1)*size/bins))`."""
    return [((i * size) // bins, -((-(i + 1) * size) // bins)) for i in range(bins)]


def adaptive_pool_matrix(size, bins):
    """[bins, size] float32 matrix whose row i averages adaptive window i."""
    m = np.zeros((bins, size), np.float64)
    for i, (start, end) in enumerate(adaptive_windows(size, bins)):
        m[i, start:end] = 1.0 / (end - start)
    return m.astype(np.float32)


def adaptive_avg_pool2d(x, bins):
    """`torch.nn.AdaptiveAvgPool2d(bins)` on NHWC `x` (static H, W); `bins` int or (bh, bw).

    Exact windows (overlapping when bins does not divide the size), each cell the plain mean
    of its window, computed as two small matrix products.
    """
    bh, bw = (bins, bins) if isinstance(bins, (int, np.integer)) else bins
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None:
        raise ValueError('adaptive_avg_pool2d needs a static height and width')
    rows = tf.constant(adaptive_pool_matrix(int(h), int(bh)), dtype=x.dtype)
    cols = tf.constant(adaptive_pool_matrix(int(w), int(bw)), dtype=x.dtype)
    y = tf.einsum('ih,bhwc->biwc', rows, x)
    return tf.einsum('jw,biwc->bijc', cols, y)


def resize_bilinear_half_pixel(x, size):
    """Bilinear with half-pixel centres: PyTorch `F.interpolate(mode='bilinear',
    align_corners=False)` = TF2 `tf.image.resize(method='bilinear', antialias=False)`.

    Source row `(i + 0.5) * in_h / out_h - 0.5`, clamped at the borders (TF clamps the
    neighbour indices, PyTorch the negative coordinates; both give the edge pixel).
    """
    y = tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=False, half_pixel_centers=True)
    return keep_half_dtype(x, y)


def caffe_pool_padding(size, kernel=3, stride=2, pad=1):
    """(before, after) zero padding that makes a VALID pool give Caffe's ceil-mode size.

    Caffe: `out = ceil((size + 2*pad - kernel) / stride) + 1`, minus one when the last window
    would start in the bottom/right padding. Valid for max pooling of non-negative inputs
    (post-ReLU), where zeros in the extra padding never win, as Caffe clips the window.
    """
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    after = max(pad, (out - 1) * stride + kernel - size - pad)
    return pad, after


def backbone_side(size, stem_padding):
    """conv5_3's side (= the logits' side) for an input side `size` in a stem padding mode.

    conv1_1 (3x3/2, pad 1 or SAME): ceil(size/2); pool1 (3x3/2): ceil(c/2), or Caffe's
    ceil-mode size with `caffe_pool_padding`; conv3_1 (stride 2 on a 1x1 without pad or a 3x3
    with pad 1, the same size): ceil(p/2). Nothing after conv3_1 changes the size.
    """
    if stem_padding not in _CHOICES['stem_padding']:
        raise ValueError(f'stem_padding must be one of {_CHOICES["stem_padding"]}')
    conv1 = -(-size // 2)
    if stem_padding == 'caffe':
        before, after = caffe_pool_padding(conv1)
        pool = (conv1 + before + after - 3) // 2 + 1
    else:
        pool = -(-conv1 // 2)
    return -(-pool // 2)


# --------------------------------------------------------------------------------- chain
class PSPChain(Chain):
    """Chain with PSPNet's conv+BN unit, the stem padding modes and the PyTorch-style ops."""

    @layer
    def adaptive_avg_pool(self, x, bins, *, name):
        """`nn.AdaptiveAvgPool2d(bins)` (see `adaptive_avg_pool2d`)."""
        return adaptive_avg_pool2d(x, bins)

    @layer
    def resize_half_pixel(self, x, size, *, name):
        """Resize to `size` = (h, w), PyTorch `align_corners=False` (half-pixel centres)."""
        return resize_bilinear_half_pixel(x, size)

    @layer
    def channel_dropout(self, x, keep_prob, *, name):
        """`nn.Dropout2d`: whole channels dropped per image, only when training."""
        if not self.training:
            return x
        shape = tf.shape(x)
        return tf.nn.dropout(x, rate=1.0 - keep_prob, noise_shape=[shape[0], 1, 1, shape[3]])

    def unit(self, k, c_o, s=1, *, name, relu, dilation=1, padding='VALID'):
        """`k`x`k` conv without bias, then `<name>_bn` (+ ReLU). Pad beforehand for VALID."""
        if dilation > 1 and s > 1:
            raise ValueError(f'{name}: a strided dilated convolution is not supported')
        if dilation > 1:
            self.atrous_conv(
                k, k, c_o, dilation, name=name, biased=False, relu=False, padding=padding
            )
        else:
            self.conv(k, k, c_o, s, s, name=name, biased=False, relu=False, padding=padding)
        return self.batch_normalization(name=f'{name}_bn', relu=relu)

    def stem_conv(self, c_o, s, *, name, relu=True):
        """A stem 3x3 conv + BN in the layout's padding mode (pad 1, or TF 'SAME')."""
        if self.net.layout.stem_padding == 'same':
            return self.unit(3, c_o, s, name=name, relu=relu, padding='SAME')
        return self.zero_padding(1, name=f'{name}_pad').unit(3, c_o, s, name=name, relu=relu)

    def stem_pool(self, *, name):
        """The 3x3 stride-2 max pool after the stem in the layout's padding mode."""
        mode = self.net.layout.stem_padding
        if mode == 'same':
            return self.max_pool(3, 3, 2, 2, padding='SAME', name=name)
        if mode == 'pytorch':
            pads = 1
        else:  # caffe: ceil mode, from the static size
            h, w = self.terminals[0].shape[1:3]
            if h is None or w is None:
                raise ValueError("stem_padding='caffe' needs a static input height and width")
            pads = (caffe_pool_padding(int(h)), caffe_pool_padding(int(w)))
        return self.zero_padding(pads, name=f'{name}_pad').max_pool(3, 3, 2, 2, name=name)


# ------------------------------------------------------------------------------- network
class PSPNet101(Network):
    """PSPNet-101; see the module docstring for the layouts, inputs and outputs."""

    chain_class = PSPChain
    output_name = 'conv6'
    output_stride = 8
    feature_layer = 'conv5_4_bn'  # DFF N_feat output (conv5_4 after BN + ReLU)
    # No auxiliary head: the paper's 0.4 loss on res4b22 is not in the TF1 training code (and
    # mmsegmentation's auxiliary head is not part of the inference network).
    aux_heads = {}

    def __init__(
        self,
        num_classes=19,
        layout='caffe',
        psp_bins=(1, 2, 3, 6),
        *,
        blocks=(3, 4, 23, 3),
        width_multiplier=1,
        seed=0,
        name=None,
    ):
        super().__init__(seed=seed, name=name or 'PSPNet101')
        if int(num_classes) < 1:
            raise ValueError(f'num_classes must be positive, got {num_classes!r}')
        self.layout = get_layout(layout)
        self.num_classes = int(num_classes)
        self.psp_bins = tuple(int(b) for b in psp_bins)
        if (
            not self.psp_bins
            or min(self.psp_bins) < 1
            or len(set(self.psp_bins)) != len(self.psp_bins)
        ):
            raise ValueError(f'psp_bins must be distinct positive ints, got {psp_bins!r}')
        self.blocks = tuple(int(b) for b in blocks)
        if len(self.blocks) != 4 or min(self.blocks) < 1:
            raise ValueError(f'blocks must be four positive ints, got {blocks!r}')
        self.width_multiplier = width_multiplier
        self.stages = tuple(
            dataclasses.replace(st, blocks=nb, width=self._w(st.width), out=self._w(st.out))
            for st, nb in zip(PSP_STAGES, self.blocks)
        )

    @classmethod
    def recognise(cls, weights):
        """PSPNet101: `conv6` and `conv5_4`, no `conv6_cls`. layout: 'caffe' for a 64-channel
        `conv1_1_3x3_s2`, 'mmseg' for 32 (other widths: not told); num_classes: last dimension
        of the `conv6` kernel."""
        if 'conv6' not in weights or 'conv5_4' not in weights or 'conv6_cls' in weights:
            return None
        options = {}
        stem = np.shape(weights.get('conv1_1_3x3_s2', {}).get('weights', ()))
        if len(stem) == 4 and stem[-1] in (64, 32):
            options['layout'] = {64: 'caffe', 32: 'mmseg'}[stem[-1]]
        head = np.shape(weights['conv6'].get('weights', ()))
        if len(head) == 4:
            options['num_classes'] = head[-1]
        return options

    def _w(self, channels):
        """`channels * width_multiplier`, which must be a positive whole number."""
        value = channels * self.width_multiplier
        if value < 1 or abs(value - round(value)) > 1e-9:
            raise ValueError(
                f'width_multiplier={self.width_multiplier!r} gives {value} channels '
                f'for a {channels}-channel layer; use e.g. 1/2, 1/4, 1/8'
            )
        return int(round(value))

    def get_config(self):
        layout = (
            self.layout.name
            if LAYOUTS.get(self.layout.name) == self.layout
            else dataclasses.asdict(self.layout)
        )
        return dict(
            num_classes=self.num_classes,
            layout=layout,
            psp_bins=list(self.psp_bins),
            blocks=list(self.blocks),
            width_multiplier=self.width_multiplier,
        )

    def build_input_shape(self):
        """The smallest square input on which the network runs (also what `predict` pads to).

        'floor'/'adaptive' pooling: 8 * max(bins) + 1 (conv5_3 of max(bins) cells); 'fixed':
        the smallest side whose conv5_3 holds the largest fixed kernel (713 for the TF1 port).
        """
        if self.layout.ppm_pooling != 'fixed':
            side = 8 * max(self.psp_bins) + 1
        else:
            need = FIXED_PPM_GRID // min(self.psp_bins)
            side = 1
            while backbone_side(side, self.layout.stem_padding) < need:
                side += 1
        return (1, side, side, 3)

    def build(self):
        """Create all variables (one eager pass on a small input). 'fixed' pooling needs a
        713x713 input, a full inference; pooling has no variables, so the pass runs with the
        'floor' rule on its small input instead (same variables)."""
        layout = self.layout
        if not self._built and layout.ppm_pooling == 'fixed':
            self.layout = dataclasses.replace(layout, ppm_pooling='floor')
            try:
                super().build()
            finally:
                self.layout = layout
        return super().build()

    def preprocess(self, rgb):
        """uint8 RGB -> this network's input convention (see `preprocess`)."""
        return preprocess(rgb, self.layout)

    def upsample_logits(self, logits, size):
        """align_corners=True (Caffe layout), half-pixel centres (mmseg's `resize`)."""
        if self.layout.ppm_resize == 'half_pixel':
            return resize_bilinear_half_pixel(logits, size)
        return resize_bilinear_align_corners(logits, size)

    @property
    def feature_channels(self):
        return self._w(BOTTLENECK_WIDTH)

    # -------------------------------------------------------------------------- the graph
    def setup(self, n):
        lay = self.layout
        s1, s2, s3 = (self._w(c) for c in lay.stem)
        (
            n.feed('data')
            .stem_conv(s1, 2, relu=False, name='conv1_1_3x3_s2')
            .relu(name='conv1_1_3x3_s2_bn_relu')
            .stem_conv(s2, 1, name='conv1_2_3x3')
            .stem_conv(s3, 1, name='conv1_3_3x3')
            .stem_pool(name='pool1_3x3_s2')
        )

        shortcut, pad = 'pool1_3x3_s2', 1
        for stage in self.stages:
            for i in range(1, stage.blocks + 1):
                block = f'{stage.name}_{i}'
                stride = stage.stride if i == 1 else 1
                dilation = stage.dilation
                if i == 1 and lay.contract_dilation and dilation > 1:
                    dilation //= 2
                s_reduce, s_3x3 = (stride, 1) if lay.stride_on == '1x1' else (1, stride)
                residual = shortcut
                if i == 1:
                    (
                        n.feed(shortcut).unit(
                            1, stage.out, stride, relu=False, name=f'{block}_1x1_proj'
                        )
                    )
                    residual = f'{block}_1x1_proj_bn'
                (
                    n.feed(shortcut)
                    .unit(1, stage.width, s_reduce, relu=True, name=f'{block}_1x1_reduce')
                    .zero_padding(dilation, name=f'padding{pad}')
                    .unit(3, stage.width, s_3x3, relu=True, dilation=dilation, name=f'{block}_3x3')
                    .unit(1, stage.out, 1, relu=False, name=f'{block}_1x1_increase')
                )
                (
                    n.feed(residual, f'{block}_1x1_increase_bn')
                    .add(name=block)
                    .relu(name=f'{block}/relu')
                )
                shortcut, pad = f'{block}/relu', pad + 1

        self._pyramid_pooling(n)
        self.classifier(n.feed(self.feature_layer))

    @property
    def backbone_output(self):
        """Name of the backbone's last layer: 'conv5_3/relu' (fewer blocks: 'conv5_<n>/relu').

        The pyramid-pooling layers keep their Caffe names (`conv5_3_pool<bin>...`) whatever
        the depth, so the weight files and the key map always match them.
        """
        return f'{self.stages[-1].name}_{self.stages[-1].blocks}/relu'

    def _pyramid_pooling(self, n):
        lay = self.layout
        last = self.backbone_output
        shape = n.outputs[last].shape[1:3]
        if not shape.is_fully_defined():
            raise ValueError(
                'PSPNet101 needs a static input height and width (pyramid pooling '
                'derives from them)'
            )
        h, w = int(shape[0]), int(shape[1])
        for n_bin in self.psp_bins:
            n.feed(last)
            pool = f'conv5_3_pool{n_bin}'
            if lay.ppm_pooling == 'adaptive':
                n.adaptive_avg_pool(n_bin, name=pool)
            elif lay.ppm_pooling == 'fixed':
                # The TF1 port's avg_pool(90, 90, 90, 90, ...) ... VALID whatever the size: the
                # prototxt's kernels for a 90x90 conv5_3 (TF1 raises when they do not fit).
                k = FIXED_PPM_GRID // n_bin
                if k < 1:
                    raise ValueError(f'fixed pyramid pooling takes bins up to {FIXED_PPM_GRID}')
                if h < k or w < k:
                    side = self.build_input_shape()[1]
                    raise ValueError(
                        f'pyramid bin {n_bin}: the fixed {k}x{k} average pool of layout '
                        f'{lay.name!r} needs conv5_3 of at least {k}x{k}, got {h}x{w}: the '
                        f'input is too small (use at least {side}x{side})'
                    )
                n.avg_pool(k, k, k, k, name=pool)
            else:
                if h < n_bin or w < n_bin:
                    side = 8 * (n_bin - 1) + 1
                    raise ValueError(
                        f'pyramid bin {n_bin} needs conv5_3 of at least '
                        f'{n_bin}x{n_bin}, got {h}x{w}: the input is too small '
                        f'(use at least {side}x{side})'
                    )
                k_h, k_w = h // n_bin, w // n_bin
                n.avg_pool(k_h, k_w, k_h, k_w, name=pool)
            n.unit(1, self._w(PPM_WIDTH), relu=True, name=f'{pool}_conv')
            if lay.ppm_resize == 'align_corners':
                n.resize_bilinear((h, w), name=f'{pool}_interp')
            else:
                n.resize_half_pixel((h, w), name=f'{pool}_interp')
        order = reversed(self.psp_bins) if lay.ppm_order == 'reversed' else self.psp_bins
        (
            n.feed(last, *[f'conv5_3_pool{b}_interp' for b in order])
            .concat(axis=-1, name='conv5_3_concat')
            .unit(3, self._w(BOTTLENECK_WIDTH), relu=True, padding='SAME', name='conv5_4')
        )

    def classifier(self, n):
        """N_task: dropout (training only; none in caffe_tf1) and the 1x1 `conv6`."""
        keep = 1.0 - DROPOUT_RATIO
        if self.layout.dropout == 'channel':
            n.channel_dropout(keep, name='conv5_4_dropout')
        elif self.layout.dropout == 'element':
            n.dropout(keep, name='conv5_4_dropout')
        # 'none': the TF1 port feeds conv5_4_bn straight into conv6
        return n.conv(1, 1, self.num_classes, 1, 1, biased=True, relu=False, name='conv6')

    # ------------------------------------------------------------------------ weights
    def torch_key_map(self, state_dict):
        """PyTorch state dict -> `{layer: {param: array}}` (see converters.mmseg_keys)."""
        if self.layout.torch_keys != 'mmseg':
            raise WeightsFileError(
                f'PSPNet101(layout={self.layout.name!r}) has no PyTorch key map: mmsegmentation '
                "pspnet_r101-d8 checkpoints load into PSPNet101(layout='mmseg'); the Caffe "
                'layout loads caffe-tensorflow .npy files'
            )
        from converters import mmseg_keys

        weights, skipped = mmseg_keys.convert_with_skipped(
            state_dict, blocks=self.blocks, psp_bins=self.psp_bins
        )
        if skipped:
            print(
                f'note: skipped {len(skipped)} training-only tensors ({skipped[0]}, ...): '
                'the auxiliary head is not part of the inference network'
            )
        return weights
