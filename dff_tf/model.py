"""Deep Feature Flow (Zhu et al., CVPR 2017, arXiv:1611.07715) for video segmentation: `DFF`.

Parts, all on icnet_tf's builder:

* N_feat, the feature network, run on key frames only: PSPNet-101 up to the input of its
  classifier (`conv5_4_bn`, 512 channels at 1/8; the reference setup) or ICNet_BN up to
  `sub12_sum_interp` (the input of `conv6_cls`, 128 channels at ~1/4).
* N_task, the task network: that network's own 1x1 classifier (`conv6` / `conv6_cls`, with
  PSPNet's dropout when training), using the SAME variables, so a key frame's logits are
  exactly the feature network's logits.
* FlowNetS (`dff_tf.flownet`) on `concat([current, key])`, run at `flow_scale` of the frame
  size (default 1/2, as the original's 2x2 average pooling), or one of its light variants
  (`flownet='half'` / `'quarter'`: every layer 1/2 or 1/4 as wide; the DFF paper's
  "FlowNet Half"), which make DFF pay off with a real-time feature network (bench/RESULTS.md).
* An optional scale field S: a 1x1 conv on FlowNetS' last decoder concat (`concat2`, 194
  channels in FlowNetS, 98 / 50 in the half / quarter variants) to one value per feature
  channel, weights 0 and bias 1 (S == 1 at init), as the original's `Convolution5_scale`; the
  bias is frozen (its `lr_mult` is 0 there).
* The warp W (`dff_tf.warp.warp`): warped(p) = key_features(p + flow(p)), bilinear, zeros
  outside.

Preprocessing is done here, per sub-network, from RGB frames `[N, H, W, 3]` (uint8, or float
in 0..255): the feature network gets its own input convention (ICNet_BN and the Caffe PSPNet:
BGR minus (103.939, 116.779, 123.68); the mmseg PSPNet: RGB mean/std), FlowNetS gets
`RGB / 255 - FLOWNET_MEAN_RGB` (FlowNetPytorch's training transform, the weights we load).
Frames are used at their own size (no padding); H and W must be static.

Flow scaling. FlowNetS runs on frames resized to `flow_input_size(H, W)` =
`ceil(H * flow_scale) x ceil(W * flow_scale)` (bilinear with half-pixel centres: for 1/2 on
even sizes exactly the 2x2 average pooling of the original, and ceil like its 'full' pooling
convention). Its `predict_flow2` is at 1/4 of that input, in input pixels / `DIV_FLOW` (20),
x then y. On a feature grid G of `Gh x Gw` the flow is the field resized to `Gh x Gw` (bilinear,
align_corners=True: the builder's convention) times `DIV_FLOW * Gw / flow_input_width` for x
and `DIV_FLOW * Gh / flow_input_height` for y (the spec's rule; e.g. the original DFF's 2.5 for
a half-size FlowNet input and a 1/16 grid).

Schedule (`VideoRunner`): a key frame every `key_interval` frames, whose features are cached;
the frames in between are `propagate`d from the cached features.
"""

import json
import math
import os
import re
import time

import numpy as np
import tensorflow as tf

from converters import tf_checkpoint
from converters.errors import UserError, WeightsFileError, WeightsMismatchError
from converters.tf1_checkpoint import checked_index, index_keys
from dff_tf.flownet import DIV_FLOW, FlowNetS, build_flownet, flownet_config
from dff_tf.warp import warp
from icnet_tf.models import build_model, model_class, model_name
from icnet_tf.network import Network, resize_bilinear_align_corners
from icnet_tf.weights import load_skipping_class_heads

FEATURE_NETS = ('pspnet101', 'icnet_bn', 'icnet')  # the built-in ones (any registered works)
# The input of FlowNetS' predict_flow2: concat(conv2, out_deconv2, flow3_up), 128 + 64 + 2
# channels in FlowNetS (`FlowNetS.concat_channels(2)` for any width).
FLOWNET_CONCAT2 = 'concat2'


def build_feature_net(name, num_classes, seed=0, **kwargs):
    """A feature network from the model registry (`icnet_tf.models`): any registered network
    that declares a `feature_layer`, e.g. 'pspnet101', 'icnet_bn' or 'icnet' (BN merged)."""
    try:
        model_class(name)
    except UserError as e:
        raise UserError(f'unknown feature_net {name!r} ({e})') from None
    net = build_model(name, num_classes=num_classes, seed=seed, **kwargs)
    if net.feature_layer is None:
        raise ValueError(f'{name!r} declares no feature_layer: it cannot be a DFF feature network')
    return net


def flow_input_size(height, width, flow_scale):
    """FlowNetS input size for frames of `height x width`: ceil(size * flow_scale)."""
    return tuple(max(1, math.ceil(s * flow_scale - 1e-9)) for s in (height, width))


def flownet_pair(key_images, current_images, flow_scale):
    """FlowNetS' input: `concat([current, key])` of RGB 0..255 frames `[N, H, W, 3]`, each
    normalised by `FlowNetS.preprocess`, resized to `flow_input_size` (bilinear, half-pixel, no
    antialias) -> `[N, h, w, 6]`."""
    key, current = DFF._frames(key_images), DFF._frames(current_images)
    size = flow_input_size(*_static_hw(current, 'frames'), flow_scale)
    pair = FlowNetS.preprocess(tf.concat([current, key], axis=-1))
    if size != tuple(pair.shape[1:3]):
        pair = tf.image.resize(pair, size, method='bilinear')
    return pair


def _static_hw(images, what):
    h, w = images.shape[1], images.shape[2]
    if h is None or w is None:
        raise ValueError(f'DFF needs {what} with a static height and width, got {images.shape}')
    return int(h), int(w)


class DFF(tf.Module):
    """Deep Feature Flow: N_feat on key frames, FlowNetS + warp + N_task on the others.

    Args:
      feature_net: 'pspnet101' (default, the reference setup), 'icnet_bn' or 'icnet' (BN
        merged), or such a network already constructed (its num_classes wins).
      num_classes: classes of the task network.
      flow_scale: FlowNetS runs on frames resized by this factor (default 0.5).
      scale_field: add the scale field S (weights 0, bias 1 and frozen).
      train_feature_net: let gradients reach N_feat in `__call__` (default: frozen, features
        under `stop_gradient`). N_feat's batch norm always uses its moving statistics
        (`use_global_stats`, as the original DFF).
      flownet: 'plain' (FlowNetPytorch `flownets`), 'bn' (`flownets_bn`), the light 'half'
        or 'quarter' (`dff_tf.flownet.FLOWNET_VARIANTS`), a dict of FlowNetS arguments
        (`{'batch_norm': False, 'width': 0.5}`) or a `FlowNetS`.
      feature_net_kwargs: extra constructor arguments of the feature network (e.g.
        `layout='mmseg'` for PSPNet101, `filter_scale=2` for ICNet_BN).
      seed: seed of the fresh initialisation.

    Call forms (frames are RGB `[N, H, W, 3]`, uint8 or float 0..255; see the module docstring):
      `features = dff.key_features(key_frames)`
      `logits = dff.propagate(features, key_frames, current_frames)`
      `logits = dff(key_frames, current_frames, training=...)` (training: features of the key
        frames without gradient unless train_feature_net; when key == current (distance 0)
        the unwarped features are used, like the original's `eq_flag`).
    Logits are at the feature grid; `dff.labels(logits, (H, W))` resizes them the feature
    network's way and takes the argmax.
    """

    def __init__(
        self,
        feature_net='pspnet101',
        num_classes=19,
        *,
        flow_scale=0.5,
        scale_field=False,
        train_feature_net=False,
        flownet='plain',
        feature_net_kwargs=None,
        seed=0,
        name='DFF',
    ):
        super().__init__(name=name)
        if isinstance(feature_net, str):
            feature_net = build_feature_net(
                feature_net, num_classes, seed, **(feature_net_kwargs or {})
            )
        elif feature_net_kwargs:
            raise ValueError('feature_net_kwargs only apply when feature_net is a name')
        if not isinstance(feature_net, Network) or feature_net.feature_layer is None:
            raise TypeError(
                f'feature_net must be one of the registered models ({", ".join(FEATURE_NETS)}, '
                f'...) or a Network with a feature_layer, got {type(feature_net).__name__}'
            )
        name = model_name(feature_net)
        self.feature_net_name = name if ':' in name else name.lower()
        if not flow_scale > 0:
            raise ValueError(f'flow_scale must be positive, got {flow_scale!r}')
        flownet = build_flownet(flownet, seed=seed)
        self.feature_net = feature_net
        self.flownet = flownet
        self.num_classes = feature_net.num_classes
        self.flow_scale = float(flow_scale)
        self.train_feature_net = bool(train_feature_net)
        self.feature_layer = feature_net.feature_layer
        self.task_layer = feature_net.output_name
        self.feature_channels = feature_net.feature_channels
        if scale_field:
            # Convolution5_scale of the original: 1x1 conv, weights 0, bias 1 with lr_mult 0.
            with tf.init_scope():
                self.scale_field = {
                    'weights': tf.Variable(
                        tf.zeros([1, 1, flownet.concat_channels(2), self.feature_channels]),
                        name='scale_field/weights',
                    ),
                    'biases': tf.Variable(
                        tf.ones([self.feature_channels]), trainable=False, name='scale_field/biases'
                    ),
                }
        else:
            self.scale_field = None

    def get_config(self):
        return dict(
            feature_net=self.feature_net_name,
            num_classes=self.num_classes,
            flow_scale=self.flow_scale,
            scale_field=self.scale_field is not None,
            train_feature_net=self.train_feature_net,
            flownet=flownet_config(self.flownet),
            feature_net_kwargs={
                k: v for k, v in self.feature_net.get_config().items() if k != 'num_classes'
            },
        )

    def build(self):
        """Create every variable (small forward passes); returns self."""
        self.feature_net.build()
        self.flownet.build()
        return self

    # ------------------------------------------------------------------- preprocessing
    @staticmethod
    def _frames(images):
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(f'DFF expects RGB frames [N, H, W, 3], got shape {images.shape}')
        return tf.cast(images, tf.float32)

    def feature_input(self, rgb):
        """RGB 0..255 -> the feature network's input convention."""
        return self.feature_net.preprocess(rgb)

    def flow_input_size(self, height, width):
        """FlowNetS input size for frames of `height x width`: ceil(size * flow_scale)."""
        return flow_input_size(height, width, self.flow_scale)

    # ------------------------------------------------------------------------- parts
    def key_features(self, key_images, compute_dtype=None):
        """N_feat on key frames: `[N, Gh, Gw, C]` features (batch norm in inference mode), in
        `compute_dtype` (None: float32; see `Network.__call__`)."""
        x = self.feature_input(self._frames(key_images))
        return self.feature_net(
            x, training=False, outputs=(self.feature_layer,), compute_dtype=compute_dtype
        )[self.feature_layer]

    def task(self, features, training=False, compute_dtype=None):
        """N_task: the feature network's classifier on (warped) features -> logits."""
        return self.feature_net.classify(features, training=training, compute_dtype=compute_dtype)

    def flownet_pair(self, key_images, current_images):
        """FlowNetS' input for these frames (`flownet_pair` at this model's flow_scale)."""
        return flownet_pair(key_images, current_images, self.flow_scale)

    def raw_flow(self, key_images, current_images, training=False, compute_dtype=None):
        """FlowNetS on `concat([current, key])` at `flow_scale`.

        Returns `(flow2, concat2)`: the raw flow `[N, ceil(h/4), ceil(w/4), 2]` (h, w =
        `flow_input_size`; FlowNetS input pixels / 20, x then y) and the decoder features it
        was predicted from (`concat2`, the input of the scale field), float32 (FlowNetS runs
        in `compute_dtype`).
        """
        out = self.flownet(
            self.flownet_pair(key_images, current_images),
            training=training,
            outputs=('predict_flow2', FLOWNET_CONCAT2),
            compute_dtype=compute_dtype,
        )
        return (
            tf.cast(out['predict_flow2'], tf.float32),
            tf.cast(out[FLOWNET_CONCAT2], tf.float32),
        )

    def grid_flow(self, raw_flow, grid_size, flow_input_size):
        """Raw FlowNetS flow -> displacement in pixels of a feature grid of `grid_size`.

        Resized to the grid (bilinear, align_corners=True), then x times
        `DIV_FLOW * grid_w / flow_input_w` and y times `DIV_FLOW * grid_h / flow_input_h`.
        """
        gh, gw = (int(s) for s in grid_size)
        fh, fw = (int(s) for s in flow_input_size)
        flow = tf.convert_to_tensor(raw_flow, tf.float32)
        if tuple(flow.shape[1:3]) != (gh, gw):
            flow = resize_bilinear_align_corners(flow, (gh, gw))
        return flow * tf.constant([DIV_FLOW * gw / fw, DIV_FLOW * gh / fh], tf.float32)

    def scale_map(self, concat2, grid_size):
        """The scale field S on the feature grid (None without a scale field)."""
        if self.scale_field is None:
            return None
        s = tf.nn.conv2d(concat2, self.scale_field['weights'], 1, 'VALID')
        s = tf.nn.bias_add(s, self.scale_field['biases'])
        if tuple(s.shape[1:3]) != tuple(grid_size):
            s = resize_bilinear_align_corners(s, grid_size)
        return s

    def warp_features(
        self,
        features,
        key_images,
        current_images,
        *,
        training=False,
        raw_flow=None,
        compute_dtype=None,
    ):
        """Key-frame features warped to the current frames (times S with a scale field).

        `raw_flow`: use this FlowNetS output (raw units, at 1/4 of `flow_input_size`) instead
        of running FlowNetS (for tests and analysis; FlowNetS still runs for S if enabled).
        FlowNetS runs in `compute_dtype`; the warp is float32 (so are the warped features).
        """
        features = tf.cast(tf.convert_to_tensor(features), tf.float32)
        current = self._frames(current_images)
        grid = _static_hw(features, 'features')
        concat2 = None
        if raw_flow is None or self.scale_field is not None:
            flow2, concat2 = self.raw_flow(
                key_images, current, training=training, compute_dtype=compute_dtype
            )
            raw_flow = flow2 if raw_flow is None else raw_flow
        flow = self.grid_flow(raw_flow, grid, self.flow_input_size(*_static_hw(current, 'frames')))
        warped = warp(features, flow)
        if self.scale_field is not None:
            warped = warped * self.scale_map(concat2, grid)
        return warped

    def propagate(self, features, key_images, current_images, *, training=False, raw_flow=None):
        """Logits of current frames from the cached key-frame features: flow, warp, N_task."""
        warped = self.warp_features(
            features, key_images, current_images, training=training, raw_flow=raw_flow
        )
        return self.task(warped, training=training)

    def __call__(self, key_images, current_images, training=False, compute_dtype=None):
        """Training/evaluation forward pass of (key, current) pairs -> logits of current.

        `compute_dtype` (mixed precision): the networks run in it, the warp in float32; the
        logits come in it."""
        key, current = self._frames(key_images), self._frames(current_images)
        features = tf.cast(self.key_features(key, compute_dtype), tf.float32)
        if not self.train_feature_net:
            features = tf.stop_gradient(features)
        warped = self.warp_features(
            features, key, current, training=training, compute_dtype=compute_dtype
        )
        # eq_flag of the original: a key frame's own features are used unwarped.
        same = tf.reduce_all(tf.equal(key, current), axis=[1, 2, 3])
        warped = tf.where(same[:, None, None, None], features, warped)
        return self.task(warped, training=training, compute_dtype=compute_dtype)

    def labels(self, logits, size):
        """Logits -> int32 labels `[N, H, W]`: resized the feature network's way, argmax."""
        logits = self.feature_net.upsample_logits(logits, size)
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    # ----------------------------------------------------------------------- training
    def task_variables(self):
        return [v for layer in self.feature_net.classifier_layers() for v in layer.values()]

    def trained_variables(self):
        """What DFF training updates: FlowNetS, N_task, S's weights (+ N_feat if asked)."""
        candidates = list(self.flownet.trainable_variables) + self.task_variables()
        if self.scale_field is not None:
            candidates.append(self.scale_field['weights'])
        if self.train_feature_net:
            candidates += list(self.feature_net.trainable_variables)
        seen, out = set(), []
        for v in candidates:
            if v.trainable and id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    def conv_weights(self):
        """Convolution kernels among `trained_variables()` (for weight decay)."""
        kernels = self.flownet.conv_weights() + [
            layer['weights'] for layer in self.feature_net.classifier_layers() if 'weights' in layer
        ]
        if self.scale_field is not None:
            kernels.append(self.scale_field['weights'])
        if self.train_feature_net:
            kernels += self.feature_net.conv_weights()
        seen, out = set(), []
        for v in kernels:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out


# ------------------------------------------------------------------------------ weights
_DFF_KEY = re.compile(r'^net/(feature_net|flownet)/params/')


def dff_checkpoint_prefix(path):
    """The checkpoint prefix if `path` is a checkpoint written for a DFF model, else None."""
    try:
        prefix = tf_checkpoint.resolve_checkpoint(path)
        keys = index_keys(prefix)  # read in Python, before any TF reader opens the file
    except WeightsFileError:
        return None
    return prefix if any(_DFF_KEY.match(k) for k in keys) else None


def restore_dff_checkpoint(dff, prefix):
    """Restore every DFF variable from a `dff_tf.train` checkpoint (the optimizer is ignored)."""
    dff.build()
    checked_index(prefix)  # sizes and bounds against the data file, before TF reads it
    try:
        status = tf.train.Checkpoint(net=dff).read(prefix)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise WeightsMismatchError(
            f'{prefix}: this DFF checkpoint does not fit DFF({_describe(dff)}) (another '
            f'--feature_net, --num_classes, --flownet or --scale_field?): '
            f'{str(e).splitlines()[0][:300]}'
        ) from None
    return prefix


def load_weights(dff, restore_from=None, flownet_weights=None, *, fresh_heads=False, log=print):
    """Initialise a DFF model from the CLIs' `--restore_from` and `--flownet_weights`.

    `restore_from`: a DFF checkpoint (directory or prefix written by `dff_tf.train`), which
    sets every part, or weights of the feature network alone (caffe-tensorflow .npy, an
    icnet_tf checkpoint, a PyTorch file its key map reads), which set N_feat and N_task. The
    feature network's load is strict except for its training-only auxiliary heads
    (`aux_heads`); with `fresh_heads=True` (training) a class head that does not fit is left
    freshly initialised, with a message (`icnet_tf.weights.load_skipping_class_heads`).
    `flownet_weights`: FlowNetS weights (FlowNetPytorch .pth/.pth.tar, a FlowNetS checkpoint,
    or a DFF checkpoint, whose FlowNetS part is used), loaded strictly after `restore_from`.
    Returns a list of what was loaded, for the log.
    """
    loaded = []
    dff.build()
    whole = restore_from and dff_checkpoint_prefix(restore_from)
    if not fresh_heads and not whole and not flownet_weights:
        log(
            'note: no --flownet_weights and --restore_from is not a DFF checkpoint: FlowNetS '
            'keeps its random initialisation, so propagated frames use an untrained flow'
        )
    if restore_from:
        prefix = whole
        if prefix:
            restore_dff_checkpoint(dff, prefix)
            log(f'restored the whole DFF model from {prefix}')
        elif fresh_heads:
            load_skipping_class_heads(dff.feature_net, restore_from, log=log)
        else:
            report = dff.feature_net.load(
                restore_from, skip=tuple(dff.feature_net.aux_heads), verbose=False
            )
            log(report)
        loaded.append(restore_from)
    if flownet_weights:
        prefix = dff_checkpoint_prefix(flownet_weights)
        if prefix:
            weights = _checkpoint_part(prefix, 'flownet')
            report = dff.flownet.load(weights, verbose=False)
            report.source = prefix
        else:
            report = dff.flownet.load(flownet_weights, verbose=False)
        log(report)
        loaded.append(flownet_weights)
    return loaded


def _checkpoint_part(prefix, part):
    """`{layer: {param: array}}` of one part ('flownet' or 'feature_net') of a DFF checkpoint."""
    return tf_checkpoint.read(prefix, root=f'net/{part}')[0]


def _describe(dff):
    c = dff.get_config()
    return (
        f'feature_net={c["feature_net"]}, num_classes={c["num_classes"]}, '
        f'flownet={c["flownet"]}, scale_field={c["scale_field"]}'
    )


# ------------------------------------------------------------------------------ running
class VideoRunner:
    """Key-frame schedule over a video with compiled steps and per-step timings.

    `key_step(frame)` -> (features, labels) runs N_feat + N_task on a key frame;
    `propagate_step(features, key_frame, frame)` -> labels runs FlowNetS + warp + N_task.
    Frames are uint8 RGB `[H, W, 3]` (one video: one size, one trace per step kind).
    `run(frames)` yields `(index, labels, is_key)` with a key frame every `key_interval`
    frames (the first frame is a key frame). Wall-clock seconds of every step are recorded in
    `times['key']` / `times['propagate']` (each includes the argmax and the copy to NumPy).
    """

    def __init__(self, dff, key_interval=5, compiled=True):
        if int(key_interval) < 1:
            raise ValueError(f'key_interval must be >= 1, got {key_interval!r}')
        self.dff = dff
        self.key_interval = int(key_interval)
        self.times = {'key': [], 'propagate': []}

        def key_fn(frame):
            features = dff.key_features(frame)
            return features, dff.labels(dff.task(features), tf.shape(frame)[1:3])

        def propagate_fn(features, key_frame, frame):
            logits = dff.propagate(features, key_frame, frame)
            return dff.labels(logits, tf.shape(frame)[1:3])

        # autograph=False: the model code has no tensor-dependent Python control flow, and
        # autograph would re-read (possibly edited) source files while tracing.
        self._key = tf.function(key_fn, autograph=False) if compiled else key_fn
        self._propagate = tf.function(propagate_fn, autograph=False) if compiled else propagate_fn

    def key_step(self, frame):
        start = time.perf_counter()
        features, labels = self._key(tf.constant(np.asarray(frame)[None]))
        labels = labels.numpy()[0]
        self.times['key'].append(time.perf_counter() - start)
        return features, labels

    def propagate_step(self, features, key_frame, frame):
        start = time.perf_counter()
        labels = self._propagate(
            features, tf.constant(np.asarray(key_frame)[None]), tf.constant(np.asarray(frame)[None])
        ).numpy()[0]
        self.times['propagate'].append(time.perf_counter() - start)
        return labels

    def run(self, frames):
        features = key_frame = None
        for index, frame in enumerate(frames):
            if index % self.key_interval == 0:
                features, labels = self.key_step(frame)
                key_frame = frame
                yield index, labels, True
            else:
                yield index, self.propagate_step(features, key_frame, frame), False

    def speed(self, key_interval=None, skip_first=True):
        """Frames/s from the median step times: key, propagated and overall at an interval.

        The first call of each kind (tracing) is left out when `skip_first` and more calls
        exist. Overall = l / (t_key + (l - 1) * t_propagate) at key interval l.
        """
        interval = self.key_interval if key_interval is None else int(key_interval)
        med = {}
        for kind, values in self.times.items():
            values = values[1:] if skip_first and len(values) > 1 else values
            med[kind] = float(np.median(values)) if values else float('nan')
        out = {
            'key_interval': interval,
            'key_seconds': med['key'],
            'propagate_seconds': med['propagate'],
            'key_fps': 1.0 / med['key'],
            'propagate_fps': 1.0 / med['propagate'],
            'samples': {k: len(v) for k, v in self.times.items()},
        }
        t_prop = med['propagate'] if interval > 1 else 0.0
        out['overall_fps'] = interval / (med['key'] + (interval - 1) * t_prop)
        return out


# ----------------------------------------------------------------- saved configurations
CONFIG_NAME = 'dff_config.json'  # written by dff_tf.train next to its checkpoints


def saved_config(restore_from):
    """The dff_config.json written by dff_tf.train next to a DFF checkpoint, or None."""
    if not restore_from or not (
        os.path.isdir(restore_from) or os.path.exists(restore_from + '.index')
    ):
        return None
    prefix = dff_checkpoint_prefix(restore_from)
    if prefix is None:
        return None
    path = os.path.join(os.path.dirname(prefix), CONFIG_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'{path}: unreadable DFF configuration ({e})') from None


FLOWNET_CONFIG_NAME = 'flownet_config.json'  # written by dff_tf.train_flownet


def flownet_config_path(weights):
    """Where `dff_tf.train_flownet` keeps the configuration of the flow network it trained
    in the snapshot folder `weights` (a folder, or a checkpoint prefix inside one)."""
    weights = os.fspath(weights)
    folder = weights if os.path.isdir(weights) else os.path.dirname(weights)
    return os.path.join(folder, FLOWNET_CONFIG_NAME)


def saved_flownet_config(weights):
    """`{'flownet': ..., 'flow_scale': ...}` that `dff_tf.train_flownet` saved next to the
    flow-network checkpoint `weights`, or None (no such file, or `weights` is a .pth file)."""
    if not weights or not (os.path.isdir(weights) or os.path.exists(f'{weights}.index')):
        return None
    path = flownet_config_path(weights)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'{path}: unreadable flow-network configuration ({e})') from None
    if not isinstance(config, dict):
        raise UserError(f'{path}: expected a JSON object, got {type(config).__name__}')
    return config


def build_dff(config, seed=0):
    """A built DFF from `model_config()`, with a one-line message for bad settings."""
    try:
        return DFF(seed=seed, **config).build()
    except (TypeError, ValueError) as e:
        raise UserError(f'cannot build DFF({config}): {e}') from None


def check_frame_size(dff, h, w, what):
    """The feature network's minimum input size (pyramid pooling), as a one-line error."""
    side = dff.feature_net.build_input_shape()[1]
    if h < side or w < side:
        raise UserError(
            f"{what} {h}x{w} is smaller than {dff.feature_net_name}'s minimum "
            f'{side}x{side} (pyramid pooling)'
        )
