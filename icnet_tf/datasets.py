"""Datasets as data: class names, colours, label encodings, evaluation protocol, folder layout.

A `DatasetSpec` describes one dataset without code paths of its own; every tool reads the same
fields. The network's label space ("train ids") is `0..num_classes-1` plus `ignore_label`.
Label files on disk come in *encodings* (the values a file stores); each encoding is a pair of
NumPy lookup tables:

* `to_train[raw]`: train id of a stored value, -1 if the value is not part of the encoding;
* `from_train[train_id]`: the stored value written for a train id, -1 if there is none.

Tables are int32, at least 256 long (so any uint8 image can index them), padded with -1.

Presets
-------
`CITYSCAPES`: 19 classes, ignore 255. Encodings `labelIds` (the official 34 ids of
`*_gtFine_labelIds.png`, mapped by the cityscapesScripts table `CITYSCAPES_LABELS` below) and
`trainIds` (`*_gtFine_labelTrainIds.png` from `csCreateTrainIdLabelImgs`, identity plus 255).
The license plate (id -1) is never drawn into label images, so the lookup covers ids 0..33.
Seven evaluation categories (flat, construction, object, nature, sky, human, vehicle) with a
train id -> category table for category IoU.

`ADE20K` (SceneParsing, ADEChallengeData2016): 150 classes, ignore 255. Encoding `ade` is the
official annotation: 0 = "other" (ignored), 1..150 -> train ids 0..149 (mmsegmentation's
`reduce_zero_label`); `trainIds` is 0..149 plus 255. The original ICNet-tensorflow's config
says `ignore_label: 0`: that is the *stored* value, which here is 255 in the network's space.
Its `evaluate.py` adds 1 to the predictions before comparing with the stored labels (stored 0
masked, `tf.metrics.mean_iou` over 151 classes), i.e. its released model predicts stored class
k at logit k-1: the same as the `ade` table. Not reproduced: its `train.py` with `--dataset
ade20k` feeds the stored values unshifted (`get_mask` keeps 1..149 at logit = stored value and
drops 150), which contradicts its own evaluation.

`others(num_classes, ignore_label=255, names_json=None)`: identity `trainIds` encoding; names
and colours from a JSON file or generated.

Evaluation protocol (`eval_size`, `eval_resize`), as the original's `utils/config.py` and
`image_reader._eval_preprocess`: Cityscapes zero-pads the image to 1025x2049 (`'pad'`);
ADE20K resizes the image to 480x480 bilinearly with align_corners=True (`'resize'`) and resizes
the logits back to the label's size.

Layout (`Layout`): where images and labels of a split live inside the official tree, used by
`scan_pairs` (and `python -m data.lists`).

This module imports NumPy and the standard library only.
"""

import fnmatch
import json
import os
from dataclasses import dataclass

import numpy as np

from converters.errors import UserError

# ----------------------------------------------------------------------------------- Cityscapes
# The official table (mcordts/cityscapesScripts, helpers/labels.py): name, labelId, trainId,
# category, colour. 255 = not evaluated. tests/test_datasets.py checks every field against the
# real `cityscapesscripts` package.
# fmt: off
CITYSCAPES_LABELS = (
    ('unlabeled',             0, 255, 'void',         (0, 0, 0)),
    ('ego vehicle',           1, 255, 'void',         (0, 0, 0)),
    ('rectification border',  2, 255, 'void',         (0, 0, 0)),
    ('out of roi',            3, 255, 'void',         (0, 0, 0)),
    ('static',                4, 255, 'void',         (0, 0, 0)),
    ('dynamic',               5, 255, 'void',         (111, 74, 0)),
    ('ground',                6, 255, 'void',         (81, 0, 81)),
    ('road',                  7,   0, 'flat',         (128, 64, 128)),
    ('sidewalk',              8,   1, 'flat',         (244, 35, 232)),
    ('parking',               9, 255, 'flat',         (250, 170, 160)),
    ('rail track',           10, 255, 'flat',         (230, 150, 140)),
    ('building',             11,   2, 'construction', (70, 70, 70)),
    ('wall',                 12,   3, 'construction', (102, 102, 156)),
    ('fence',                13,   4, 'construction', (190, 153, 153)),
    ('guard rail',           14, 255, 'construction', (180, 165, 180)),
    ('bridge',               15, 255, 'construction', (150, 100, 100)),
    ('tunnel',               16, 255, 'construction', (150, 120, 90)),
    ('pole',                 17,   5, 'object',       (153, 153, 153)),
    ('polegroup',            18, 255, 'object',       (153, 153, 153)),
    ('traffic light',        19,   6, 'object',       (250, 170, 30)),
    ('traffic sign',         20,   7, 'object',       (220, 220, 0)),
    ('vegetation',           21,   8, 'nature',       (107, 142, 35)),
    ('terrain',              22,   9, 'nature',       (152, 251, 152)),
    ('sky',                  23,  10, 'sky',          (70, 130, 180)),
    ('person',               24,  11, 'human',        (220, 20, 60)),
    ('rider',                25,  12, 'human',        (255, 0, 0)),
    ('car',                  26,  13, 'vehicle',      (0, 0, 142)),
    ('truck',                27,  14, 'vehicle',      (0, 0, 70)),
    ('bus',                  28,  15, 'vehicle',      (0, 60, 100)),
    ('caravan',              29, 255, 'vehicle',      (0, 0, 90)),
    ('trailer',              30, 255, 'vehicle',      (0, 0, 110)),
    ('train',                31,  16, 'vehicle',      (0, 80, 100)),
    ('motorcycle',           32,  17, 'vehicle',      (0, 0, 230)),
    ('bicycle',              33,  18, 'vehicle',      (119, 11, 32)),
    ('license plate',        -1, 255, 'vehicle',      (0, 0, 142)),
)
# fmt: on
# cityscapesScripts gives the license plate trainId -1; it never appears in an image and is
# not evaluated, so it is 255 (ignore) here like every other unevaluated label.

CITYSCAPES_CATEGORIES = (
    'flat',
    'construction',
    'object',
    'nature',
    'sky',
    'human',
    'vehicle',
)

# ---------------------------------------------------------------------------------------- ADE20K
# The 150 SceneParsing classes in the order of CSAILVision/sceneparsing `objectInfo150` (index
# k = stored value k+1 = train id k), named as mmsegmentation's `ADE20KDataset` does (the first
# WordNet synonym, except 'television receiver'). Colours: the standard 150-colour table
# (`color150.mat` of CSAIL, shipped by the original as `utils/color150.mat`; the same values
# as mmsegmentation's palette). Classes 6 (road) and 48 (skyscraper) share (140, 140, 140) in
# that table, so an RGB ADE20K label cannot be read back (see `labels.read_label`).
# tests/golden/make_ade20k_golden.py extracts both from the CSAIL files for the tests.
# fmt: off
ADE20K_CLASS_NAMES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass',
    'cabinet', 'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain',
    'chair', 'car', 'water', 'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field',
    'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp', 'bathtub', 'railing',
    'cushion', 'base', 'box', 'column', 'signboard', 'chest of drawers', 'counter', 'sand', 'sink',
    'skyscraper', 'fireplace', 'refrigerator', 'grandstand', 'path', 'stairs', 'runway', 'case',
    'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge', 'bookcase', 'blind',
    'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove', 'palm',
    'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus',
    'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth',
    'television receiver', 'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister',
    'escalator', 'ottoman', 'bottle', 'buffet', 'poster', 'stage', 'van', 'ship', 'fountain',
    'conveyer belt', 'canopy', 'washer', 'plaything', 'swimming pool', 'stool', 'barrel', 'basket',
    'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank',
    'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen',
    'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan',
    'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass',
    'clock', 'flag',
)
ADE20K_COLORS = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)
# fmt: on

COLOR = 'color'  # the pseudo-encoding of RGB label images (read through the palette)


# ------------------------------------------------------------------------------------- the types
def _readonly(array):
    array = np.array(array)
    array.setflags(write=False)
    return array


def _table(pairs, length=256):
    """{key: value} -> int32 lookup [max(length, max key + 1)], -1 where no key."""
    size = max(length, max((k for k in pairs), default=-1) + 1)
    table = np.full(size, -1, np.int32)
    for key, value in pairs.items():
        table[key] = value
    return _readonly(table)


@dataclass(frozen=True, eq=False)
class Encoding:
    """How one kind of label file stores classes: two lookup tables (see the module doc)."""

    name: str
    to_train: np.ndarray  # int32 [>= 256]: stored value -> train id, -1 = not in this encoding
    from_train: np.ndarray  # int32 [>= 256]: train id -> stored value, -1 = none
    description: str = ''

    @classmethod
    def from_pairs(cls, name, stored_to_train, train_to_stored, description=''):
        return cls(name, _table(stored_to_train), _table(train_to_stored), description)

    def accepts(self, values):
        """True if every stored value in `values` (ints) is part of this encoding."""
        values = np.asarray(values, np.int64)
        inside = (values >= 0) & (values < len(self.to_train))
        return bool(inside.all() and (self.to_train[values] >= 0).all())


@dataclass(frozen=True, eq=False)
class Layout:
    """Where the official tree keeps a split. Paths are relative to the dataset root.

    `roots`: candidate sub-folders of the `--data_dir` given by the user that hold the tree
    (`''` = the folder itself), tried in order. `splits[split] = (image_dir, label_dir)`.
    An image `<image_dir>/<sub>/<key><image_suffix>` pairs with
    `<label_dir>/<sub>/<key><label_suffixes[encoding]>` (`<sub>`: any sub-folders, e.g. the
    Cityscapes city). Splits in `unlabelled` are listed as images only: their labels are
    placeholders (Cityscapes test) or absent.
    """

    splits: dict
    image_suffix: str
    label_suffixes: dict
    default_encoding: str
    roots: tuple = ('',)
    unlabelled: tuple = ()


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """One dataset as data. See the module docstring for the meaning of every field."""

    name: str
    class_names: tuple
    palette: np.ndarray  # uint8 [C, 3], RGB colour of train id k
    ignore_label: int  # in the network's label space (never in 0..C-1)
    encodings: dict  # name -> Encoding, the label files this dataset reads
    official_encoding: str  # what `labelIds` outputs are written in (the dataset's own ids)
    name_rules: tuple = ()  # (glob on the file name, encoding), first match wins
    eval_size: tuple | None = None  # (H, W) of the original's evaluation protocol
    eval_resize: str | None = None  # 'pad' (zero-pad to eval_size) or 'resize' (align corners)
    categories: tuple = ()  # evaluation categories (Cityscapes)
    category_of: np.ndarray | None = None  # int32 [C]: train id -> index into `categories`
    layout: Layout | None = None
    ignore_color: tuple = (0, 0, 0)  # how ignore is drawn; also read back from RGB labels

    def __post_init__(self):
        palette = np.asarray(self.palette)
        if palette.shape != (len(self.class_names), 3):
            raise ValueError(
                f'{self.name}: palette shape {palette.shape} != ({len(self.class_names)}, 3)'
            )
        object.__setattr__(self, 'palette', _readonly(palette.astype(np.uint8)))
        if self.category_of is not None:
            object.__setattr__(self, 'category_of', _readonly(np.asarray(self.category_of)))
        if 0 <= self.ignore_label < len(self.class_names):
            raise ValueError(f'{self.name}: ignore_label {self.ignore_label} is a class id')
        if self.official_encoding not in self.encodings:
            raise ValueError(f'{self.name}: no encoding {self.official_encoding!r}')

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def label_dtype(self):
        """uint8 if every train id and ignore fit in 8 bits, else int32."""
        return np.uint8 if max(self.num_classes - 1, self.ignore_label) <= 255 else np.int32

    def encoding(self, name):
        if name not in self.encodings:
            raise UserError(
                f'--dataset {self.name}: unknown label encoding {name!r} '
                f'(choose one of {", ".join(self.encodings)})'
            )
        return self.encodings[name]

    def encoding_by_name(self, path):
        """The encoding a label file's name tells (`name_rules`), or None."""
        base = os.path.basename(path)
        for pattern, encoding in self.name_rules:
            if fnmatch.fnmatchcase(base, pattern):
                return encoding
        return None

    def encodings_for_values(self, values):
        """The encodings that accept every stored value in `values`, in declaration order."""
        return [name for name, enc in self.encodings.items() if enc.accepts(values)]

    def to_train_ids(self, raw, encoding, source='labels'):
        """Stored values (int array, any shape) -> train ids (`label_dtype`).

        Raises UserError starting with `source` (the file) if a value is not in the encoding.
        """
        table = self.encoding(encoding).to_train
        raw = np.asarray(raw)
        if raw.dtype.kind not in 'iub':
            raise UserError(f'{source}: labels must be integers, found {raw.dtype}')
        if raw.size and (raw.min() < 0 or raw.max() >= len(table)):
            bad = np.unique(raw[(raw < 0) | (raw >= len(table))])
            raise UserError(
                f'{source}: values {bad[:8].tolist()} are not {self.name} {encoding} ids '
                f'(expected {_describe(table)})'
            )
        out = table[raw]
        if raw.size and out.min() < 0:
            bad = np.unique(raw[out < 0])
            raise UserError(
                f'{source}: values {bad[:8].tolist()} are not {self.name} {encoding} ids '
                f'(expected {_describe(table)})'
            )
        return out.astype(self.label_dtype)

    def from_train_ids(self, train_ids, encoding):
        """Train ids -> the values `encoding` stores (uint8 if they fit, else uint16)."""
        table = self.encoding(encoding).from_train
        train_ids = np.asarray(train_ids)
        if train_ids.dtype.kind not in 'iub':
            raise UserError(f'train ids must be integers, found {train_ids.dtype}')
        valid = (train_ids >= 0) & (train_ids < len(table))
        out = table[np.where(valid, train_ids, 0)]
        bad = ~valid | (out < 0)
        if bad.any():
            values = np.unique(train_ids[bad])[:8].tolist()
            raise UserError(
                f'train ids {values} are neither a {self.name} class '
                f'(0..{self.num_classes - 1}) nor ignore ({self.ignore_label})'
            )
        return out.astype(np.uint8 if out.max(initial=0) <= 255 else np.uint16)

    def categories_of(self, train_ids):
        """Train ids -> category indices; ignore stays ignore (needs `category_of`)."""
        if self.category_of is None:
            raise UserError(f'--dataset {self.name} has no evaluation categories')
        train_ids = np.asarray(train_ids)
        valid = (train_ids >= 0) & (train_ids < self.num_classes)
        out = self.category_of[np.where(valid, train_ids, 0)]
        return np.where(valid, out, self.ignore_label)


def _describe(table):
    """'0..33' / '0..18, 255' for the stored values a table accepts."""
    values = np.flatnonzero(table >= 0)
    runs, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            runs.append(f'{start}..{v}' if v > start else f'{v}')
            start = None
    return ', '.join(runs)


# -------------------------------------------------------------------------------------- presets
def _cityscapes():
    train = [row for row in CITYSCAPES_LABELS if row[2] != 255]
    train.sort(key=lambda row: row[2])
    assert [row[2] for row in train] == list(range(19))
    label_ids = {row[1]: row[2] for row in CITYSCAPES_LABELS if row[1] >= 0}
    encodings = {
        'labelIds': Encoding.from_pairs(
            'labelIds',
            label_ids,
            # writing: train id -> its labelId, ignore -> 0 (unlabeled)
            {**{row[2]: row[1] for row in train}, 255: 0},
            'official gtFine ids 0..33 (*_gtFine_labelIds.png)',
        ),
        'trainIds': Encoding.from_pairs(
            'trainIds',
            {**{k: k for k in range(19)}, 255: 255},
            {**{k: k for k in range(19)}, 255: 255},
            'trainIds 0..18, 255 = ignore (*_gtFine_labelTrainIds.png)',
        ),
    }
    return DatasetSpec(
        name='cityscapes',
        class_names=tuple(row[0] for row in train),
        palette=np.array([row[4] for row in train], np.uint8),
        ignore_label=255,
        encodings=encodings,
        official_encoding='labelIds',
        name_rules=(('*rainIds.png', 'trainIds'), ('*labelIds.png', 'labelIds')),
        eval_size=(1025, 2049),
        eval_resize='pad',
        categories=CITYSCAPES_CATEGORIES,
        category_of=np.array([CITYSCAPES_CATEGORIES.index(row[3]) for row in train], np.int32),
        layout=Layout(
            splits={s: (f'leftImg8bit/{s}', f'gtFine/{s}') for s in ('train', 'val', 'test')},
            image_suffix='_leftImg8bit.png',
            label_suffixes={
                'labelIds': '_gtFine_labelIds.png',
                'trainIds': '_gtFine_labelTrainIds.png',
            },
            default_encoding='labelIds',
            # the official gtFine/test labels are placeholders: test lists hold images only
            unlabelled=('test',),
        ),
    )


def _ade20k():
    n = len(ADE20K_CLASS_NAMES)
    return DatasetSpec(
        name='ade20k',
        class_names=ADE20K_CLASS_NAMES,
        palette=np.array(ADE20K_COLORS, np.uint8),
        ignore_label=255,
        encodings={
            'ade': Encoding.from_pairs(
                'ade',
                {0: 255, **{k + 1: k for k in range(n)}},
                {255: 0, **{k: k + 1 for k in range(n)}},
                'SceneParsing annotations: 0 = other (ignored), 1..150 = classes',
            ),
            'trainIds': Encoding.from_pairs(
                'trainIds',
                {255: 255, **{k: k for k in range(n)}},
                {255: 255, **{k: k for k in range(n)}},
                'train ids 0..149, 255 = ignore',
            ),
        },
        official_encoding='ade',
        name_rules=(
            ('*rainIds.png', 'trainIds'),
            ('*labelIds.png', 'ade'),
            ('ADE_*.png', 'ade'),
        ),
        eval_size=(480, 480),
        eval_resize='resize',
        layout=Layout(
            splits={
                'train': ('images/training', 'annotations/training'),
                'val': ('images/validation', 'annotations/validation'),
            },
            image_suffix='.jpg',
            label_suffixes={'ade': '.png'},
            default_encoding='ade',
            # the original's lists are relative to ADEChallengeData2016/; its parent works too
            roots=('', 'ADEChallengeData2016'),
        ),
    )


CITYSCAPES = _cityscapes()
ADE20K = _ade20k()
DATASETS = {'cityscapes': CITYSCAPES, 'ade20k': ADE20K}


def generated_palette(num_classes):
    """A deterministic, collision-free palette: the PASCAL VOC bit-interleaving colour map of
    ids 1..C (id 0, black, is skipped so that no class looks like ignore). Bit j of the id's
    3-bit groups goes to bit 7-j of R, G, B: distinct for every id < 2**24."""
    ids = np.arange(1, num_classes + 1, dtype=np.int64)
    rgb = np.zeros((num_classes, 3), np.int64)
    for j in range(8):
        for channel in range(3):
            rgb[:, channel] |= ((ids >> (3 * j + channel)) & 1) << (7 - j)
    return rgb.astype(np.uint8)


def _read_names_json(path):
    """`{"classes": [{"name": str, "color": [r, g, b]}, ...]}` -> (names, colours)."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(f'{path}: no such class names file') from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'{path}: unreadable ({e})') from None
    except json.JSONDecodeError as e:
        raise UserError(f'{path}: not valid JSON ({e})') from None
    if not isinstance(data, dict) or not isinstance(data.get('classes'), list):
        raise UserError(f'{path}: expected an object {{"classes": [{{"name", "color"}}, ...]}}')
    if not data['classes']:
        raise UserError(f'{path}: "classes" is empty')
    names, colours = [], []
    for i, entry in enumerate(data['classes']):
        where = f'{path}: classes[{i}]'
        if not isinstance(entry, dict):
            raise UserError(f'{where}: expected an object with "name" and "color"')
        name, colour = entry.get('name'), entry.get('color')
        if not isinstance(name, str) or not name.strip():
            raise UserError(f'{where}: "name" must be a non-empty string')
        if (
            not isinstance(colour, list)
            or len(colour) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in colour)
            or not all(0 <= c <= 255 for c in colour)
        ):
            raise UserError(f'{where} ({name}): "color" must be [r, g, b] with ints in 0..255')
        if name in names:
            raise UserError(f'{where}: duplicate class name {name!r}')
        names.append(name)
        colours.append(colour)
    return tuple(names), np.array(colours, np.uint8)


def others(num_classes=None, ignore_label=255, names_json=None):
    """A dataset of your own: label files store train ids directly (0..C-1, ignore).

    With `names_json` the names and colours come from that file (its class count must match
    `num_classes` when both are given); without it names are `class_<i>` and the colours
    `generated_palette`. The original's `others` template is the same idea.
    """
    if names_json:
        names, palette = _read_names_json(names_json)
        if num_classes is not None and num_classes != len(names):
            raise UserError(
                f'{names_json}: {len(names)} classes, but --num_classes is {num_classes}'
            )
    else:
        if num_classes is None:
            raise UserError('--dataset others needs --num_classes or --class_names_json')
        if num_classes < 1:
            raise UserError(f'--num_classes must be >= 1, got {num_classes}')
        names = tuple(f'class_{i}' for i in range(num_classes))
        palette = generated_palette(num_classes)
    return custom(names, palette, ignore_label)


def custom(class_names, palette, ignore_label=255):
    """The `others` spec of given names and colours (uint8 [C, 3]): identity `trainIds`."""
    names = tuple(class_names)
    n = len(names)
    if not (0 <= ignore_label <= 65535) or ignore_label < n:
        raise UserError(
            f'--ignore_label {ignore_label} must be outside the class ids 0..{n - 1} '
            '(and <= 65535): use a value >= num_classes such as 255'
        )
    identity = {**{k: k for k in range(n)}, ignore_label: ignore_label}
    return DatasetSpec(
        name='others',
        class_names=names,
        palette=np.asarray(palette, np.uint8),
        ignore_label=ignore_label,
        encodings={
            'trainIds': Encoding.from_pairs(
                'trainIds', identity, identity, f'train ids 0..{n - 1}, {ignore_label} = ignore'
            )
        },
        official_encoding='trainIds',
        name_rules=(('*', 'trainIds'),),
    )


def to_record(spec):
    """What a model file keeps of its dataset (SavedModel metadata, dff_config.json): the
    preset's name, or for `others` its names, colours and ignore label (JSON types)."""
    if spec.name in DATASETS:
        return {'name': spec.name}
    return {
        'name': spec.name,
        'class_names': list(spec.class_names),
        'palette': spec.palette.tolist(),
        'ignore_label': int(spec.ignore_label),
    }


def from_record(record, source='model'):
    """The spec `to_record` describes; UserError starting with `source` if it is not one."""
    try:
        if record['name'] in DATASETS:
            return DATASETS[record['name']]
        if record['name'] == 'others':
            return custom(record['class_names'], record['palette'], int(record['ignore_label']))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f'{source}: unreadable dataset record {record!r} ({e})') from None
    raise UserError(f'{source}: unknown dataset {record.get("name")!r}')


def get_dataset(name, num_classes=None, ignore_label=None, names_json=None):
    """The spec for `--dataset NAME`; explicit flags (not None) must agree with a preset.

    `others` takes `num_classes`, `ignore_label` (default 255) and `names_json`. For a preset,
    a different `num_classes` or `ignore_label` is a one-line UserError, and `names_json` is
    refused (the preset has its names).
    """
    if name == 'others':
        return others(num_classes, 255 if ignore_label is None else ignore_label, names_json)
    if name not in DATASETS:
        raise UserError(
            f'--dataset {name!r} is unknown (choose one of {", ".join([*DATASETS, "others"])})'
        )
    spec = DATASETS[name]
    if num_classes is not None and num_classes != spec.num_classes:
        raise UserError(
            f'--dataset {name} has {spec.num_classes} classes but --num_classes is '
            f'{num_classes} (use --dataset others for a different class set)'
        )
    if ignore_label is not None and ignore_label != spec.ignore_label:
        hint = ''
        if name == 'ade20k' and ignore_label == 0:
            hint = ' (0 is the stored "other" value, which is mapped to 255 when read)'
        raise UserError(
            f"--dataset {name} ignores label {spec.ignore_label} in the network's label space "
            f'but --ignore_label is {ignore_label}{hint}'
        )
    if names_json:
        raise UserError(f'{names_json}: --class_names_json applies to --dataset others only')
    return spec


# ------------------------------------------------------------------------------ the official tree
def _walk(top, suffix):
    """{key: relative path} for files under `top` (recursively) whose name ends with suffix;
    key = relative path without the suffix, with '/' separators."""
    found = {}
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        rel = os.path.relpath(folder, top)
        for name in files:
            if name.endswith(suffix) and len(name) > len(suffix):
                path = name if rel == '.' else f'{rel}/{name}'.replace(os.sep, '/')
                found[path[: -len(suffix)]] = path
    return found


def scan_pairs(spec, root, split, encoding=None):
    """Find (image, label) pairs of `split` in the official tree under `root`.

    `encoding`: the label files to pair (None: the layout's default, or the one encoding the
    tree has when it has no default-encoded files).
    Returns `(pairs, problems)`: `pairs` is a sorted list of `(image_rel, label_rel)` with
    paths relative to `root` ('/' separators; `label_rel` is None for unlabelled splits such as
    Cityscapes test), `problems` one line per unmatched file (an image without its label or a
    label without its image). Raises UserError for a missing tree, split or encoding.
    """
    layout = spec.layout
    if layout is None:
        raise UserError(f'--dataset {spec.name} has no official folder layout: write a list file')
    if split not in layout.splits:
        raise UserError(
            f'--dataset {spec.name} has no split {split!r} (choose one of '
            f'{", ".join(layout.splits)})'
        )
    chosen, encoding = encoding, encoding or layout.default_encoding
    if encoding not in layout.label_suffixes:
        raise UserError(
            f'--dataset {spec.name}: the official tree has no {encoding!r} label files '
            f'(choose one of {", ".join(layout.label_suffixes)})'
        )
    if not os.path.isdir(root):
        raise UserError(f'{root}: no such directory')
    image_dir, label_dir = layout.splits[split]
    base = next((b for b in layout.roots if os.path.isdir(os.path.join(root, b, image_dir))), None)
    if base is None:
        expected = ' or '.join(os.path.join(root, b, image_dir) for b in layout.roots)
        raise UserError(f'{root}: not a {spec.name} tree (no folder {expected})')
    prefix = f'{base}/' if base else ''
    images = _walk(os.path.join(root, base, image_dir), layout.image_suffix)
    if not images:
        raise UserError(
            f'{os.path.join(root, base, image_dir)}: no *{layout.image_suffix} images found'
        )
    image_rel = {k: f'{prefix}{image_dir}/{p}' for k, p in images.items()}
    if split in layout.unlabelled:
        return [(image_rel[k], None) for k in sorted(images)], []
    suffix = layout.label_suffixes[encoding]
    label_top = os.path.join(root, base, label_dir)
    labels = _walk(label_top, suffix) if os.path.isdir(label_top) else {}
    if not labels:
        found = [
            e
            for e, s in layout.label_suffixes.items()
            if s != suffix and os.path.isdir(label_top) and _walk(label_top, s)
        ]
        if chosen is None and len(found) == 1:  # the one encoding the tree has: read it
            return scan_pairs(spec, root, split, found[0])
        hint = (
            f'; found {", ".join(f"*{layout.label_suffixes[e]}" for e in found)} instead '
            f'(--label_encoding {" or ".join(found)})'
            if found
            else ''
        )
        raise UserError(f'{label_top}: no *{suffix} label files{hint}')
    label_rel = {k: f'{prefix}{label_dir}/{p}' for k, p in labels.items()}
    pairs, problems = [], []
    for key in sorted(images):
        if key in labels:
            pairs.append((image_rel[key], label_rel[key]))
        else:
            problems.append(f'{image_rel[key]}: no label {prefix}{label_dir}/{key}{suffix}')
    for key in sorted(set(labels) - set(images)):
        problems.append(
            f'{label_rel[key]}: no image {prefix}{image_dir}/{key}{layout.image_suffix}'
        )
    return pairs, problems


def read_tree(spec, root, split, encoding=None, allow_missing=False):
    """`scan_pairs` for the training/evaluation CLIs (`--data_dir ROOT --split val`, no list):
    absolute `(image, label)` pairs, like `data.read_list`. Unmatched files are a UserError
    (the first one named, with the count) unless `allow_missing`."""
    pairs, problems = scan_pairs(spec, root, split, encoding)
    if problems and not allow_missing:
        more = f' (and {len(problems) - 1} more unmatched files)' if len(problems) > 1 else ''
        raise UserError(f'{os.path.join(root, problems[0])}{more}')
    if not pairs:
        raise UserError(f'{root}: no {spec.name} {split} pairs found')
    return [
        (os.path.join(root, image), os.path.join(root, label) if label else None)
        for image, label in pairs
    ]
