"""FlowNetS (Dosovitskiy et al., ICCV 2015) as in ClementPinard/FlowNetPytorch (HEAD d5f3292),
`models/FlowNetS.py` and the helpers in `models/util.py`, on icnet_tf's chained builder.

Architecture
------------
Encoder (`ENCODER`): ten `unit`s = symmetric zero padding `(k - 1) // 2`, a k x k convolution
(biased, or bias-free followed by batch norm `<name>_bn` in the BN variant) and LeakyReLU(0.1):
`conv1` 7x7/2 64, `conv2` 5x5/2 128, `conv3` 5x5/2 256, `conv3_1` 256, `conv4` /2 512,
`conv4_1` 512, `conv5` /2 512, `conv5_1` 512, `conv6` /2 1024, `conv6_1` 1024 (3x3 unless said).
Every stride-2 conv gives `ceil(h / 2)`, so `conv2` is `ceil(ceil(h / 2) / 2)` = `ceil(h / 4)`.

Decoder (`DECODER`), coarse to fine, for level l = 5, 4, 3, 2 with skip `s` (the encoder output
at that level: conv5_1, conv4_1, conv3_1, conv2) and `f` = conv6_1 then `concat<l+1>`:

    predict_flow<l+1>                = 3x3 conv, 2 outputs, no bias        (on f)
    flow<l+1>_up                     = crop_like(upsampled_flow<l+1>_to_<l>(predict_flow<l+1>), s)
    out_deconv<l>                    = crop_like(LeakyReLU(deconv<l>(f)), s)
    concat<l>                        = concat(s, out_deconv<l>, flow<l+1>_up)   (channels last)

and finally `predict_flow2` on `concat2`. `upsampled_flow*` and `deconv*` are 4x4 stride-2
transposed convolutions without bias in PyTorch `ConvTranspose2d(padding=1)` geometry (output
`2h`); `crop_like` keeps the top-left `[:H, :W]` of the skip's size (when the skip's size is
odd, the last row/column of the upsampled map is dropped). Parameters: 38,675,536 (plain).

Conventions
-----------
* Input: NHWC float32 with 6 channels, `concat([img1, img2], axis=-1)` of two frames already
  normalised as FlowNetPytorch's training does: RGB `/ 255` minus `FLOWNET_MEAN_RGB`. This
  module does not normalise; the caller (DFF) does. In DFF the pair is
  `concat([current, key])`, so the flow maps each pixel of the current frame to where to sample
  the key frame (the displacement that `dff_tf.warp.warp(key_features, flow)` takes).
* Output (`output_name = 'predict_flow2'`): raw flow2 `[N, ceil(H / 4), ceil(W / 4), 2]`,
  channel 0 = x (columns), 1 = y (rows), in units of input pixels divided by `DIV_FLOW`:
  `DIV_FLOW * flow2` is the displacement measured in input-image pixels, sampled on the 1/4
  grid (divide by s to use it on a map at 1/s of the input). `outputs=FlowNetS.heads` gives
  flow2..flow6 (the multiscale training outputs, finest first, as FlowNetPytorch returns them
  in train mode).
* Layer names of parameter-holding layers equal the PyTorch module names (`conv3_1`,
  `deconv4`, `predict_flow3`, `upsampled_flow4_to_3`; BN `conv3_1_bn`), so checkpoints map 1:1
  through `converters.flownet_keys` (`net.load('flownets_EPE1.951.pth')`).

The padding quirk
-----------------
PyTorch pads `(k - 1) // 2` on every side. TF's 'SAME' at stride 2 on an even input pads
`k - 2` in total and puts the odd pixel at the bottom/right (2 top / 3 bottom for conv1, k7 s2),
which shifts the sampling grid of that stride-2 output by one input pixel (on odd-sized
inputs the two happen to agree). So each conv is an explicit `zero_padding((k - 1) // 2)`
followed by a VALID conv, whatever the input size.

Light variants (`width`)
------------------------
`FlowNetS(width=w)` multiplies the output channels of every encoder conv and every `deconv*`
by `w` (`round(c * w)`, at least 1); the flow predictors and flow upsamplers keep their 2
channels, and the input channels of every layer follow from the layers it reads. Layer names,
the key map and the parameter list are those of FlowNetS; only the sizes shrink (convolution
cost by about w^2). `width=1` is FlowNetS exactly (the default). Named variants
(`FLOWNET_VARIANTS`, the `flownet` argument of `dff_tf.DFF` and `--flownet` of the DFF CLIs):
'plain' (`flownets`), 'bn' (`flownets_bn`), 'half' (width 1/2 without BN: "FlowNet Half" of
the DFF paper, Zhu et al. 2017, Table 3, about 1/4 of FlowNetS' computation) and 'quarter'
(width 1/4 without BN, about 1/16). No published weights exist for the light variants: they are
trained here (`python -m dff_tf.train_flownet --flownet half`). Parameters: half 9,693,936,
quarter 2,436,160 (FlowNetS 38,675,536).

Differences from the original, none numerical at inference: BN momentum is the builder's 0.95
(PyTorch's default is 0.1 in its convention, i.e. 0.9 here), and fresh weights are the builder's
He-normal, not PyTorch's `kaiming_normal_(a=0.1)`. Load trained weights for real use.
"""

from dataclasses import dataclass

import tensorflow as tf

from converters import flownet_keys
from icnet_tf.network import Chain, Network

# FlowNetPytorch trains on ground-truth flow divided by `div_flow` (main.py `--div-flow`,
# default 20; saved as 'div_flow' in its checkpoints; run_inference.py multiplies the output by
# it): the network predicts input pixels / 20.
DIV_FLOW = 20.0
# FlowNetPytorch main.py input transform: RGB / 255, then minus this mean (since commit 53248d1,
# "Change BGR normalization to RGB"; run_inference.py still subtracts (0.411, 0.432, 0.45)).
FLOWNET_MEAN_RGB = (0.45, 0.432, 0.411)
# Loss weights of flow2..flow6 in multiscaleloss.py (those of the FlowNet paper).
MULTISCALE_WEIGHTS = (0.005, 0.01, 0.02, 0.08, 0.32)
LEAKY_SLOPE = 0.1


@dataclass(frozen=True)
class EncoderConv:
    name: str
    k: int
    stride: int
    width: int


@dataclass(frozen=True)
class DecoderLevel:
    level: int  # the level built here: concat<level>, deconv<level>
    skip: str  # the encoder unit at this resolution
    deconv_width: int  # output channels of deconv<level>


ENCODER = (
    EncoderConv('conv1', 7, 2, 64),
    EncoderConv('conv2', 5, 2, 128),
    EncoderConv('conv3', 5, 2, 256),
    EncoderConv('conv3_1', 3, 1, 256),
    EncoderConv('conv4', 3, 2, 512),
    EncoderConv('conv4_1', 3, 1, 512),
    EncoderConv('conv5', 3, 2, 512),
    EncoderConv('conv5_1', 3, 1, 512),
    EncoderConv('conv6', 3, 2, 1024),
    EncoderConv('conv6_1', 3, 1, 1024),
)

DECODER = (
    DecoderLevel(5, 'conv5_1', 512),
    DecoderLevel(4, 'conv4_1', 256),
    DecoderLevel(3, 'conv3_1', 128),
    DecoderLevel(2, 'conv2', 64),
)

# Named FlowNetS variants: name -> FlowNetS constructor arguments.
FLOWNET_VARIANTS = {
    'plain': dict(batch_norm=False, width=1.0),
    'bn': dict(batch_norm=True, width=1.0),
    'half': dict(batch_norm=False, width=0.5),
    'quarter': dict(batch_norm=False, width=0.25),
}

FLOW_OUTPUTS = ('predict_flow2', 'predict_flow3', 'predict_flow4', 'predict_flow5', 'predict_flow6')


class FlowNetChain(Chain):
    """Chain with FlowNet's conv unit and flow predictor."""

    def unit(self, k, c_o, s=1, *, name):
        """`(k-1)//2` zero padding, VALID k x k conv, [`<name>_bn`], LeakyReLU(0.1)."""
        bn = self.net.batch_norm
        (
            self.zero_padding((k - 1) // 2, name=f'{name}/pad').conv(
                k, k, c_o, s, s, relu=False, biased=not bn, name=name
            )
        )
        if bn:
            self.batch_normalization(name=f'{name}_bn')
        return self.leaky_relu(LEAKY_SLOPE, name=f'{name}/lrelu')

    def out(self, name):
        """The name of unit `name`'s output."""
        return f'{name}/lrelu'

    def predict_flow(self, *, name):
        """3x3 conv (padding 1) to 2 channels, no bias, no activation."""
        return self.zero_padding(1, name=f'{name}/pad').conv(
            3, 3, 2, 1, 1, relu=False, biased=False, name=name
        )

    def upsample(self, c_o, *, name):
        """PyTorch ConvTranspose2d(k=4, s=2, padding=1, bias=False): h -> 2h."""
        return self.conv_transpose(4, 4, c_o, 2, 2, crop=1, relu=False, biased=False, name=name)


class FlowNetS(Network):
    """FlowNetS; `batch_norm=True` is FlowNetPytorch's `flownets_bn`, False its `flownets`;
    `width` < 1 gives the light variants (see the module docstring).

    Its part of the network contract: `preprocess` normalises a frame pair the FlowNetPytorch
    way; the main output `predict_flow2` is at 1/4 of the input; `aux_heads` are flow3..flow6
    with the multiscale loss weights (flow2's own weight is 0.005, see `loss_weights`); there
    are no class heads and no feature/classifier split.
    """

    chain_class = FlowNetChain
    output_name = 'predict_flow2'
    output_stride = 4
    input_channels = 6
    heads = FLOW_OUTPUTS
    aux_heads = dict(zip(FLOW_OUTPUTS[1:], MULTISCALE_WEIGHTS[1:]))
    class_heads = ()

    @property
    def loss_weights(self):
        return dict(zip(FLOW_OUTPUTS, MULTISCALE_WEIGHTS))

    @staticmethod
    def preprocess(rgb):
        """RGB 0..255 frames, `[..., 3]` or a pair `[..., 6]` -> `RGB / 255 - FLOWNET_MEAN_RGB`
        (per frame). The same for every width: a static method, also used on frames before
        any FlowNetS exists (`dff_tf.model.flownet_pair`)."""
        x = tf.cast(rgb, tf.float32) / 255.0
        frames = int(x.shape[-1]) // 3
        return x - tf.constant(FLOWNET_MEAN_RGB * frames, tf.float32)

    def __init__(self, batch_norm=False, *, width=1.0, seed=0, name=None):
        width = float(width)
        if not (0 < width <= 4):
            raise ValueError(f'FlowNetS width must be in (0, 4], got {width!r}')
        if name is None:
            name = 'FlowNetS_BN' if batch_norm else 'FlowNetS'
            if width != 1.0:
                name += '_w' + f'{width:g}'.replace('.', '_')
        super().__init__(seed=seed, name=name)
        self.batch_norm = bool(batch_norm)
        self.width = width

    @classmethod
    def recognise(cls, weights):
        """FlowNetS: `predict_flow2` and `conv1`. batch_norm: a `conv1_bn` layer; width: the
        output channels of the `conv1` kernel / 64."""
        if 'predict_flow2' not in weights or 'conv1' not in weights:
            return None
        kernel = weights['conv1'].get('weights')
        options = {'batch_norm': 'conv1_bn' in weights}
        if kernel is not None and len(kernel.shape) == 4:
            options['width'] = kernel.shape[-1] / 64
        return options

    def get_config(self):
        return dict(batch_norm=self.batch_norm, width=self.width)

    @property
    def variant(self):
        """The `FLOWNET_VARIANTS` name of this configuration, or None."""
        config = self.get_config()
        return next((k for k, v in FLOWNET_VARIANTS.items() if v == config), None)

    def channels(self, c):
        """Output channels of a layer that has `c` in FlowNetS: `max(1, round(c * width))`."""
        return max(1, round(c * self.width))

    def concat_channels(self, level):
        """Channels of `concat<level>` (level 2..5): skip + deconv output + 2 (flow)."""
        d = next(d for d in DECODER if d.level == level)
        skip = next(e for e in ENCODER if e.name == d.skip)
        return self.channels(skip.width) + self.channels(d.deconv_width) + 2

    def build_input_shape(self):
        return (1, 64, 64, self.input_channels)

    def setup(self, n):
        source = 'data'
        for spec in ENCODER:
            n.feed(source).unit(spec.k, self.channels(spec.width), spec.stride, name=spec.name)
            source = n.out(spec.name)

        features = n.out(ENCODER[-1].name)
        for d in DECODER:
            coarse, skip = d.level + 1, n.out(d.skip)
            n.feed(features).predict_flow(name=f'predict_flow{coarse}')
            (
                n.feed(f'predict_flow{coarse}').upsample(
                    2, name=f'upsampled_flow{coarse}_to_{d.level}'
                )
            )
            (
                n.feed(f'upsampled_flow{coarse}_to_{d.level}', skip).crop_like(
                    name=f'flow{coarse}_up'
                )
            )
            (
                n.feed(features)
                .upsample(self.channels(d.deconv_width), name=f'deconv{d.level}')
                .leaky_relu(LEAKY_SLOPE, name=f'deconv{d.level}/lrelu')
            )
            (n.feed(f'deconv{d.level}/lrelu', skip).crop_like(name=f'out_deconv{d.level}'))
            (
                n.feed(skip, f'out_deconv{d.level}', f'flow{coarse}_up').concat(
                    axis=-1, name=f'concat{d.level}'
                )
            )
            features = f'concat{d.level}'
        n.feed(features).predict_flow(name='predict_flow2')

    # ----------------------------------------------------------------------- PyTorch weights
    # The key map does not depend on the width: a light variant's state dict (of a
    # FlowNetPytorch FlowNetS with narrower layers) maps with the same names; the loader
    # checks the shapes against this network's.
    def torch_key_map(self, state_dict):
        """FlowNetPytorch state dict -> `{layer: {param: array}}` (used by `net.load(.pth)`)."""
        return flownet_keys.convert(state_dict, batch_norm=self.batch_norm)

    def torch_state_dict_shapes(self):
        """`{pytorch_key: shape}` of the FlowNetPytorch model this network corresponds to."""
        return flownet_keys.torch_shapes(self.build().param_shapes(), self.batch_norm)


def build_flownet(flownet='plain', seed=0):
    """A FlowNetS from a `FLOWNET_VARIANTS` name, a dict of FlowNetS arguments
    (`{'batch_norm': False, 'width': 0.5}`) or a FlowNetS (returned as it is)."""
    if isinstance(flownet, FlowNetS):
        return flownet
    if isinstance(flownet, str):
        if flownet not in FLOWNET_VARIANTS:
            raise ValueError(
                f'flownet must be one of {", ".join(FLOWNET_VARIANTS)}, a dict of FlowNetS '
                f'arguments or a FlowNetS, got {flownet!r}'
            )
        return FlowNetS(seed=seed, **FLOWNET_VARIANTS[flownet])
    if isinstance(flownet, dict):
        unknown = set(flownet) - {'batch_norm', 'width'}
        if unknown:
            raise ValueError(f'unknown FlowNetS arguments {sorted(unknown)} in {flownet!r}')
        return FlowNetS(seed=seed, **flownet)
    raise TypeError(f'flownet must be a name, a dict or a FlowNetS, got {type(flownet).__name__}')


def flownet_config(flownet):
    """What `build_flownet` takes to rebuild `flownet`: its variant name, else its arguments."""
    return flownet.variant or flownet.get_config()
