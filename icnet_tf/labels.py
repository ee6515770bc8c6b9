"""Label images read by meaning, and prediction PNGs written in a dataset's formats.

Reading (`read_label`) returns train ids (`spec.label_dtype`, [H, W]) for:

* single-channel 8-bit (`L`) and palette-mode (`P`) PNGs: the stored values, for `P` the
  palette *indices* (the image is never converted to RGB, whatever its colour table says);
* 16-bit PNGs (`I;16*`) by value, and 32-bit (`I`) ones whose values lie in 0..65535;
* RGB (or fully opaque RGBA) images through the colour map of the dataset: `spec.palette[k]`
  is train id k and `spec.ignore_color` (black) is ignore. A colour outside the map, or one the
  palette gives to two classes (ADE20K's (140, 140, 140)), is a one-line error naming the file.

Stored values become train ids through the label encoding (`datasets.Encoding`): given, or
found by `detect_encoding` from the file names (`spec.name_rules`, e.g. `*_gtFine_labelIds.png`)
and, where the name does not tell, from the values (an encoding is possible if it accepts every
value; Cityscapes: a value in 19..33 means labelIds, a 255 means trainIds, values in 0..18 alone
fit both and are refused as ambiguous). Any other image mode is refused. Images larger than
`MAX_LABEL_PIXELS` are refused before they are decoded.

Writing (`write_label_png`): `<base>_<fmt>.png` for fmt in `FORMATS`:
`trainIds` (the network's ids, uint8 or 16-bit), `labelIds` (the dataset's official ids:
Cityscapes labelIds, ADE20K 1..150 with 0 for ignore), `color` (palette, ignore black) and
`overlay` (colours blended over the RGB image: `round(alpha * colour + (1 - alpha) * image)`).
"""

import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from converters.errors import UserError
from icnet_tf.datasets import COLOR
from icnet_tf.palette import colorize, overlay

MAX_LABEL_PIXELS = 1 << 26  # 67 M pixels: 32 Cityscapes frames; refuses hostile sizes
FORMATS = ('trainIds', 'labelIds', 'color', 'overlay')
INDEX_MODES = ('L', 'P', 'I;16', 'I;16L', 'I;16B', 'I')
COLOR_MODES = ('RGB', 'RGBA')

# Files written by `write_label_png` in this process (absolute paths): those may be replaced.
_WRITTEN = set()


def _open(path, max_pixels):
    """Open and fully decode one image (size checked first). The caller closes it."""
    if not os.path.isfile(path):
        raise UserError(f'{path}: no such label file')
    try:
        with warnings.catch_warnings():  # sizes are checked here, below PIL's warning limit
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            img = Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f'{path}: not a readable image ({e})') from None
    except Image.DecompressionBombError as e:
        raise UserError(f'{path}: not a readable image ({e})') from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise UserError(f'{path}: {width}x{height} is larger than {max_pixels} pixels')
    try:
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        img.close()
        raise UserError(f'{path}: not a readable image ({e})') from None
    if img.mode not in INDEX_MODES + COLOR_MODES:
        img.close()
        raise UserError(
            f'{path}: label image mode {img.mode} is not supported (expected single-channel '
            '8/16-bit, palette-mode or RGB)'
        )
    return img


def _stored_values(img, path):
    """The values of a single-channel or palette image (indices for `P`), uint8/uint16."""
    if img.mode in ('L', 'P'):
        return np.asarray(img)  # 'P': the indices; the colour table is not looked at
    values = np.asarray(img)
    if img.mode == 'I':
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise UserError(
                f'{path}: 32-bit label values {values.min()}..{values.max()} are outside 0..65535'
            )
    return values.astype(np.uint16)


def _rgb(img, path):
    if img.mode == 'RGBA':
        alpha = np.asarray(img.getchannel('A'))
        if alpha.size and alpha.min() < 255:
            raise UserError(f'{path}: an RGBA label with transparent pixels has no class there')
        img = img.convert('RGB')
    return np.asarray(img)


def colors_to_train_ids(rgb, spec, source='labels'):
    """uint8 RGB [H, W, 3] -> train ids through the colour map (`spec.palette`, ignore black)."""
    lut = {}
    for k, colour in enumerate(spec.palette.tolist()):
        lut.setdefault(tuple(colour), []).append(k)
    lut.setdefault(tuple(spec.ignore_color), []).append(spec.ignore_label)
    rgb = np.asarray(rgb, np.uint8)
    keys = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    uniq, inverse = np.unique(keys, return_inverse=True)
    colours = [((k >> 16) & 255, (k >> 8) & 255, k & 255) for k in uniq.tolist()]
    unknown = [c for c in colours if c not in lut]
    if unknown:
        grey = (
            ' (equal R, G, B: save labels single-channel)'
            if all(r == g == b for r, g, b in unknown)
            else ''
        )
        shown = ', '.join(str(c) for c in unknown[:4])
        raise UserError(
            f'{source}: colours {shown} are not in the {spec.name} colour map '
            f'({len(unknown)} unknown){grey}'
        )
    shared = [c for c in colours if len(lut[c]) > 1]
    if shared:
        owners = ' and '.join(
            f'{k} ({spec.class_names[k]})' if k < spec.num_classes else f'{k} (ignore)'
            for k in lut[shared[0]]
        )
        raise UserError(
            f'{source}: colour {shared[0]} belongs to {owners} in the {spec.name} colour map, '
            'so RGB labels are ambiguous: use single-channel labels'
        )
    ids = np.array([lut[c][0] for c in colours], np.int64)
    return ids[inverse].reshape(keys.shape).astype(spec.label_dtype)


def _ambiguous(path, values, candidates, spec):
    rules = [f'{p} ({e})' for p, e in spec.name_rules if e in candidates and p != '*']
    hint = f'; name the files {" or ".join(rules)}' if rules else ''
    return UserError(
        f'{path}: cannot tell the label encoding: values {values[:8].tolist()} fit '
        f'{" and ".join(candidates)}{hint} or pass --label_encoding'
    )


def _fitting(path, values, spec):
    """The encodings that accept every value of one file; UserError if none does."""
    candidates = spec.encodings_for_values(values)
    if not candidates:
        expected = '; '.join(
            f'{name}: {enc.description}' for name, enc in spec.encodings.items() if enc.description
        )
        raise UserError(
            f'{path}: values {values[:8].tolist()} fit no {spec.name} label encoding ({expected})'
        )
    return candidates


def _candidates(path, spec, max_pixels):
    """(encodings possible for one file, its distinct values); RGB files -> [COLOR]."""
    with _open(path, max_pixels) as img:
        if img.mode in COLOR_MODES:
            return [COLOR], None
        values = np.unique(_stored_values(img, path))
    return _fitting(path, values, spec), values


def detect_encoding(paths, spec, max_pixels=MAX_LABEL_PIXELS):
    """The one encoding of a list of label files (a name in `spec.encodings`, or `COLOR`).

    File names decide first (`spec.name_rules`); files whose names do not tell are read and
    judged by their values. Different encodings in one list are refused with one line naming
    two example files; values that fit several encodings everywhere are refused as ambiguous.
    """
    if not paths:
        raise UserError('no label files to look at')
    decided = {}  # encoding -> first file that decided it
    judged = []  # (path, candidates, values) for files whose names do not tell
    for path in paths:
        encoding = spec.encoding_by_name(path)
        if encoding is not None:
            decided.setdefault(encoding, path)
        else:
            judged.append((path, *_candidates(path, spec, max_pixels)))
    for path, candidates, _ in judged:
        if len(candidates) == 1:
            decided.setdefault(candidates[0], path)
    if len(decided) > 1:
        (ea, a), (eb, b) = list(decided.items())[:2]
        raise UserError(f'{b}: holds {eb} labels but {a} holds {ea}: use one encoding per list')
    if decided:
        ((encoding, example),) = decided.items()
        for path, candidates, _ in judged:
            if encoding not in candidates:
                raise UserError(
                    f'{path}: holds {" or ".join(candidates)} labels but {example} holds '
                    f'{encoding}: use one encoding per list'
                )
        return encoding
    common = [e for e in judged[0][1] if all(e in c for _, c, _ in judged)]
    if len(common) == 1:
        return common[0]
    path, candidates, values = judged[0]
    raise _ambiguous(path, values, common or candidates, spec)


def read_label(path, spec, encoding=None, max_pixels=MAX_LABEL_PIXELS):
    """One label file -> train ids [H, W] (`spec.label_dtype`). See the module docstring.

    `encoding`: a name in `spec.encodings`, `COLOR` (the list is RGB), or None to decide from
    this file alone (`detect_encoding([path], spec)`; call that once per list instead).
    """
    with _open(path, max_pixels) as img:
        if img.mode in COLOR_MODES:
            if encoding not in (None, COLOR):
                raise UserError(
                    f'{path}: an RGB image, but this list holds single-channel {encoding} labels'
                )
            return colors_to_train_ids(_rgb(img, path), spec, path)
        if encoding == COLOR:
            raise UserError(f'{path}: a single-channel image, but this list holds RGB labels')
        raw = _stored_values(img, path)
    if encoding is None:
        encoding = spec.encoding_by_name(path)
        if encoding is None:
            values = np.unique(raw)
            candidates = _fitting(path, values, spec)
            if len(candidates) > 1:
                raise _ambiguous(path, values, candidates, spec)
            encoding = candidates[0]
    return spec.to_train_ids(raw, encoding, path)


def write_label_png(base, train_ids, spec, fmt, *, rgb=None, overwrite=False, written=None):
    """Write train ids [H, W] as `<base>_<fmt>.png` (fmt in `FORMATS`); returns the path.

    `rgb` (uint8 [H, W, 3]) is needed for `overlay` (alpha 0.5). The file goes to a temporary
    name in the same folder first and is renamed into place. An existing file is replaced only
    if this process wrote it (`written`, a set of absolute paths, default: module-wide) or
    `overwrite=True`; otherwise UserError.
    """
    if fmt not in FORMATS:
        raise UserError(f'unknown output format {fmt!r} (choose one of {", ".join(FORMATS)})')
    path = f'{base}_{fmt}.png'
    written = _WRITTEN if written is None else written
    if os.path.lexists(path) and not overwrite and os.path.abspath(path) not in written:
        raise UserError(f'{path}: exists and was not written by this run (pass --overwrite)')
    train_ids = np.asarray(train_ids)
    if train_ids.ndim != 2:
        raise UserError(f'{path}: train ids must be [H, W], got shape {train_ids.shape}')
    if fmt == 'trainIds':
        array = spec.from_train_ids(train_ids, 'trainIds')
    elif fmt == 'labelIds':
        array = spec.from_train_ids(train_ids, spec.official_encoding)
    else:
        spec.from_train_ids(train_ids, spec.official_encoding)  # the same value check
        if fmt == 'color':
            array = colorize(train_ids, spec.palette, spec.num_classes)
        else:
            if rgb is None or np.shape(rgb) != (*train_ids.shape, 3):
                raise UserError(
                    f'{path}: overlay needs the RGB image of shape {(*train_ids.shape, 3)}, '
                    f'got {None if rgb is None else np.shape(rgb)}'
                )
            array = overlay(rgb, train_ids, spec.palette, num_classes=spec.num_classes)
    folder = os.path.dirname(path) or '.'
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    try:
        Image.fromarray(array).save(tmp, format='PNG')
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    written.add(os.path.abspath(path))
    return path


def output_stems(paths):
    """`{path: stem}` for output names `<stem>_<fmt>.png`: the file name without its extension,
    with the extension kept where two inputs share a stem (`a.png`, `a.jpg` -> `a.png`,
    `a.jpg`) and `_2`, `_3`... where two inputs share a file name (a glob over folders)."""
    stems = {p: os.path.splitext(os.path.basename(p))[0] for p in paths}
    counts = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    out, used = {}, set()
    for p, stem in stems.items():
        name = stem if counts[stem] == 1 else os.path.basename(p)
        base, k = name, 1
        while name in used:
            k += 1
            name = f'{base}_{k}'
        used.add(name)
        out[p] = name
    return out


# What the tools wrote before `<stem>_<fmt>.png` (inference's `_labelTrainIds.png`), too.
_OWN_SUFFIXES = tuple(f'_{fmt}.png' for fmt in FORMATS) + ('_labelTrainIds.png',)


def is_own_output(path):
    """True for a file name the tools write (`<stem>_<fmt>.png`, fmt in `FORMATS`, and the old
    `_labelTrainIds.png`): a folder scan for input images skips those."""
    return os.path.basename(path).endswith(_OWN_SUFFIXES)


def check_outputs(save_dir, stems, formats, overwrite=False):
    """Before a run: UserError naming the first `<save_dir>/<stem>_<fmt>.png` that exists
    (with the count) unless `overwrite`, so a run never stops half-way on a file of an
    earlier run. Also refuses an unknown format."""
    for fmt in formats:
        if fmt not in FORMATS:
            raise UserError(
                f'--output_format: unknown format {fmt!r} (choose from {", ".join(FORMATS)})'
            )
    if overwrite:
        return
    existing = [
        os.path.join(save_dir, f'{stem}_{fmt}.png')
        for stem in stems
        for fmt in formats
        if os.path.lexists(os.path.join(save_dir, f'{stem}_{fmt}.png'))
    ]
    if existing:
        more = f' (and {len(existing) - 1} more outputs)' if len(existing) > 1 else ''
        raise UserError(
            f'{existing[0]}: exists{more}: pass --overwrite or choose another --save_dir'
        )
