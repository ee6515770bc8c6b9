"""Colour tables for trainId label maps.

`CITYSCAPES` is the official palette (mcordts/cityscapesScripts `helpers/labels.py`, trainIds
0..18) and `ADE20K` the standard 150-colour table, both taken from `icnet_tf.datasets`.
`ORIGINAL` is the table of ICNet-tensorflow's `decode_labels`, kept as an option: several of
its entries are off by one from the official colours (e.g. building 69,69,69 vs 70,70,70).
Labels outside the table (255 = ignore, or ids >= len(palette)) are drawn black.
"""

import numpy as np

from icnet_tf import datasets as _datasets

# One source: the Cityscapes names and colours live in `icnet_tf.datasets.CITYSCAPES`.
CLASS_NAMES = _datasets.CITYSCAPES.class_names
CITYSCAPES = _datasets.CITYSCAPES.palette
ADE20K = _datasets.ADE20K.palette

# Reproduced on purpose from the original's utils/visualize.py (off-by-one entries included).
ORIGINAL = np.array(
    [
        (128, 64, 128),
        (244, 35, 231),
        (69, 69, 69),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 29),
        (219, 219, 0),
        (106, 142, 35),
        (152, 250, 152),
        (69, 129, 180),
        (219, 19, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 69),
        (0, 60, 100),
        (0, 79, 100),
        (0, 0, 230),
        (119, 10, 32),
    ],
    np.uint8,
)

PALETTES = {'cityscapes': CITYSCAPES, 'original': ORIGINAL, 'ade20k': ADE20K}


def extended(palette, num_classes):
    """The palette with deterministic extra colours for class ids beyond its length."""
    if num_classes <= len(palette):
        return palette
    rng = np.random.default_rng(12345)
    extra = rng.integers(0, 256, (num_classes - len(palette), 3), dtype=np.uint8)
    return np.concatenate([palette, extra])


def colorize(labels, palette='cityscapes', num_classes=None):
    """int label map [..., H, W] -> uint8 RGB [..., H, W, 3]; unknown ids are black."""
    table = PALETTES[palette] if isinstance(palette, str) else np.asarray(palette, np.uint8)
    table = extended(table, num_classes or len(table))
    labels = np.asarray(labels)
    valid = (labels >= 0) & (labels < len(table))
    out = table[np.where(valid, labels, 0)]
    out[~valid] = 0
    return out


def overlay(rgb, labels, palette='cityscapes', alpha=0.5, num_classes=None):
    """Blend the colourised labels over the photo (uint8 RGB, same H, W)."""
    colours = colorize(labels, palette, num_classes).astype(np.float32)
    return (alpha * colours + (1 - alpha) * np.asarray(rgb, np.float32)).round().astype(np.uint8)
