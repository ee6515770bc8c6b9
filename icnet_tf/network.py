"""The chained-layer builder: a TF2 `Network` base class, the per-call `Chain` and `@layer`.

A network is written the way caffe-tensorflow and ICNet-tensorflow write it: one chain of layer
calls per branch, joined by `feed()`,

    (n.feed('data')
      .interp(s_factor=0.5, name='data_sub2')
      .conv(3, 3, 32, 2, 2, padding='SAME', name='conv1_1_3x3_s2'))

so the model file can be diffed against the Caffe prototxt line by line. What changed for TF2:

* `Network` is a `tf.Module` that owns only variables, in `net.params[layer][param]`, keyed by
  the original layer names and the caffe-tensorflow parameter names (conv `weights` HWIO and
  `biases`; batch norm `scale`, `offset`, `mean`, `variance`), so a weights file maps 1:1.
  Variables are created once, on the first call, and checked on every later call.
* Activations live in a `Chain` made fresh for every call; nothing symbolic is stored on the
  module, so eager calls and `tf.function` traces never leak into each other. The named outputs
  of the latest *eager* call are kept for inspection in `net.layers`.
* `training` is a call argument; batch-norm moving statistics change only when the caller also
  passes `update_stats=True` (the original `--update_mean_var`).
* `compute_dtype` is a call argument too (mixed precision: `tf.bfloat16` or `tf.float16`): the
  variables stay float32 (the master weights, same names and checkpoints) and each layer casts
  what it reads to the compute dtype; batch norm keeps its statistics in float32.
* Layer names are required and unique; feeding an unknown name raises `KeyError` naming it and
  listing the names that exist.  There is no module-level state.
"""

import functools
import zlib

import numpy as np
import tensorflow as tf

from icnet_tf import weights

# tf.layers.batch_normalization(momentum=0.95, epsilon=1e-5) in the original network.py; the
# Caffe BN layers of ICNet/PSPNet were trained with the same moving-average momentum.
BN_MOMENTUM = 0.95
BN_EPSILON = 1e-5
# The Caffe input convention of ICNet and PSPNet (ImageNet BGR means, no scaling).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

_TRAINABLE = {
    'weights': True,
    'biases': True,
    'scale': True,
    'offset': True,
    'mean': False,
    'variance': False,
}


def layer(op):
    """Decorator for chainable layer ops.

    The op receives the current terminals (one tensor, or a list when several were fed), its
    output is stored under `name` in the chain's outputs, becomes the only terminal, and the
    chain is returned so that calls can be chained.
    """

    @functools.wraps(op)
    def layer_decorated(self, *args, name, **kwargs):
        if not isinstance(name, str) or not name:
            raise ValueError(f'{op.__name__}: a non-empty layer name is required')
        if name in self.outputs:
            raise ValueError(f'duplicate layer name {name!r}')
        if not self.terminals:
            raise RuntimeError(f'layer {name!r} has no input: call feed() first')
        layer_input = self.terminals[0] if len(self.terminals) == 1 else list(self.terminals)
        layer_input = self.prepare_input(op.__name__, layer_input)
        output = op(self, layer_input, *args, name=name, **kwargs)
        self.outputs[name] = output
        self.terminals = [output]
        return self

    return layer_decorated


HALF_DTYPES = (tf.float16, tf.bfloat16)  # the 16-bit compute dtypes of mixed precision


def keep_half_dtype(x, y):
    """`y` (the float32 output of a resize op) cast back to `x`'s dtype when that is a 16-bit
    float: `ResizeBilinear` always returns float32. Any other input: `y` unchanged."""
    return tf.cast(y, x.dtype) if x.dtype in HALF_DTYPES else y


def resize_bilinear_align_corners(x, size):
    """Bilinear resize with `align_corners=True`: corner pixels of input and output coincide.

    Exactly TF1 `tf.image.resize_bilinear(x, size, align_corners=True)` (TF2's
    `tf.image.resize` has no such mode). For output row `i` of `out_h` rows the source row is
    `i * (in_h - 1) / (out_h - 1)` (0 when `out_h == 1`), interpolated linearly between its
    floor and ceil rows; columns likewise. `x` is `[B, H, W, C]`, `size` is `(out_h, out_w)`.
    float32 out (16-bit float inputs: their own dtype, computed in float32 and rounded).
    """
    y = tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=True, half_pixel_centers=False)
    return keep_half_dtype(x, y)


def resize_bilinear_legacy(x, size):
    """Bilinear resize with the TF1 defaults (`align_corners=False, half_pixel_centers=False`).

    Source row for output row `i` is `i * in_h / out_h` (the "asymmetric" mapping), clamped to
    the last row for interpolation. This is what the original `add` layer uses to make its first
    input the size of its second; `tf.image.resize` in TF2 samples at half-pixel centres instead.
    """
    y = tf.raw_ops.ResizeBilinear(
        images=x, size=size, align_corners=False, half_pixel_centers=False
    )
    return keep_half_dtype(x, y)


def caffe_interp_size(size, s_factor=1, z_factor=1):
    """Output size of a Caffe `Interp` layer: shrink `(h-1)*s+1`, then zoom `h+(h-1)*(z-1)`.

    Works on Python ints (static shapes) and on int32 tensors (dynamic shapes); fractional
    results are truncated like the original's `int()`. E.g. 1025 -> 513 (shrink 0.5),
    65 -> 129 (zoom 2), 1024 -> 512 (shrink 0.5: 512.5 truncated).
    """
    if isinstance(size, (int, np.integer)):
        shrunk = (size - 1) * s_factor + 1
        return int(shrunk + (shrunk - 1) * (z_factor - 1))
    size = tf.cast(size, tf.float64)
    shrunk = (size - 1.0) * s_factor + 1.0
    return tf.cast(tf.floor(shrunk + (shrunk - 1.0) * (z_factor - 1.0)), tf.int32)


def caffe_bgr_input(rgb):
    """uint8 (or 0..255 float) RGB `[..., 3]` -> float32 BGR minus `CAFFE_BGR_MEAN`."""
    rgb = tf.cast(rgb, tf.float32)
    return tf.reverse(rgb, axis=[-1]) - tf.constant(CAFFE_BGR_MEAN, tf.float32)


def _spatial(x):
    """(h, w) as Python ints when static, else as int32 scalars."""
    static = x.shape[1:3]
    dynamic = tf.shape(x)[1:3]
    return tuple(static[i] if static[i] is not None else dynamic[i] for i in range(2))


class Chain:
    """The activations of one forward pass and the chainable ops that build it.

    Made by `Network.__call__`; subclasses of `Network` receive it in `setup(n)`. Subclass it
    (and set `Network.chain_class`) to add family-specific composite ops.
    """

    def __init__(self, net, inputs, *, training, update_stats, compute_dtype=tf.float32):
        self.net = net
        self.outputs = dict(inputs)
        self.terminals = []
        self.training = bool(training)
        self.update_stats = bool(update_stats)
        self.dtype = tf.as_dtype(compute_dtype)

    # ----------------------------------------------------------------------------- plumbing
    def feed(self, *args):
        """Set the input(s) of the next layer: layer names or tensors."""
        if not args:
            raise ValueError('feed() needs at least one layer name or tensor')
        terminals = []
        for fed in args:
            if isinstance(fed, str):
                if fed not in self.outputs:
                    raise KeyError(
                        f'Unknown layer name fed: {fed!r} (known: '
                        f'{", ".join(sorted(self.outputs))})'
                    )
                fed = self.outputs[fed]
            terminals.append(fed)
        self.terminals = terminals
        return self

    def get_output(self):
        return self.terminals[-1]

    def result(self, value):
        """What `Network.__call__` returns for a layer's output: the output itself. A chain
        whose ops pass stand-ins (`icnet_tf.rewrites.TrainingZoomChain`) returns tensors."""
        return value

    def prepare_input(self, op_name, layer_input):
        """Hook run on every layer op's input before the op (identity here). A chain that
        passes stand-ins between its ops (e.g. `icnet_tf.rewrites.LazyZoom`) turns them into
        tensors here for the ops that do not take them."""
        del op_name
        return layer_input

    def _params(self, name, specs):
        return self.net._layer_params(name, specs)

    def cast(self, value):
        """A float32 variable or tensor as the compute dtype (itself when that is float32)."""
        return value if value.dtype == self.dtype else tf.cast(value, self.dtype)

    # ------------------------------------------------------------------------ convolutions
    @layer
    def conv(self, x, k_h, k_w, c_o, s_h, s_w, *, name, relu=True, padding='VALID', biased=True):
        """2-D convolution, NHWC, kernel `weights` [k_h, k_w, c_in, c_o] (+ `biases`)."""
        specs = {'weights': (k_h, k_w, int(x.shape[-1]), c_o)}
        if biased:
            specs['biases'] = (c_o,)
        p = self._params(name, specs)
        y = tf.nn.conv2d(x, self.cast(p['weights']), [1, s_h, s_w, 1], padding=padding)
        if biased:
            y = tf.nn.bias_add(y, self.cast(p['biases']))
        return tf.nn.relu(y) if relu else y

    @layer
    def atrous_conv(
        self, x, k_h, k_w, c_o, dilation, *, name, relu=True, padding='VALID', biased=True
    ):
        """Dilated convolution (`tf.nn.atrous_conv2d`, as the original; it has CPU gradients)."""
        specs = {'weights': (k_h, k_w, int(x.shape[-1]), c_o)}
        if biased:
            specs['biases'] = (c_o,)
        p = self._params(name, specs)
        y = tf.nn.atrous_conv2d(x, self.cast(p['weights']), dilation, padding=padding)
        if biased:
            y = tf.nn.bias_add(y, self.cast(p['biases']))
        return tf.nn.relu(y) if relu else y

    @layer
    def conv_transpose(self, x, k_h, k_w, c_o, s_h, s_w, *, name, crop=0, relu=False, biased=False):
        """Transposed convolution with PyTorch `ConvTranspose2d(padding=crop)` geometry.

        The full output `(h-1)*s + k` is computed and `crop` pixels are removed from every
        side, so `out = (h-1)*s + k - 2*crop`. Kernel `weights` is `[k_h, k_w, c_o, c_in]`
        (TF `conv2d_transpose` layout = PyTorch `(c_in, c_o, kh, kw)` transposed (2, 3, 1, 0),
        no spatial flip).
        """
        specs = {'weights': (k_h, k_w, c_o, int(x.shape[-1]))}
        if biased:
            specs['biases'] = (c_o,)
        p = self._params(name, specs)
        h, w = _spatial(x)
        out_shape = tf.stack([tf.shape(x)[0], (h - 1) * s_h + k_h, (w - 1) * s_w + k_w, c_o])
        y = tf.nn.conv2d_transpose(
            x, self.cast(p['weights']), out_shape, [1, s_h, s_w, 1], padding='VALID'
        )
        if crop:
            y = y[:, crop:-crop, crop:-crop, :]
        if biased:
            y = tf.nn.bias_add(y, self.cast(p['biases']))
        return tf.nn.relu(y) if relu else y

    # ------------------------------------------------------------------------- elementwise
    @layer
    def relu(self, x, *, name):
        return tf.nn.relu(x)

    @layer
    def leaky_relu(self, x, alpha=0.1, *, name):
        return tf.nn.leaky_relu(x, alpha=alpha)

    @layer
    def add(self, inputs, *, name):
        """Sum of all inputs after resizing the FIRST to the spatial size of the second.

        Reproduces the original on purpose: `tf.image.resize_bilinear(inputs[0],
        tf.shape(inputs[1])[1:3])` with the TF1 defaults (see `resize_bilinear_legacy`). At
        Caffe-exact input sizes (32k+1) the shapes already agree and the resize is the identity;
        at other sizes the ICNet branches differ by a pixel and this resize decides the numbers.
        The resize is skipped only when the static shapes prove it is the identity.
        """
        first, second = inputs[0], inputs[1]
        same = first.shape[1:3].is_fully_defined() and first.shape[1:3] == second.shape[1:3]
        if not same:
            first = resize_bilinear_legacy(first, tf.shape(second)[1:3])
        return tf.add_n([first] + list(inputs[1:]))

    @layer
    def concat(self, inputs, axis=-1, *, name):
        return tf.concat(inputs, axis=axis)

    @layer
    def softmax(self, x, *, name):
        return tf.nn.softmax(x, axis=-1)

    @layer
    def dropout(self, x, keep_prob, *, name):
        """Dropout only when training (the original switched it with a placeholder)."""
        if not self.training:
            return x
        return tf.nn.dropout(x, rate=1.0 - keep_prob)

    @layer
    def batch_normalization(self, x, *, name, relu=False):
        """Batch norm with `scale` (gamma), `offset` (beta), moving `mean` and `variance`.

        Inference: `(x - mean) / sqrt(variance + 1e-5) * scale + offset` with the moving
        statistics. Training: the same with the batch's mean and (biased) variance over N, H, W,
        computed by the fused kernel (`FusedBatchNormV3`, statistics, normalisation and its
        gradient in one op each way), which is what the original's
        `tf.layers.batch_normalization(training=True)` runs, and 1.2x faster on CPU than the
        unfused moments; the moving statistics follow `m <- 0.95 m + 0.05 batch` only when the
        call passed `update_stats=True` (the original's `--update_mean_var`; without it TF1 ran
        BN in training mode but never ran UPDATE_OPS). The moving variance takes the kernel's
        Bessel-corrected batch variance `var * n / (n - 1)`, as TF1 does. A 16-bit `x` (mixed
        precision) is normalised with float32 statistics and float32 parameters (the fused
        kernel's float32 accumulation in both modes) and comes out in its own dtype.
        """
        c = int(x.shape[-1])
        p = self._params(name, {'scale': (c,), 'offset': (c,), 'mean': (c,), 'variance': (c,)})
        if self.training:
            y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
                x, p['scale'], p['offset'], epsilon=BN_EPSILON, is_training=True
            )
            if self.update_stats:
                decay = 1.0 - BN_MOMENTUM
                p['mean'].assign_sub((p['mean'] - mean) * decay)
                p['variance'].assign_sub((p['variance'] - unbiased) * decay)
        elif x.dtype == tf.float32:
            y = tf.nn.batch_normalization(
                x, p['mean'], p['variance'], p['offset'], p['scale'], BN_EPSILON
            )
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                p['scale'],
                p['offset'],
                p['mean'],
                p['variance'],
                epsilon=BN_EPSILON,
                is_training=False,
            )
        return tf.nn.relu(y) if relu else y

    # --------------------------------------------------------------------- spatial / pooling
    @layer
    def zero_padding(self, x, paddings, *, name):
        """Zero-pad the spatial dims: `p` on all four sides, or `((top, bottom), (left, right))`.

        Together with VALID convolutions and pools this emulates Caffe's `pad` (e.g. `padding0`
        before `pool1_3x3_s2`) and PyTorch's symmetric padding.
        """
        if isinstance(paddings, (int, np.integer)):
            paddings = ((paddings, paddings), (paddings, paddings))
        return tf.pad(x, [[0, 0], list(paddings[0]), list(paddings[1]), [0, 0]])

    @layer
    def max_pool(self, x, k_h, k_w, s_h, s_w, *, name, padding='VALID'):
        return tf.nn.max_pool2d(x, [k_h, k_w], [s_h, s_w], padding=padding)

    @layer
    def avg_pool(self, x, k_h, k_w, s_h, s_w, *, name, padding='VALID'):
        return tf.nn.avg_pool2d(x, [k_h, k_w], [s_h, s_w], padding=padding)

    @layer
    def crop_like(self, inputs, *, name):
        """Keep the top-left `[:H, :W]` of the first input, H, W of the second (FlowNet)."""
        ref = tf.shape(inputs[1])
        return inputs[0][:, : ref[1], : ref[2], :]

    # ------------------------------------------------------------------------------ resizing
    @layer
    def resize_bilinear(self, x, size, *, name):
        """Resize to `size` = (h, w) with `align_corners=True` (the original's resize_bilinear)."""
        return resize_bilinear_align_corners(x, size)

    @layer
    def interp(self, x, s_factor=1, z_factor=1, *, name):
        """Caffe `Interp`: size from `caffe_interp_size`, then bilinear with align_corners=True.

        The original's current network.py (after PR #35) uses these Caffe sizes; the older
        `factor=` form (`int(h * factor)`) does not reproduce the Caffe numbers.
        """
        h, w = _spatial(x)
        size = (caffe_interp_size(h, s_factor, z_factor), caffe_interp_size(w, s_factor, z_factor))
        if not all(isinstance(s, int) for s in size):
            size = tf.stack([tf.cast(s, tf.int32) for s in size])
        return resize_bilinear_align_corners(x, size)


def compute_dtype_of(compute_dtype):
    """`tf.float32` for None, else `compute_dtype` as a TF dtype: float32, bfloat16 or float16."""
    dtype = tf.float32 if compute_dtype is None else tf.as_dtype(compute_dtype)
    if dtype not in (tf.float32, *HALF_DTYPES):
        raise ValueError(f'compute_dtype must be float32, bfloat16 or float16, got {dtype.name}')
    return dtype


class _LastCall:
    """Plain holder for the outputs of the latest eager call (kept out of TF's tracking)."""

    def __init__(self):
        self.outputs = {}


class Network(tf.Module):
    """Base class: subclasses implement `setup(n)` with chains on `n` (a `Chain`).

    Call: `net(images, training=False, update_stats=False, outputs=None, compute_dtype=None)`;
    returns the tensor named `self.output_name`, or a dict of the named layers listed in
    `outputs`. `images` are float32 (or 16-bit floats); with `compute_dtype` tf.bfloat16 or
    tf.float16 (mixed precision) every layer computes in that dtype from its float32 variables
    and the outputs come in that dtype (cast them to float32 for a loss); None is float32.
    `chain_class`: build this call with another chain class than `self.chain_class` (one with
    exact rewrites mixed in, `icnet_tf.rewrites.training_chain`); same variables.

    The network contract: everything a tool needs to know about a network is declared here, by
    the network, in one place. Segmentation, training, losses, evaluation, export, folding and
    DFF ask the network; none keeps a table of its own.

    * `output_name`: the layer holding the main logits; `output_stride`: input size / logits
      size (about: ICNet's Caffe sizes are `(h-1)/4+1`).
    * `preprocess(rgb)`: uint8 (or 0..255 float) RGB `[..., 3]` -> what `__call__` eats.
    * `upsample_logits(logits, size)`: logits -> `size` the network's way (the postprocessing
      of its reference evaluation).
    * `aux_heads`: `{layer: loss weight}` of auxiliary logits trained beside the main output
      (weight 1.0); `loss_weights` is both together. `class_heads`: the layers whose shape
      depends on `num_classes` (left out when fine-tuning on another class count).
    * `feature_layer` and `classify(features)`: the split of the network into a feature
      network and a classifier (`classifier(n)` is the part of `setup` after `feature_layer`);
      DFF warps features at `feature_layer`. `None`: the network cannot be split.
    * `serving_rewrites`: names of exact graph rewrites (`icnet_tf.rewrites.REWRITES`) that the
      exporter applies, in order; `training_rewrites`: those the training loss runs the
      network with (`icnet_tf.rewrites.TRAINING_REWRITES`, on the same variables).
    """

    chain_class = Chain
    output_name = None
    output_stride = None
    input_channels = 3
    aux_heads = {}
    feature_layer = None
    serving_rewrites = ()
    training_rewrites = ()
    # Networks whose weights also come as PyTorch checkpoints define a method
    # `torch_key_map(self, state_dict) -> {layer: {param: array}}` that calls a pure key map in
    # converters/ (see converters.formats); None: not loadable from PyTorch.
    torch_key_map = None

    def __init__(self, *, seed=0, name=None):
        super().__init__(name=name)
        self.params = {}
        self._seed = int(seed)
        self._built = False
        self._last = _LastCall()

    # ------------------------------------------------------------------------ the contract
    def preprocess(self, rgb):
        """uint8 RGB -> network input. The default is the Caffe convention of ICNet and
        PSPNet: channels reversed to BGR, `CAFFE_BGR_MEAN` subtracted, no scaling."""
        return caffe_bgr_input(rgb)

    def upsample_logits(self, logits, size):
        """Logits `[N, h, w, C]` -> `[N, size[0], size[1], C]`; default: bilinear with
        `align_corners=True` (the original's evaluation and inference)."""
        return resize_bilinear_align_corners(logits, size)

    @property
    def loss_weights(self):
        """`{layer: weight}`: the auxiliary heads and the main output (weight 1.0)."""
        return {**self.aux_heads, self.output_name: 1.0}

    @property
    def class_heads(self):
        """Layers whose variables depend on `num_classes`: the output and auxiliary heads."""
        return tuple(self.loss_weights)

    @classmethod
    def recognise(cls, weights):
        """The constructor options a weights dict `{layer: {param: array}}` implies if it holds
        this network, judged from layer names and shapes only (`{}` when none can be told);
        None if it does not hold this network. Options that cannot be told are left out."""
        return None

    @staticmethod
    def recognising_class(weights):
        """`(class, options)` of the first network class that recognises a weights dict (see
        `describe_weights` for the order), or `(None, None)`."""
        classes = list(Network.__subclasses__())
        for cls in classes:  # grows while it is walked: breadth first
            classes += [sub for sub in cls.__subclasses__() if sub not in classes]
        for cls in classes:
            options = cls.recognise(weights)
            if options is not None:
                return cls, options
        return None, None

    @staticmethod
    def describe_weights(weights):
        """One line on what a weights dict holds, e.g. 'holds ICNet_BN (filter_scale=2,
        num_classes=150)': the first network class that recognises it, asking every subclass
        of `Network` defined so far, breadth first (a class before the classes derived from it,
        such as the serving variants of `icnet_tf.rewrites`), or its size when none does. The
        hint given when a file does not fit the network asked for."""
        cls, options = Network.recognising_class(weights)
        if cls is not None:
            told = ', '.join(f'{k}={v}' for k, v in options.items())
            return f'holds {cls.__name__}' + (f' ({told})' if told else '')
        arrays = sum(len(params) for params in weights.values())
        return f'holds {arrays} arrays in {len(weights)} layers, of no network known here'

    def classifier(self, n):
        """The part of `setup` after `feature_layer`, chained on `n` (fed with it)."""
        raise NotImplementedError(f'{type(self).__name__} declares no feature/classifier split')

    def classify(self, features, training=False, *, compute_dtype=None):
        """Run only the classifier on `feature_layer` maps (e.g. features warped by DFF).

        Uses this network's variables (built first if needed), so for features of an image the
        result equals the network's own logits for it. `compute_dtype`: as in `__call__`.
        """
        if self.feature_layer is None:
            raise NotImplementedError(f'{type(self).__name__} has no feature_layer')
        self.build()
        dtype = compute_dtype_of(compute_dtype)
        features = tf.convert_to_tensor(features)
        features = tf.cast(features, dtype) if features.dtype != dtype else features
        n = self.chain_class(
            self,
            {self.feature_layer: features},
            training=training,
            update_stats=False,
            compute_dtype=dtype,
        )
        return self.classifier(n.feed(self.feature_layer)).get_output()

    def classifier_layers(self):
        """`[params of a layer]` for every layer with variables that `classify` runs (N_task)."""
        self.build()
        x = tf.zeros((1, 2, 2, self.feature_channels), tf.float32)
        n = self.chain_class(self, {self.feature_layer: x}, training=False, update_stats=False)
        self.classifier(n.feed(self.feature_layer))
        return [
            self.params[name]
            for name in n.outputs
            if name in self.params and name != self.feature_layer
        ]

    @property
    def feature_channels(self):
        """Channels of `feature_layer` (one small forward pass the first time)."""
        if getattr(self, '_feature_channels', None) is None:
            shape = self.build_input_shape()
            out = self(tf.zeros(shape, tf.float32), outputs=[self.feature_layer])
            self._last.outputs = {}
            self._feature_channels = int(out[self.feature_layer].shape[-1])
        return self._feature_channels

    # ------------------------------------------------------------------------- subclass API
    def setup(self, n):
        raise NotImplementedError('Must be implemented by the subclass.')

    def build_input_shape(self):
        """A small input shape on which the network is legal (used by `build()`)."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------- calls
    def __call__(
        self,
        images,
        training=False,
        *,
        update_stats=False,
        outputs=None,
        compute_dtype=None,
        chain_class=None,
    ):
        if update_stats and not training:
            raise ValueError('update_stats=True needs training=True')
        dtype = compute_dtype_of(compute_dtype)
        if not (tf.is_tensor(images) and images.dtype in HALF_DTYPES):
            images = tf.convert_to_tensor(images, tf.float32)
        if images.shape.rank != 4 or images.shape[-1] != self.input_channels:
            raise ValueError(
                f'{type(self).__name__} expects NHWC images with '
                f'{self.input_channels} channels, got shape {images.shape}'
            )
        if images.dtype != dtype:
            images = tf.cast(images, dtype)
        n = (chain_class or self.chain_class)(
            self,
            {'data': images},
            training=training,
            update_stats=update_stats,
            compute_dtype=dtype,
        )
        self.setup(n)
        self._built = True
        if tf.executing_eagerly():
            self._last.outputs = n.outputs
        if outputs is None:
            return n.result(n.outputs[self.output_name])
        missing = [k for k in outputs if k not in n.outputs]
        if missing:
            raise KeyError(f'no layer named {missing} in {type(self).__name__}')
        return {k: n.result(n.outputs[k]) for k in outputs}

    @property
    def layers(self):
        """Every named layer output of the latest eager call (`{}` before the first one)."""
        return self._last.outputs

    def build(self):
        """Create all variables (one eager forward pass on a small zero input)."""
        if not self._built:
            self(tf.zeros(self.build_input_shape(), tf.float32))
            self._last.outputs = {}
        return self

    # ---------------------------------------------------------------------------- variables
    def _layer_params(self, name, specs):
        """The variables of layer `name`, created on first use and shape-checked afterwards."""
        existing = self.params.get(name)
        if existing is None:
            if self._built:
                raise RuntimeError(
                    f'layer {name!r} would create variables after the network '
                    'was built; layer names must not depend on the input'
                )
            with tf.init_scope():
                created = {
                    param: self._new_variable(name, param, shape) for param, shape in specs.items()
                }
            self.params[name] = created  # assigned once, so TF tracks it for checkpoints
            return self.params[name]
        for param, shape in specs.items():
            have = tuple(existing[param].shape)
            if have != tuple(shape):
                raise ValueError(
                    f'{name}/{param}: variable has shape {have} but this input needs {tuple(shape)}'
                )
        return existing

    def _new_variable(self, layer_name, param, shape):
        key = f'{layer_name}/{param}'
        seed = [self._seed, zlib.crc32(key.encode()) & 0x7FFFFFFF]
        if param == 'weights':  # He-normal; the original left TF1's glorot default (see BUILD.md)
            fan_in = int(np.prod(shape[:-1]))
            init = tf.random.stateless_normal(shape, seed) * np.sqrt(2.0 / max(fan_in, 1))
        elif param in ('scale', 'variance'):
            init = tf.ones(shape)
        else:  # biases, offset, mean
            init = tf.zeros(shape)
        trainable = _TRAINABLE[param]
        sync = tf.VariableSynchronization.AUTO if trainable else tf.VariableSynchronization.ON_READ
        return tf.Variable(
            init,
            name=key,
            trainable=trainable,
            synchronization=sync,
            aggregation=tf.VariableAggregation.MEAN,
        )

    def variables_by_key(self):
        """`{'layer/param': tf.Variable}` for every variable, in creation order."""
        return {
            f'{layer_name}/{param}': var
            for layer_name, ps in self.params.items()
            for param, var in ps.items()
        }

    def param_shapes(self):
        return {key: tuple(v.shape) for key, v in self.variables_by_key().items()}

    def count_params(self, trainable_only=False):
        return int(
            sum(
                np.prod(v.shape)
                for v in self.variables_by_key().values()
                if v.trainable or not trainable_only
            )
        )

    def conv_weights(self):
        """Convolution kernels: the variables the original's weight decay applies to."""
        return [ps['weights'] for ps in self.params.values() if 'weights' in ps]

    def bn_affine(self):
        """Batch-norm `scale` and `offset` (gamma/beta), trained only with --train_beta_gamma."""
        return [ps[k] for ps in self.params.values() for k in ('scale', 'offset') if k in ps]

    # ------------------------------------------------------------------------------ weights
    def load(self, source, ignore_missing=False, skip=(), verbose=True, source_name=None):
        """Assign weights from any file of `converters.formats` or a nested dict.

        Strict by default: missing, unexpected or wrong-shape keys raise
        `WeightsMismatchError` listing them (nothing is assigned). `skip` names layers to leave
        as they are (e.g. class heads when `num_classes` differs); `ignore_missing=True` skips
        every key that does not fit and prints what it skipped. `source_name` names a dict
        source (the file it was read from) in the report and in errors. Returns a `LoadReport`.
        """
        return weights.load_into(
            self,
            source,
            ignore_missing=ignore_missing,
            skip=skip,
            verbose=verbose,
            source_name=source_name,
        )
