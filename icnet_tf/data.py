"""List files and the training input pipeline (the original `image_reader.py`, in tf.data).

List file (Cityscapes / ICNet-tensorflow format): one sample per line,
`<image_rel> <label_rel>`, separated by whitespace, paths relative to `--data_dir`.

Labels are read by meaning (`icnet_tf.labels`): the dataset (`icnet_tf.datasets.DatasetSpec`)
and the list's one label encoding (Cityscapes `*_gtFine_labelIds.png` through the official
labelId -> trainId table, trainIds, ADE20K annotations with 0 -> ignore and 1..150 -> 0..149,
RGB colours through the palette) turn stored values into train ids. `check_labels`, the
validation pass run before training and evaluation, decodes every label once, refuses a mix of
encodings, values outside the encoding and an image/label size mismatch, and chooses how the
pipeline decodes (`LabelFormat`): 8-bit and 16-bit greyscale PNGs with `tf.io.decode_png` and
the encoding's lookup table (by value), anything else (palette-mode PNGs, whose indices
`decode_png` would turn into luminance; RGB labels; other file types) with PIL
(`labels.read_label`, palette indices) inside `tf.numpy_function`.

Training sample, as the original (`--random_scale`, `--random_mirror` optional):
decode (any PNG/JPEG, any mode -> 3 channels) -> the network's `preprocess` (ICNet: RGB->BGR,
float32, minus the BGR mean) ->
random scale in [0.5, 2.0] (image bilinear, label nearest; the TF1 resize defaults) ->
random left-right mirror (one bit for both) -> pad bottom/right up to the crop (image with 0,
label with ignore_label) -> random crop of `input_size` at the same offset for both.
All randomness is stateless and derived from `--seed`, so a run is reproducible.
With several workers (`shard_samples`) each decodes only its share of every global batch, and
the union of the replicas' batches is the batch one process would train on.
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from converters.errors import UserError
from icnet_tf import labels as label_files
from icnet_tf.datasets import COLOR
from icnet_tf.predict import check_image_size

SCALE_RANGE = (0.5, 2.0)  # the original's --random-scale range


def read_list(list_path, data_dir=''):
    """Parse a list file into [(image_path, label_path)] with paths joined to `data_dir`.

    Raises UserError naming the list file and line for a bad line or a missing file.
    """
    if not os.path.isfile(list_path):
        raise UserError(f'{list_path}: no such list file')
    pairs, missing = [], []
    with open(list_path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise UserError(
                    f'{list_path}:{number}: expected 2 fields "<image> <label>", '
                    f'found {len(fields)}: {line.strip()!r}'
                )
            paths = tuple(os.path.join(data_dir, p) for p in fields)
            missing += [
                f'{list_path}:{number}: no such file {p}' for p in paths if not os.path.isfile(p)
            ]
            pairs.append(paths)
    if missing:
        more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
        raise UserError(missing[0] + more)
    if not pairs:
        raise UserError(f'{list_path}: the list is empty')
    return pairs


def natural_key(path):
    """Sort key of file names in natural order (frame_2 before frame_10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', os.path.basename(path))]


def list_lines(list_path):
    """The 1-based line numbers of the samples of a list file (its non-blank lines), so that
    the i-th pair of `read_list` can be named `<list>:<line>`."""
    with open(list_path, encoding='utf-8') as f:
        return [number for number, line in enumerate(f, 1) if line.split()]


def sample_place(list_path, lines, index):
    """`<list>:<line>` of sample `index` (`lines` from `list_lines`), or '' without a list."""
    if not list_path:
        return ''
    return f'{list_path}:{lines[index] if lines and index < len(lines) else index + 1}'


@dataclass(frozen=True, eq=False)
class LabelFormat:
    """How the labels of one list are read: dataset, encoding, and the pipeline's decoder
    ('png8' / 'png16': `tf.io.decode_png` + lookup table; 'pil': `labels.read_label`)."""

    spec: object  # icnet_tf.datasets.DatasetSpec
    encoding: str  # a name in spec.encodings, or datasets.COLOR
    decoder: str = 'pil'

    def read(self, path):
        """One label file -> train ids [H, W] (NumPy)."""
        return label_files.read_label(path, self.spec, self.encoding)

    def decode(self, path):
        """A label path (string tensor) -> int32 train ids [H, W, 1] inside tf.data."""
        if self.decoder in ('png8', 'png16'):
            raw = tf.io.decode_png(
                tf.io.read_file(path),
                channels=1,
                dtype=tf.uint8 if self.decoder == 'png8' else tf.uint16,
            )
            table = tf.constant(self.spec.encoding(self.encoding).to_train)
            label = tf.gather(table, tf.cast(raw, tf.int32))  # values checked by check_labels
        else:

            def read(p):
                return self.read(p.decode()).astype(np.int32)

            label = tf.numpy_function(read, [path], tf.int32, stateful=False)[..., None]
        label.set_shape([None, None, 1])
        return label


def _png_kind(path):
    """'png8' / 'png16' for greyscale PNGs that `tf.io.decode_png` reads by value, else 'pil'."""
    with Image.open(path) as img:
        if img.format != 'PNG':
            return 'pil'
        if img.mode == 'L':
            return 'png8'
        return 'png16' if img.mode.startswith('I;16') else 'pil'


def check_labels(pairs, spec, list_path=None, encoding=None, protocol=None, workers=8):
    """The validation pass: decode every label once, before any training or evaluation.

    The list's encoding is `encoding` or `labels.detect_encoding` over its label files (a mix
    is refused); every label must hold values of that encoding and have its image's size, and
    with `protocol` (`predict.Protocol`) every image must fit its padding size. Raises one
    UserError naming the file (`<list>:<line>: ...` for a list file). Returns the `LabelFormat`
    the pipeline reads the labels with.
    """
    encoding = encoding or label_files.detect_encoding([p[1] for p in pairs], spec)
    if encoding != COLOR:
        spec.encoding(encoding)  # a one-line error for an unknown --label_encoding

    def problem(index):
        image_path, label_path = pairs[index]
        try:
            label = label_files.read_label(label_path, spec, encoding)
            kind = _png_kind(label_path)
        except UserError as e:
            return index, str(e), None
        try:
            with Image.open(image_path) as img:
                width, height = img.size
            check_image_size(image_path, width, height)  # what the pipeline may decode
        except UserError as e:
            return index, str(e), None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            return index, f'{image_path}: not a readable image ({e})', None
        if label.shape != (height, width):
            return (
                index,
                (
                    f'{image_path}: the image is {height}x{width} (HxW) but its label '
                    f'{label_path} is {label.shape[0]}x{label.shape[1]}'
                ),
                None,
            )
        if protocol is not None:
            try:
                protocol.check(height, width, image_path)
            except UserError as e:
                return index, str(e), None
        return index, None, kind

    kinds = set()
    with ThreadPoolExecutor(workers) as pool:
        for index, message, kind in pool.map(problem, range(len(pairs))):
            if message:
                lines = list_lines(list_path) if list_path and os.path.isfile(list_path) else None
                raise UserError(
                    f'{sample_place(list_path, lines, index)}: {message}' if list_path else message
                )
            kinds.add(kind)
    decoder = kinds.pop() if len(kinds) == 1 and encoding != COLOR else 'pil'
    return LabelFormat(spec, encoding, decoder)


def decode_image(data):
    """Encoded PNG/JPEG/BMP/GIF bytes -> uint8 [H, W, 3] (grayscale, RGBA, 16-bit accepted)."""
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_label(data):
    """Stored values of a greyscale PNG, as they are (no `LabelFormat`: train ids on disk)."""
    label = tf.io.decode_png(data, channels=1)
    label.set_shape([None, None, 1])
    return label


# ------------------------------------------------------------------ files tf.data cannot read
@dataclass(frozen=True)
class BadFile:
    """A file of a training sample that the pipeline cannot use, and where the sample is."""

    place: str  # '<list>:<line>' (or another description of the sample; '' for none)
    path: str
    reason: str

    def __str__(self):
        return f'{self.place + ": " if self.place else ""}{self.path}: {self.reason}'


class SampleFiles:
    """The files each training sample reads, to find the one `tf.data` failed on.

    TensorFlow's decoding errors inside `tf.data` do not name the file, and the normal path
    carries no per-sample bookkeeping (no `py_function`). When the pipeline fails, the trainer
    calls `find_bad()`: every file of every sample still in use is decoded again, eagerly, by
    the pipeline's own decoders (`decode_image`; the list's `LabelFormat.decode`), in a few
    threads, and the files of one sample must agree in height and width (image and label; a
    video's key and current frames). This costs one decoding pass over the data, and only
    after a failure. `exclude(bad)` leaves the samples of those files out of `kept` (the
    training CLIs' `--skip_bad_files`), which the dataset function reads each time it builds
    the pipeline.

    `samples[i]` is `(place, ((path, kind), ...))` with kind 'image' or 'label'.
    """

    def __init__(self, samples, labels=None, workers=4):
        self.samples = list(samples)
        self.labels = labels  # LabelFormat, or None: stored values of greyscale PNGs
        self.workers = workers
        self.excluded = set()
        self.skipped = []  # BadFile of every sample left out, in the order found

    @property
    def kept(self):
        """Indices of the samples still in use."""
        return [i for i in range(len(self.samples)) if i not in self.excluded]

    def select(self, items):
        """The entries of `items` (one per sample) of the samples still in use."""
        return [items[i] for i in self.kept]

    def _decode(self, path, kind):
        """(H, W) of one file as the pipeline decodes it, or the reason it cannot."""
        try:
            if kind == 'label':
                if self.labels is not None:
                    value = self.labels.decode(tf.constant(path))
                else:
                    value = decode_label(tf.io.read_file(path))
            else:
                value = decode_image(tf.io.read_file(path))
            h, w = (int(d) for d in value.shape[:2])
        except (tf.errors.OpError, UserError, ValueError) as e:
            if not os.path.isfile(path):
                return 'no such file (removed during training?)'
            text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', str(e))
            text = re.sub(r'\s*\[Op:[^\]]*\](\s*name:\s*\S*)?', '', ' '.join(text.split()))
            return f'cannot decode ({text[:200] or type(e).__name__})'
        if h < 1 or w < 1:
            return 'cannot decode (an empty image)'
        return (h, w)

    def find_bad(self):
        """`BadFile`s of the samples in use, one per bad sample (its first bad file), in sample
        order. A file shared by several samples is decoded once."""
        files = {f for i in self.kept for f in self.samples[i][1]}
        with ThreadPoolExecutor(self.workers) as pool:
            results = dict(zip(files, pool.map(lambda f: self._decode(*f), files)))
        bad = []
        for i in self.kept:
            place, sample_files = self.samples[i]
            sizes = {}
            for path, kind in sample_files:
                result = results[(path, kind)]
                if isinstance(result, str):
                    bad.append((i, BadFile(place, path, result)))
                    break
                sizes.setdefault(result, path)
            else:
                if len(sizes) > 1:
                    (size_a, path_a), (size_b, path_b) = list(sizes.items())[:2]
                    bad.append(
                        (
                            i,
                            BadFile(
                                place,
                                path_b,
                                f'is {size_b[0]}x{size_b[1]} (HxW) but {path_a} of the same '
                                f'sample is {size_a[0]}x{size_a[1]}',
                            ),
                        )
                    )
        return bad

    def exclude(self, bad):
        """Leave out the samples of `bad` (from `find_bad`); UserError if none is left."""
        for i, file in bad:
            if i not in self.excluded:
                self.excluded.add(i)
                self.skipped.append(file)
        if not self.kept:
            raise UserError(f'every training sample has a bad file (the first: {bad[0][1]})')


def pair_files(pairs, list_path=None, labels=None):
    """`SampleFiles` of `(image, label)` pairs read from `list_path` (None: no list)."""
    lines = list_lines(list_path) if list_path else None
    return SampleFiles(
        (
            (sample_place(list_path, lines, i), ((image, 'image'), (label, 'label')))
            for i, (image, label) in enumerate(pairs)
        ),
        labels,
    )


def augment(image, label, seed, *, crop_size, random_scale, random_mirror, ignore_label):
    """One training sample: see the module docstring. `seed` is a [2] int tensor."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if random_scale:
        scale = tf.random.stateless_uniform([], seeds[0], *SCALE_RANGE)
        size = tf.cast(tf.cast(tf.shape(image)[:2], tf.float32) * scale, tf.int32)
        # tf.image.resize_images / resize_nearest_neighbor with the TF1 defaults
        image = tf.raw_ops.ResizeBilinear(
            images=image[None], size=size, align_corners=False, half_pixel_centers=False
        )[0]
        label = tf.raw_ops.ResizeNearestNeighbor(
            images=label[None], size=size, align_corners=False, half_pixel_centers=False
        )[0]
    if random_mirror:
        flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
        image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
        label = tf.cond(flip, lambda: label[:, ::-1], lambda: label)
    crop_h, crop_w = crop_size
    shape = tf.shape(image)
    pad_h, pad_w = tf.maximum(crop_h - shape[0], 0), tf.maximum(crop_w - shape[1], 0)
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])  # 0 after preprocessing: the mean
    label = tf.pad(
        tf.cast(label, tf.int32), [[0, pad_h], [0, pad_w], [0, 0]], constant_values=ignore_label
    )
    shape = tf.shape(image)
    y = tf.random.stateless_uniform([], seeds[2], 0, shape[0] - crop_h + 1, tf.int32)
    x = tf.random.stateless_uniform([], seeds[3], 0, shape[1] - crop_w + 1, tf.int32)
    image = image[y : y + crop_h, x : x + crop_w]
    label = label[y : y + crop_h, x : x + crop_w]
    image.set_shape([crop_h, crop_w, 3])
    label.set_shape([crop_h, crop_w, 1])
    return image, label


def shard_samples(samples, batch_size, input_context=None):
    """This input pipeline's share of an endless stream of per-sample records, and the batch
    size to batch it with: `(samples, batch_size)` unchanged without `input_context`.

    `samples` is what one process would batch as `samples.batch(batch_size)`: cheap records
    (paths and per-sample seeds), before decoding. With a `tf.distribute.InputContext` of P
    input pipelines (one per worker) and N replicas in all, global batch k, records
    [k B, (k + 1) B), is cut into P consecutive slices of B / P records and pipeline i keeps
    slice i of every global batch; its local replicas then take consecutive per-replica
    batches of B / N. Replica r of the whole cluster (workers in TF_CONFIG order) thus trains
    on records [k B + r B / N, k B + (r + 1) B / N): the union over replicas of step k is the
    very batch one process would train on, with the same per-sample seeds, whatever the number
    of workers. Every worker walks the cheap stream, but decodes only its own samples.
    Raises UserError when B is not divisible by N.
    """
    if input_context is None:
        return samples, batch_size
    replicas = input_context.num_replicas_in_sync
    if batch_size % replicas:
        raise UserError(
            f'the global batch size {batch_size} is not divisible by the {replicas} replicas '
            'of all workers'
        )
    pipelines = input_context.num_input_pipelines
    if pipelines > 1:
        samples = samples.batch(batch_size // pipelines, drop_remainder=True)
        samples = samples.shard(pipelines, input_context.input_pipeline_id).unbatch()
    return samples, batch_size // replicas


def sample_stream(records, *, batch_size, seed=0, shuffle_buffer=500, input_context=None):
    """The endless shuffled stream of `(record, per-sample seed [2] int64)` that a training
    input pipeline decodes, this pipeline's share of it, and the batch size to batch it with.

    `records`: a tuple of equal-length lists (e.g. image and label paths), one entry a sample.
    Shuffled with `seed` in a buffer of `min(shuffle_buffer, samples)`, reshuffled each pass;
    the per-sample seeds come from `tf.data.Dataset.random(seed)`, so a sample's augmentation
    depends only on its place in the stream. Sharding: `shard_samples`."""
    ds = tf.data.Dataset.from_tensor_slices(records)
    count = len(records[0])
    ds = ds.shuffle(min(shuffle_buffer, count), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed).batch(2)))
    return shard_samples(ds, batch_size, input_context)


def batches(samples, load, batch_size):
    """`samples` decoded by `load(record, seed)` in parallel (deterministic order), batched
    (incomplete batches dropped) and prefetched."""
    ds = samples.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def train_dataset(
    pairs,
    *,
    preprocess,
    crop_size,
    random_scale=False,
    random_mirror=False,
    labels=None,
    ignore_label=255,
    **stream,
):
    """Endless, shuffled, augmented, batched dataset of (image [B,h,w,3], label [B,h,w,1]).

    `labels`: the `LabelFormat` of `check_labels` (train ids by meaning); None reads the
    stored values of greyscale PNGs as train ids.

    `preprocess`: the network's input convention (`net.preprocess`), applied to the decoded
    uint8 RGB image before augmentation, as the original subtracts the mean before scaling,
    padding and cropping (so padding is 0 in the network's input space). `batch_size` is the
    global batch; with `input_context` (`tf.distribute`'s `distribute_datasets_from_function`)
    this worker's per-replica batches of it, see `shard_samples`. `stream`: `batch_size`,
    `seed`, `shuffle_buffer`, `input_context` of `sample_stream`.
    """
    images, label_paths = (list(p) for p in zip(*pairs))
    ds, batch_size = sample_stream((images, label_paths), **stream)

    def load(paths, sample_seed):
        image = preprocess(decode_image(tf.io.read_file(paths[0])))
        if labels is None:
            label = decode_label(tf.io.read_file(paths[1]))
        else:
            label = labels.decode(paths[1])
        return augment(
            image,
            label,
            sample_seed,
            crop_size=crop_size,
            random_scale=random_scale,
            random_mirror=random_mirror,
            ignore_label=ignore_label,
        )

    return batches(ds, load, batch_size)
