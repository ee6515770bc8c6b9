"""Image in, labels out: the original's preprocessing and postprocessing around a network.

Preprocessing: the network's own input convention (`net.preprocess`; ICNet's is the original
`_check_input` / evaluation path: RGB -> BGR, minus the BGR mean (103.939, 116.779, 123.68), no
scaling), then zero-pad bottom/right to multiples of 32 the original's way (`padded_size`: if
either side is not a multiple, both grow by `x // 32 + 1`). Postprocessing: the logits resized
the network's way (`net.upsample_logits`; ICNet: bilinear, align_corners=True) to the padded
size, cropped to the image, argmax. (The original's current inference path forgets the mean
subtraction because of an argument-order slip; this port does not copy that bug.)

Evaluation protocols (`Protocol`): `whole` (the above), `pad` (zero-pad to one fixed size,
the original's Cityscapes evaluation: 1024x2048 -> 1025x2049; an image larger than that size is
an error) and `resize` (the original's ADE20K evaluation: the preprocessed image resized to a
fixed size with bilinear, align_corners=True, the logits resized straight to the image size).
"""

import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from converters.errors import UserError

# Images larger than this are refused before they are decoded (a small PNG can declare a huge
# size; decoding 12000x12000 and running a network on it needs tens of GB). Cityscapes frames
# have 2.1 million pixels. The command-line tools set it from --max_image_megapixels
# (`set_max_pixels`).
MAX_PIXELS = 40_000_000


def set_max_pixels(pixels):
    """The image size limit of `read_image` and of the training checks (`data.check_labels`);
    Pillow's own decompression-bomb limit is raised with it when it is lower."""
    global MAX_PIXELS
    MAX_PIXELS = int(pixels)
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def read_image(path, max_pixels=None):
    """Any PIL-readable image as uint8 RGB [H, W, 3]: grayscale, RGBA, palette, 16-bit...

    16-bit images are scaled to 8 bits by their full range (>> 8); alpha is dropped.
    Raises `UserError` naming the file if it is missing, not a readable image, or declares more
    than `max_pixels` pixels (default `MAX_PIXELS`; checked from the header, before decoding).
    """
    if not os.path.isfile(path):
        raise UserError(f'{path}: no such image file')
    try:
        with Image.open(path) as img:
            width, height = img.size
            check_image_size(path, width, height, max_pixels)
            img.load()
            if img.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
                arr = np.asarray(img, dtype=np.uint32)
                arr = (arr >> 8 if arr.max(initial=0) > 255 else arr).clip(0, 255)
                arr = np.repeat(arr.astype(np.uint8)[..., None], 3, axis=-1)
            else:
                arr = np.asarray(img.convert('RGB'))
    except UserError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f'{path}: not a readable image ({e})') from None
    except Image.DecompressionBombError as e:
        raise UserError(f'{path}: refused by the image decoder ({e})') from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UserError(f'{path}: empty image')
    return arr


def check_image_size(path, width, height, max_pixels=None):
    """UserError naming `path` if `width x height` exceeds `max_pixels` (default `MAX_PIXELS`)."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if limit and width * height > limit:
        raise UserError(
            f'{path}: {width}x{height} is {width * height / 1e6:.3g} megapixels, more than the '
            f'limit of {limit / 1e6:g} (refused before decoding; --max_image_megapixels '
            'raises it)'
        )


def padded_size(h, w, multiple=32):
    """The original's check_input: if H or W is not a multiple of 32, BOTH become
    `(x // 32 + 1) * 32`, so a side that already is a multiple still grows by 32 (reproduced on
    purpose: the extra zeros reach the pyramid pooling and change the numbers). Python ints or
    int32 tensors (dynamic shapes)."""
    if isinstance(h, (int, np.integer)) and isinstance(w, (int, np.integer)):
        if h % multiple == 0 and w % multiple == 0:
            return int(h), int(w)
        return (h // multiple + 1) * multiple, (w // multiple + 1) * multiple
    grow = tf.logical_or(h % multiple != 0, w % multiple != 0)
    return (
        tf.where(grow, (h // multiple + 1) * multiple, h),
        tf.where(grow, (w // multiple + 1) * multiple, w),
    )


@dataclass(frozen=True)
class Protocol:
    """How images meet the network: `pad_to` (H, W), `resize_to` (H, W), or neither (whole
    image, padded to multiples of 32). `source` names where it came from, for messages."""

    pad_to: tuple | None = None
    resize_to: tuple | None = None
    source: str = 'whole image'

    @classmethod
    def of_dataset(cls, spec):
        """The dataset's evaluation protocol (`spec.eval_resize`, `spec.eval_size`)."""
        where = f'the {spec.name} evaluation protocol'
        if spec.eval_resize == 'pad':
            return cls(pad_to=tuple(spec.eval_size), source=where)
        if spec.eval_resize == 'resize':
            return cls(resize_to=tuple(spec.eval_size), source=where)
        return cls()

    def options(self):
        """Keyword arguments of `Segmenter`."""
        return {'pad_to': self.pad_to, 'resize_to': self.resize_to}

    def check(self, h, w, path):
        """UserError naming `path` if an H x W image does not fit `pad_to`."""
        if self.pad_to and (h > self.pad_to[0] or w > self.pad_to[1]):
            ph, pw = self.pad_to
            raise UserError(
                f'{path}: the image is {h}x{w} (HxW), larger than the {ph}x{pw} of {self.source}'
                ': give an --input_size at least as large, or --protocol whole'
            )

    def describe(self):
        if self.pad_to:
            return f'zero-padded to {self.pad_to[0]}x{self.pad_to[1]} ({self.source})'
        if self.resize_to:
            h, w = self.resize_to
            return f'resized to {h}x{w}, align_corners ({self.source})'
        return 'whole image, padded to multiples of 32'


class Segmenter:
    """uint8 RGB images -> trainId labels with the original's pre- and postprocessing.

    `pad_to=(H, W)`: zero-pad to this size instead of the next multiple of 32 (the
    Cityscapes evaluation protocol pads 1024x2048 to 1025x2049); a larger image is a UserError
    (`Protocol.check` names the file first). `resize_to=(H, W)`: the original's ADE20K
    evaluation: the preprocessed image is resized to H x W (bilinear, align_corners=True, TF1
    `resize_images`), and the logits are resized the network's way straight to the image size;
    when H x W itself needs padding the logits go to the padded size, are cropped to H x W and
    then resized to the image (again the network's way). `flip=True`: average the
    softmax of the image and of its mirror image (the original parsed `--flipped-eval` but never
    implemented it). `compiled=True` runs the network in a `tf.function` (one trace per padded
    size); with `reduce_retracing=True` TF traces once more with unknown height and width after
    the second size and reuses that trace for every later size (the network then takes its
    run-time-shape paths, e.g. the dynamic pyramid pooling; equal up to float rounding).
    """

    def __init__(
        self,
        net,
        *,
        pad_to=None,
        resize_to=None,
        flip=False,
        compiled=True,
        reduce_retracing=False,
    ):
        self.net = net
        self.pad_to = tuple(pad_to) if pad_to else None
        self.resize_to = tuple(resize_to) if resize_to else None
        if self.pad_to and self.resize_to:
            raise ValueError('Segmenter: pad_to and resize_to exclude each other')
        self.flip = flip
        self.min_size = net.build_input_shape()[1]
        forward = lambda x: net(x, training=False)  # noqa: E731
        self._forward = (
            tf.function(forward, reduce_retracing=reduce_retracing) if compiled else forward
        )

    def padded_size(self, h, w):
        if self.pad_to and (h > self.pad_to[0] or w > self.pad_to[1]):
            raise UserError(f'a {h}x{w} image does not fit the padding size {self.pad_to}')
        ph, pw = self.pad_to if self.pad_to else padded_size(h, w)
        return max(ph, h, self.min_size), max(pw, w, self.min_size)

    def probabilities(self, rgb):
        """Softmax [N, H, W, C] at the input size of uint8 RGB images [N, H, W, 3]."""
        rgb = np.asarray(rgb)
        probs = self._probs(rgb)
        if self.flip:
            probs = (probs + self._probs(rgb[:, :, ::-1])[:, :, ::-1]) / 2.0
        return probs

    def _probs(self, rgb):
        """Preprocess, (resize,) zero-pad, forward, logits resized the network's way to the
        padded size and cropped (or, resized without padding, straight to the image), softmax."""
        h, w = rgb.shape[1:3]
        x = self.net.preprocess(rgb)
        if self.resize_to:
            # The original's ADE20K evaluation (`_eval_preprocess`): `tf.image.resize_images(
            # align_corners=True)` of the mean-subtracted image, no padding.
            x = tf.raw_ops.ResizeBilinear(
                images=x, size=self.resize_to, align_corners=True, half_pixel_centers=False
            )
        rh, rw = self.resize_to or (h, w)
        ph, pw = self.padded_size(rh, rw)
        x = tf.pad(x, [[0, 0], [0, ph - rh], [0, pw - rw], [0, 0]])  # zeros after preprocessing
        logits = self._forward(x)
        if self.resize_to and (ph, pw) == (rh, rw):
            # its eval graph: logits resized (align_corners) straight to the label size
            return tf.nn.softmax(self.net.upsample_logits(logits, (h, w)))
        logits = self.net.upsample_logits(logits, (ph, pw))[:, :rh, :rw]
        if self.resize_to:
            logits = self.net.upsample_logits(logits, (h, w))
        return tf.nn.softmax(logits)

    def __call__(self, rgb, return_probabilities=False):
        rgb = np.asarray(rgb)
        single = rgb.ndim == 3
        batch = rgb[None] if single else rgb
        probs = self.probabilities(batch)
        labels = tf.argmax(probs, axis=-1, output_type=tf.int32).numpy()
        if single:
            labels, probs = labels[0], probs[0]
        return (labels, probs.numpy()) if return_probabilities else labels


def segment(net, rgb, *, return_probabilities=False, **kwargs):
    """Labels (int32 [N, H, W]) of uint8 RGB images [N, H, W, 3] (or one [H, W, 3])."""
    return Segmenter(net, compiled=False, **kwargs)(rgb, return_probabilities)
