"""Image in, labels out: the original's preprocessing and postprocessing around a network.

Preprocessing (ICNet-tensorflow `_check_input` / evaluation path): RGB -> BGR, subtract the BGR
mean (103.939, 116.779, 123.68), no scaling; zero-pad bottom/right so that H and W are
multiples of 32 (a size already divisible is left alone, `(h // 32 + 1) * 32` otherwise).
Postprocessing: `conv6_cls` logits bilinear-resized with align_corners=True to the padded
size, cropped to the image, argmax. (The original's current inference path forgets the mean
subtraction because of an argument-order slip; this port does not copy that bug.)
"""
import os

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from icnet_tf.cli import UserError
from icnet_tf.network import resize_bilinear_align_corners

IMG_MEAN_BGR = (103.939, 116.779, 123.68)


def read_image(path):
    """Any PIL-readable image as uint8 RGB [H, W, 3]: grayscale, RGBA, palette, 16-bit...

    16-bit images are scaled to 8 bits by their full range (>> 8); alpha is dropped.
    Raises `UserError` naming the file if it is missing or not a readable image.
    """
    if not os.path.isfile(path):
        raise UserError(f'{path}: no such image file')
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
                arr = np.asarray(img, dtype=np.uint32)
                arr = (arr >> 8 if arr.max(initial=0) > 255 else arr).clip(0, 255)
                arr = np.repeat(arr.astype(np.uint8)[..., None], 3, axis=-1)
            else:
                arr = np.asarray(img.convert('RGB'))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f'{path}: not a readable image ({e})') from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UserError(f'{path}: empty image')
    return arr


def to_network_input(rgb):
    """uint8/float RGB [..., 3] -> float32 BGR with the mean subtracted (what the graph eats)."""
    rgb = tf.cast(rgb, tf.float32)
    return tf.reverse(rgb, axis=[-1]) - tf.constant(IMG_MEAN_BGR, tf.float32)


def padded_size(h, w, multiple=32):
    """The original's check_input: sizes not divisible by `multiple` grow to the next multiple."""
    return tuple(s if s % multiple == 0 else (s // multiple + 1) * multiple for s in (h, w))


def segment(net, rgb, *, return_probabilities=False, min_size=None):
    """Labels (int32 [N, H, W]) of uint8 RGB images [N, H, W, 3] (or one [H, W, 3]).

    Images smaller than the network's minimum are zero-padded further (bottom/right) so that the
    pyramid pooling has a map to pool; the result is always cropped back to the input size.
    """
    rgb = np.asarray(rgb)
    single = rgb.ndim == 3
    batch = rgb[None] if single else rgb
    h, w = batch.shape[1:3]
    ph, pw = padded_size(h, w)
    if min_size is None:
        min_size = net.build_input_shape()[1]
    ph, pw = max(ph, min_size), max(pw, min_size)
    x = to_network_input(batch)
    x = tf.pad(x, [[0, 0], [0, ph - h], [0, pw - w], [0, 0]])   # zeros after mean subtraction
    logits = net(x, training=False)
    logits = resize_bilinear_align_corners(logits, (ph, pw))[:, :h, :w, :]
    labels = tf.argmax(logits, axis=-1, output_type=tf.int32).numpy()
    labels = labels[0] if single else labels
    if not return_probabilities:
        return labels
    probs = tf.nn.softmax(logits).numpy()
    return labels, (probs[0] if single else probs)
