"""ICNet (Zhao et al., ECCV 2018) as in hellochick/ICNet-tensorflow `model.py` (HEAD 90a85c4).

Two variants built by one `setup()`:

* `ICNet_BN`: the `*_bnnomerge` graph (the model as trained in Caffe): 63 convolutions without
  bias, each followed by `<conv>_bn`, and three biased heads: `conv6_cls` (1/4 of the input),
  `sub24_out` (1/8) and `sub4_out` (1/16) for the cascade label guidance loss.
* `ICNet`: the BN-merged graph (`icnet_cityscapes_train_30k.npy`): every one of those
  convolutions is biased with its ReLU folded in; head `conv6_cls` only.

Layer names are the original ones, so the caffe-tensorflow `.npy` files load with no renaming.
Input: float32 NHWC, BGR, mean (103.939, 116.779, 123.68) subtracted, no scaling.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from icnet_tf.network import Chain, Network, layer


@dataclass(frozen=True)
class Stage:
    """One residual stage: `blocks` bottlenecks `<name>_<i>` (1x1 reduce, 3x3, 1x1 increase)."""

    name: str
    blocks: int
    width: int  # channels of the 1x1 reduce and the 3x3 conv (before filter_scale)
    out: int  # channels of the 1x1 increase and the projection shortcut
    stride: int  # stride of the first block's 1x1 reduce and projection
    dilation: int  # dilation of the 3x3 convs (1: plain conv)


ICNET_STAGES = (
    Stage('conv2', blocks=3, width=32, out=128, stride=1, dilation=1),
    Stage('conv3', blocks=4, width=64, out=256, stride=2, dilation=1),
    Stage('conv4', blocks=6, width=128, out=512, stride=1, dilation=2),
    Stage('conv5', blocks=3, width=256, out=1024, stride=1, dilation=4),
)

# Pyramid pooling kernels and strides of the Caffe prototxt (icnet_cityscapes*.prototxt), for
# the canonical conv5_3 size 33x65 (input 1025x2049): bin -> ((k_h, k_w), (s_h, s_w)).
PROTOTXT_PSP_POOLS = {
    (33, 65): {
        1: ((33, 65), (33, 65)),
        2: ((17, 33), (16, 32)),
        3: ((13, 25), (10, 20)),
        6: ((8, 15), (5, 10)),
    },
}


# ICNet's pyramid pooling rules. 'floor' was called 'adaptive' before; the old name is still
# accepted, but it is not PyTorch's AdaptiveAvgPool2d (PSPNet101's mmseg layout uses that one).
PSP_POOLINGS = ('caffe', 'floor')
_POOLING_ALIASES = {'adaptive': 'floor'}


def psp_pooling_name(pooling):
    """'caffe' or 'floor' (the old name 'adaptive' maps to 'floor'); ValueError otherwise."""
    pooling = _POOLING_ALIASES.get(pooling, pooling)
    if pooling not in PSP_POOLINGS:
        raise ValueError(f"psp_pooling must be 'caffe' or 'floor', got {pooling!r}")
    return pooling


def psp_pool_geometry(h, w, n_bin, pooling='caffe'):
    """Kernel and stride of pyramid level `n_bin` on a conv5_3 map of h x w.

    'caffe' uses the prototxt's values at the canonical size (see PROTOTXT_PSP_POOLS) and the
    floor rule elsewhere; 'floor' always uses kernel = stride = (h // n, w // n), which is
    what the original TF1 code does for ICNet_BN and for ICNet outside Cityscapes evaluation
    (its `h/n` floats are truncated to ints by TF's attribute conversion). These windows are
    not PyTorch's adaptive windows (`pspnet.adaptive_windows`) unless n divides h and w.
    """
    pooling = psp_pooling_name(pooling)
    table = PROTOTXT_PSP_POOLS.get((h, w), {}) if pooling == 'caffe' else {}
    if n_bin in table:
        return table[n_bin]
    if h < n_bin or w < n_bin:
        raise ValueError(
            f'pyramid bin {n_bin} needs conv5_3 of at least {n_bin}x{n_bin}, got '
            f'{h}x{w}: the input is too small (use at least '
            f'{32 * n_bin + 1}x{32 * n_bin + 1})'
        )
    kernel = (h // n_bin, w // n_bin)
    return kernel, kernel


def floor_avg_pool_dynamic(x, n_bin):
    """VALID average pooling with kernel = stride = (h // n, w // n) taken from `tf.shape(x)`.

    `tf.nn.avg_pool2d` needs static kernel sizes, so the pool is written as a crop to the
    `m * k` rows the windows cover (`m = h // k` windows, the VALID output size, which can
    exceed `n`: h = 8, n = 3 gives k = 2 and 4 windows), a reshape to `[N, m_h, k_h, W, C]` and
    a mean over the window rows, then the same for the columns. (One mean over both window
    axes of a 6-D reshape is several times slower on CPU.) Equal to `avg_pool(k, k, k, k)` up
    to float rounding.
    """
    shape = tf.shape(x)
    h, w = shape[1], shape[2]
    with tf.control_dependencies(
        [
            tf.debugging.assert_greater_equal(
                tf.minimum(h, w),
                n_bin,
                message=f'pyramid bin {n_bin}: conv5_3 is smaller than {n_bin}x{n_bin} (input too '
                f'small, use at least {32 * n_bin + 1}x{32 * n_bin + 1})',
            )
        ]
    ):
        k_h, k_w = h // n_bin, w // n_bin
    m_h, m_w = h // k_h, w // k_w
    rows = tf.reshape(x[:, : m_h * k_h], tf.stack([shape[0], m_h, k_h, w, shape[3]]))
    rows = tf.reduce_mean(rows, axis=2)
    cols = tf.reshape(rows[:, :, : m_w * k_w], tf.stack([shape[0], m_h, m_w, k_w, shape[3]]))
    pooled = tf.reduce_mean(cols, axis=3)
    return tf.ensure_shape(pooled, [x.shape[0], None, None, x.shape[3]])


def psp_pool_dynamic(x, n_bin, pooling='caffe'):
    """Pyramid level `n_bin` of `x` whose h, w are only known at run time.

    The floor rule (`floor_avg_pool_dynamic`) in general; with pooling='caffe', a
    `tf.cond` on the run-time size switches to the prototxt's static kernels and strides when
    h, w is a size of PROTOTXT_PSP_POOLS (33x65), exactly as `psp_pool_geometry` does statically.
    """
    psp_pool_geometry(64, 64, 1, pooling)  # validates the name
    table = (
        {
            size: geometry[n_bin]
            for size, geometry in PROTOTXT_PSP_POOLS.items()
            if n_bin in geometry
        }
        if pooling == 'caffe'
        else {}
    )

    def pool(entries):
        if not entries:
            return floor_avg_pool_dynamic(x, n_bin)
        (t_h, t_w), ((k_h, k_w), (s_h, s_w)) = entries[0]
        size = tf.shape(x)[1:3]
        return tf.cond(
            tf.logical_and(tf.equal(size[0], t_h), tf.equal(size[1], t_w)),
            lambda: tf.nn.avg_pool2d(x, [k_h, k_w], [s_h, s_w], padding='VALID'),
            lambda: pool(entries[1:]),
        )

    return pool(list(table.items()))


class ICNetChain(Chain):
    """Chain with ICNet's conv(+BN) unit, so one setup() writes both variants."""

    def unit(self, k, c_o, s=1, *, name, relu, padding='VALID', dilation=1):
        """`k`x`k` conv with `c_o * filter_scale` outputs, then `<name>_bn` in ICNet_BN."""
        bn = self.net.use_bn
        c_o *= self.net.filter_scale
        conv_relu = relu and not bn
        if dilation > 1:
            self.atrous_conv(
                k, k, c_o, dilation, name=name, biased=not bn, relu=conv_relu, padding=padding
            )
        else:
            self.conv(k, k, c_o, s, s, name=name, biased=not bn, relu=conv_relu, padding=padding)
        if bn:
            self.batch_normalization(name=f'{name}_bn', relu=relu)
        return self

    def out(self, name):
        """The name of unit `name`'s output (`<name>_bn` in ICNet_BN)."""
        return f'{name}_bn' if self.net.use_bn else name

    @layer
    def psp_pool(self, x, n_bin, pooling='caffe', *, name):
        """Pyramid level `n_bin` for run-time spatial sizes (see `psp_pool_dynamic`)."""
        return psp_pool_dynamic(x, n_bin, pooling)


class _ICNetFamily(Network):
    """ICNet's conventions (the network contract of `Network`, in one place):

    * input: the Caffe convention (`Network.preprocess`: RGB -> BGR, minus the BGR mean);
    * output `conv6_cls` at about 1/4 of the input, upsampled with align_corners=True;
    * features `sub12_sum_interp` (128 x filter_scale channels), classifier `conv6_cls` (1x1);
    * auxiliary heads (ICNet_BN only) `sub4_out` and `sub24_out` with the original's loss
      weights LAMBDA1 = 0.16 and LAMBDA2 = 0.4 (the main output has LAMBDA3 = 1.0);
    * serving: batch norm folded into the convolutions (the merged `ICNet`), the exact zoom
      rewrites, the channel swap folded into the convolutions that read the image, and (labels
      only) the final upsampling computed only where it can change a label;
    * training (`ICNet_BN`, the network the original trains): the exact zoom rewrite (the three
      2x zooms stay lazy: `conv_sub4`, `conv_sub2` and the 1x1 heads run on the un-zoomed maps,
      about 0.88x the CPU time of a training step).
    """

    chain_class = ICNetChain
    output_name = 'conv6_cls'
    output_stride = 4
    feature_layer = 'sub12_sum_interp'
    serving_rewrites = (
        'fold_batch_norm',
        'zoom_before_conv',
        'rgb_input',
        'sparse_label_upsampling',
    )
    # The convolutions that read the image itself (directly, or after the channel-wise
    # data_sub2): the 'rgb_input' rewrite reverses their input channels.
    image_convs = ('conv1_sub1', 'conv1_1_3x3_s2')
    use_bn = None

    def __init__(
        self,
        num_classes=19,
        filter_scale=1,
        psp_bins=(1, 2, 3, 6),
        psp_pooling='caffe',
        *,
        seed=0,
        name=None,
    ):
        super().__init__(seed=seed, name=name or type(self).__name__)
        if filter_scale not in (1, 2):
            raise ValueError(f'filter_scale must be 1 or 2, got {filter_scale!r}')
        if int(num_classes) < 1:
            raise ValueError(f'num_classes must be positive, got {num_classes!r}')
        self.num_classes = int(num_classes)
        self.filter_scale = int(filter_scale)
        self.psp_bins = tuple(int(b) for b in psp_bins)
        self.psp_pooling = psp_pooling_name(psp_pooling)

    @classmethod
    def recognise(cls, weights):
        """ICNet_BN: `conv6_cls` and batch-norm layers (`*_bn`); ICNet: `conv6_cls`, a biased
        `conv1_1_3x3_s2` and no `*_bn` layer. filter_scale: output channels of
        `conv1_1_3x3_s2` / 32 (1 or 2); num_classes: last dimension of the `conv6_cls` kernel."""
        if 'conv6_cls' not in weights or cls.use_bn is None:
            return None
        stem = weights.get('conv1_1_3x3_s2', {})
        has_bn = any(layer.endswith('_bn') for layer in weights)
        if has_bn != cls.use_bn or (not cls.use_bn and 'biases' not in stem):
            return None
        options = {}
        channels = np.shape(stem['weights'])[-1] if 'weights' in stem else None
        if channels in (32, 64):
            options['filter_scale'] = channels // 32
        head = np.shape(weights['conv6_cls'].get('weights', ()))
        if len(head) == 4:
            options['num_classes'] = head[-1]
        return options

    def get_config(self):
        return dict(
            num_classes=self.num_classes,
            filter_scale=self.filter_scale,
            psp_bins=list(self.psp_bins),
            psp_pooling=self.psp_pooling,
        )

    def build_input_shape(self):
        side = 32 * max(self.psp_bins) + 1
        return (1, side, side, 3)

    @property
    def feature_channels(self):
        return 128 * self.filter_scale

    def merged_network(self):
        """A fresh `ICNet` (batch norm merged) with these settings: what folding produces."""
        return ICNet(**self.get_config())

    def classifier(self, n):
        return n.conv(1, 1, self.num_classes, 1, 1, biased=True, relu=False, name='conv6_cls')

    def setup(self, n):
        # Branch 1/2 of the input (sub2) down to 1/16; conv3_1 also feeds the 1/4 branch.
        (
            n.feed('data')
            .interp(s_factor=0.5, name='data_sub2')
            .unit(3, 32, 2, relu=True, padding='SAME', name='conv1_1_3x3_s2')
            .unit(3, 32, 1, relu=True, padding='SAME', name='conv1_2_3x3')
            .unit(3, 64, 1, relu=True, padding='SAME', name='conv1_3_3x3')
            .zero_padding(1, name='padding0')
            .max_pool(3, 3, 2, 2, name='pool1_3x3_s2')
        )

        shortcut, pad = 'pool1_3x3_s2', 1
        for stage in ICNET_STAGES:
            for i in range(1, stage.blocks + 1):
                block = f'{stage.name}_{i}'
                stride = stage.stride if i == 1 else 1
                residual = shortcut
                if i == 1:
                    (
                        n.feed(shortcut).unit(
                            1, stage.out, stride, relu=False, name=f'{block}_1x1_proj'
                        )
                    )
                    residual = n.out(f'{block}_1x1_proj')
                (
                    n.feed(shortcut)
                    .unit(1, stage.width, stride, relu=True, name=f'{block}_1x1_reduce')
                    .zero_padding(stage.dilation, name=f'padding{pad}')
                    .unit(
                        3, stage.width, 1, relu=True, dilation=stage.dilation, name=f'{block}_3x3'
                    )
                    .unit(1, stage.out, 1, relu=False, name=f'{block}_1x1_increase')
                )
                (
                    n.feed(residual, n.out(f'{block}_1x1_increase'))
                    .add(name=block)
                    .relu(name=f'{block}/relu')
                )
                shortcut, pad = f'{block}/relu', pad + 1
                if block == 'conv3_1':
                    # The 1/32 branch (sub4) shares weights with sub2 from here on: the
                    # original halves conv3_1's output and continues conv3_2.. on it.
                    n.interp(s_factor=0.5, name='conv3_1_sub4')
                    shortcut = 'conv3_1_sub4'

        self._pyramid_pooling(n)
        (
            n.feed('conv5_3/relu', *[f'conv5_3_pool{b}_interp' for b in reversed(self.psp_bins)])
            .add(name='conv5_3_sum')  # a sum of the levels (not PSPNet's concat)
            .unit(1, 256, 1, relu=True, name='conv5_4_k1')
            .interp(z_factor=2, name='conv5_4_interp')
            .zero_padding(2, name='padding17')
            .unit(3, 128, 1, relu=False, dilation=2, name='conv_sub4')
        )

        (n.feed('conv3_1/relu').unit(1, 128, 1, relu=False, name='conv3_1_sub2_proj'))

        (
            n.feed(n.out('conv_sub4'), n.out('conv3_1_sub2_proj'))
            .add(name='sub24_sum')
            .relu(name='sub24_sum/relu')
            .interp(z_factor=2, name='sub24_sum_interp')
            .zero_padding(2, name='padding18')
            .unit(3, 128, 1, relu=False, dilation=2, name='conv_sub2')
        )

        # Branch at full input resolution (sub1): three cheap stride-2 convs.
        (
            n.feed('data')
            .unit(3, 32, 2, relu=True, padding='SAME', name='conv1_sub1')
            .unit(3, 32, 2, relu=True, padding='SAME', name='conv2_sub1')
            .unit(3, 64, 2, relu=True, padding='SAME', name='conv3_sub1')
            .unit(1, 128, 1, relu=False, name='conv3_sub1_proj')
        )

        (
            n.feed(n.out('conv_sub2'), n.out('conv3_sub1_proj'))
            .add(name='sub12_sum')
            .relu(name='sub12_sum/relu')
            .interp(z_factor=2, name='sub12_sum_interp')
        )
        self.classifier(n.feed(self.feature_layer))

        if self.use_bn:  # cascade label guidance heads (training only in the original)
            (
                n.feed('conv5_4_interp').conv(
                    1, 1, self.num_classes, 1, 1, biased=True, relu=False, name='sub4_out'
                )
            )
            (
                n.feed('sub24_sum_interp').conv(
                    1, 1, self.num_classes, 1, 1, biased=True, relu=False, name='sub24_out'
                )
            )

    def _pyramid_pooling(self, n):
        """Average-pool conv5_3/relu per bin, resize back (align_corners=True).

        Static h, w: `avg_pool` with the kernels of `psp_pool_geometry` (the TF1/Caffe ops).
        Unknown h, w (a `tf.function` / SavedModel with `None` spatial dims): `psp_pool_dynamic`,
        the same geometry computed from tensor shapes.
        """
        shape = n.outputs['conv5_3/relu'].shape[1:3]
        if not shape.is_fully_defined():
            size = tf.shape(n.outputs['conv5_3/relu'])[1:3]
            for n_bin in self.psp_bins:
                (
                    n.feed('conv5_3/relu')
                    .psp_pool(n_bin, self.psp_pooling, name=f'conv5_3_pool{n_bin}')
                    .resize_bilinear(size, name=f'conv5_3_pool{n_bin}_interp')
                )
            return
        h, w = int(shape[0]), int(shape[1])
        for n_bin in self.psp_bins:
            (k_h, k_w), (s_h, s_w) = psp_pool_geometry(h, w, n_bin, self.psp_pooling)
            (
                n.feed('conv5_3/relu')
                .avg_pool(k_h, k_w, s_h, s_w, name=f'conv5_3_pool{n_bin}')
                .resize_bilinear((h, w), name=f'conv5_3_pool{n_bin}_interp')
            )


class ICNet_BN(_ICNetFamily):  # noqa: N801 (the original's class name)
    """ICNet with batch norm (`*_bnnomerge` weights) and the two auxiliary heads."""

    use_bn = True
    aux_heads = {'sub4_out': 0.16, 'sub24_out': 0.4}  # LAMBDA1, LAMBDA2 of the original
    # Exact for ICNet too, which trains plain: it is the inference structure (BN merged, no
    # auxiliary heads; the original never trains it).
    training_rewrites = ('zoom_before_conv',)


class ICNet(_ICNetFamily):
    """ICNet with batch norm merged into biased convolutions (`icnet_cityscapes_*.npy`)."""

    use_bn = False
