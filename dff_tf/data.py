"""Video lists, key-frame lookup and the DFF training pipeline (key, current, label) in tf.data.

A video list has the ICNet list format, `"<image> <label>"` per line relative to `--data_dir`
(`icnet_tf.data.read_list`): the labelled frames. Every frame must be placed in a sequence:

* with `--videos_json` (the toy city's `videos.json`): `sequences[*].images` lists each
  sequence's frames in order (paths relative to `--data_dir`); frame t is `images[t]`;
* otherwise from the Cityscapes file name `<sequence>_<frame>_leftImg8bit.<ext>`
  (`aachen_000000_000019_leftImg8bit.png`: sequence `aachen_000000` in that directory,
  frame 19). Toy city names follow it too.

The key frame of a labelled frame t at distance d is frame t - d of the same sequence: a
listed frame, or else the file of that name next to it, or in `leftImg8bit_sequence/` when the
list points into `leftImg8bit/` (Cityscapes: only `*_000019_*` is annotated, in `gtFine/`, and
its neighbours live in `leftImg8bit_sequence/`). When t - d is before the first existing frame
the key is clamped to the sequence start (the original DFF clamps to the segment).
"""

import dataclasses
import json
import os
import re
from dataclasses import dataclass

import tensorflow as tf

from converters.errors import UserError
from icnet_tf.data import (
    SampleFiles,
    augment,
    batches,
    decode_image,
    decode_label,
    list_lines,
    natural_key,
    read_list,
    sample_stream,
)
from icnet_tf.network import CAFFE_BGR_MEAN

MAX_KEY_DISTANCE = 9  # training distances are uniform in [0, 9] (the original's MIN_OFFSET -9)
FRAME_NAME = re.compile(r'^(?P<stem>.+)_(?P<frame>\d+)_leftImg8bit(?P<ext>\.\w+)$')
# Padding value of frames (RGB): the feature networks' mean, i.e. 0 after mean subtraction.
PAD_RGB = tuple(reversed(CAFFE_BGR_MEAN))


@dataclass(frozen=True)
class Sample:
    """A labelled frame: paths, its sequence and frame number, its line in the list."""

    image: str
    label: str
    sequence: str
    frame: int
    line: int


class VideoList:
    """The labelled frames of a video list and the lookup of their key frames."""

    def __init__(self, samples, frames, list_path='list'):
        self.samples = list(samples)
        self.frames = frames  # {sequence: {frame number: image path}} (known frames)
        self.list_path = list_path
        self._cache = {}

    def __len__(self):
        return len(self.samples)

    def frame_path(self, sample, frame):
        """The image of `frame` in `sample`'s sequence, or None if there is none."""
        known = self.frames.get(sample.sequence, {})
        if frame in known:
            return known[frame]
        if (
            frame < 0
            or self.frames.get(sample.sequence) is None
            or sample.sequence.startswith('json:')
        ):
            return None
        m = FRAME_NAME.match(os.path.basename(sample.image))
        name = f'{m.group("stem")}_{frame:0{len(m.group("frame"))}d}_leftImg8bit{m.group("ext")}'
        folder = os.path.dirname(sample.image)
        for candidate_dir in (folder, _sequence_dir(folder)):
            if candidate_dir is None:
                continue
            path = os.path.join(candidate_dir, name)
            if os.path.isfile(path):
                known[frame] = path
                return path
        return None

    def key(self, sample, distance):
        """(key image path, actual distance): frame t - distance, clamped to the sequence start."""
        cache_key = (sample.image, distance)
        if cache_key not in self._cache:
            found = (sample.image, 0)
            for frame in range(sample.frame - distance, sample.frame):
                path = self.frame_path(sample, frame)
                if path is not None:
                    found = (path, sample.frame - frame)
                    break
            self._cache[cache_key] = found
        return self._cache[cache_key]

    def exact_key(self, sample, distance):
        """Key image path at exactly `distance`, or None if that frame does not exist."""
        path, actual = self.key(sample, distance)
        return path if actual == distance else None

    def key_table(self, max_distance):
        """[num_samples, max_distance + 1] key paths (clamped), column d = distance d."""
        return [[self.key(s, d)[0] for d in range(max_distance + 1)] for s in self.samples]

    def subset(self, indices):
        """The same videos with only the labelled frames at `indices`."""
        return VideoList([self.samples[i] for i in indices], self.frames, self.list_path)

    def sample_files(self, max_distance, labels=None):
        """`icnet_tf.data.SampleFiles` of the samples: the frame, its label and every key frame
        it may be paired with (distances 0..max_distance), named by their list line."""
        return SampleFiles(
            (
                (
                    f'{self.list_path}:{s.line}',
                    ((s.image, 'image'), (s.label, 'label'))
                    + tuple((k, 'image') for k in dict.fromkeys(keys) if k != s.image),
                )
                for s, keys in zip(self.samples, self.key_table(max_distance))
            ),
            labels,
        )


def _sequence_dir(folder):
    """`.../leftImg8bit/split/city` -> `.../leftImg8bit_sequence/split/city` (else None)."""
    parts = folder.split(os.sep)
    if 'leftImg8bit' not in parts:
        return None
    parts[len(parts) - 1 - parts[::-1].index('leftImg8bit')] = 'leftImg8bit_sequence'
    return os.sep.join(parts)


def json_sequence_name(index, seq):
    """Sequence id of the index-th entry of videos.json; names alone are not unique (the toy
    city numbers train and val sequences from 0 each)."""
    return f'json:{index}:{seq.get("split", "")}/{seq.get("name", index)}'


def read_video_list(list_path, data_dir='', videos_json=None):
    """Parse a video list (and optionally videos.json) into a `VideoList`.

    Raises UserError naming the list file and line for lines whose frame cannot be placed.
    """
    pairs = read_list(list_path, data_dir)
    lines = list_lines(list_path)
    frames, by_image = {}, {}
    if videos_json:
        if not os.path.isfile(videos_json):
            raise UserError(f'{videos_json}: no such videos.json file')
        try:
            with open(videos_json, encoding='utf-8') as f:
                sequences = json.load(f)['sequences']
            for index, seq in enumerate(sequences):
                name = json_sequence_name(index, seq)
                images = [os.path.normpath(os.path.join(data_dir, p)) for p in seq['images']]
                frames[name] = dict(enumerate(images))
                by_image.update({p: (name, t) for t, p in enumerate(images)})
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(
                f'{videos_json}: not a videos.json file with "sequences[*].images" '
                f'({type(e).__name__}: {e})'
            ) from None
    samples = []
    for line, (image, label) in zip(lines, pairs):
        if videos_json:
            place = by_image.get(os.path.normpath(image))
            if place is None:
                raise UserError(
                    f'{list_path}:{line}: {image} is not a frame of any sequence in {videos_json}'
                )
            sequence, frame = place
        else:
            m = FRAME_NAME.match(os.path.basename(image))
            if not m:
                raise UserError(
                    f'{list_path}:{line}: cannot tell the sequence and frame of '
                    f'{os.path.basename(image)!r}: expected '
                    '<sequence>_<frame>_leftImg8bit.<ext> (Cityscapes names) or '
                    'pass --videos_json'
                )
            sequence = os.path.join(os.path.dirname(image), m.group('stem'))
            frame = int(m.group('frame'))
            frames.setdefault(sequence, {})[frame] = image
        samples.append(Sample(image, label, sequence, frame, line))
    return VideoList(samples, frames, list_path)


def train_dataset(
    videos,
    *,
    crop_size,
    key_distance=None,
    max_distance=MAX_KEY_DISTANCE,
    random_mirror=False,
    labels=None,
    ignore_label=255,
    **stream,
):
    """Endless batches of `((key [B,h,w,3], current [B,h,w,3]), label [B,h,w,1])`.

    Frames are float32 RGB 0..255; per sample the distance is uniform in [0, max_distance]
    (or `key_distance`), the key is frame t - d clamped to the sequence start; key, current
    and label get the same mirror bit and crop (`icnet_tf.data.augment`), frames padded with
    the mean colour, labels with ignore_label. Seeded and deterministic. `batch_size` is the
    global batch; with `input_context` this worker's per-replica batches of it
    (`icnet_tf.data.shard_samples`). `labels`: the `icnet_tf.data.LabelFormat` of
    `check_labels` (train ids by meaning); None reads the stored values of greyscale PNGs
    as train ids.
    """
    if key_distance is not None:
        max_distance = int(key_distance)
    table = videos.key_table(max_distance)
    current = [s.image for s in videos.samples]
    label_paths = [s.label for s in videos.samples]
    ds, batch_size = sample_stream((current, label_paths, table), **stream)
    pad = tf.constant(PAD_RGB, tf.float32)

    def load(cur_path, label_path, keys, sample_seed):
        seeds = tf.random.experimental.stateless_split(sample_seed, 2)
        if key_distance is None:
            d = tf.random.stateless_uniform([], seeds[0], 0, max_distance + 1, tf.int32)
        else:
            d = tf.constant(int(key_distance))
        key = decode_image(tf.io.read_file(keys[d]))
        cur = decode_image(tf.io.read_file(cur_path))
        if labels is None:
            label = decode_label(tf.io.read_file(label_path))
        else:
            label = labels.decode(label_path)
        tf.debugging.assert_equal(
            tf.shape(key), tf.shape(cur), message='key and current frames differ in size'
        )
        # augment() draws its mirror bit and crop offset from the seed and the shape only, so
        # the same seed gives key, current and label the same mirror and crop.
        options = dict(
            crop_size=crop_size,
            random_scale=False,
            random_mirror=random_mirror,
            ignore_label=ignore_label,
        )
        key, _ = augment(tf.cast(key, tf.float32) - pad, label, seeds[1], **options)
        cur, label = augment(tf.cast(cur, tf.float32) - pad, label, seeds[1], **options)
        return (key + pad, cur + pad), label

    return batches(ds, lambda paths, s: load(*paths, s), batch_size)


def first_frame_size(videos):
    """(H, W) of the first labelled frame (the default crop)."""
    from icnet_tf.predict import read_image

    return tuple(read_image(videos.samples[0].image).shape[:2])


def frame_paths(spec):
    """Frames of a video: the image files of a directory or the files matching a glob pattern,
    in natural order of their names (frame_2 before frame_10)."""
    import glob

    if os.path.isdir(spec):
        names = sorted(
            (
                n
                for n in os.listdir(spec)
                if n.lower().endswith(
                    ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.ppm', '.tif', '.tiff', '.webp')
                )
            ),
            key=natural_key,
        )
        paths = [os.path.join(spec, n) for n in names]
        if not paths:
            raise UserError(f'{spec}: directory holds no image files')
        return paths
    if any(ch in spec for ch in '*?['):
        paths = sorted((p for p in glob.glob(spec) if os.path.isfile(p)), key=natural_key)
        if not paths:
            raise UserError(f'{spec}: the pattern matches no files')
        return paths
    raise UserError(
        f'{spec}: no such directory (pass a directory of frames or a glob '
        'pattern such as "video/*.png")'
    )


# ------------------------------------------------------------------ known flow (toy city videos)
@dataclass(frozen=True)
class FlowPairs:
    """Frame pairs with known background flow, as arrays (one row per pair)."""

    current: list  # image paths of frame t
    key: list  # image paths of frame t - d
    dx: list  # background flow x of every static pixel of t, in frame pixels
    hood_top: list  # rows >= hood_top are the frame-fixed ego hood (not supervised)
    boxes: list  # [K, 4] int boxes [x0, y0, x1, y1) in frame t not supervised (padded 0)
    place: list  # where the pair comes from: '<videos.json>: sequence <name> frames <t> and <k>'

    def subset(self, indices):
        """The pairs at these positions."""
        return FlowPairs(
            *([getattr(self, f.name)[i] for i in indices] for f in dataclasses.fields(self))
        )

    def sample_files(self):
        """`icnet_tf.data.SampleFiles` of the pairs (frame t and frame t - d)."""
        return SampleFiles(
            (place, ((cur, 'image'), (key, 'image')))
            for place, cur, key in zip(self.place, self.current, self.key)
        )


def flow_pairs(videos, videos_json, data_dir='', max_distance=MAX_KEY_DISTANCE):
    """Every (frame t, frame t - d), 1 <= d <= max_distance, of the sequences `videos` (a
    `VideoList` read with `videos_json`) draws labelled frames from, with its known flow.

    The toy city's static world is a panorama the camera pans across (data/toycity.py):
    frame_t[y, x] == frame_{t-d}[y, x + camera_x[t] - camera_x[t - d]], so the flow that maps
    a pixel p of the current frame to where to sample the key frame (DFF's convention, the
    displacement `dff_tf.warp.warp` takes) is (camera_x[t] - camera_x[t - d], 0) on static
    content. Not supervised: the boxes of moving objects in frame t, the pixels whose
    displaced position falls in a moving object's box in frame t - d (both given in frame t's
    coordinates, shadows included), and the ego hood rows.
    """
    with open(videos_json, encoding='utf-8') as f:
        sequences = json.load(f)['sequences']
    wanted = {s.sequence for s in videos.samples}
    rows = []
    for index, seq in enumerate(sequences):
        name = json_sequence_name(index, seq)
        if name not in wanted:
            continue
        if 'camera_x' not in seq:
            raise UserError(
                f'{videos_json}: sequence {seq.get("name", index)} has no camera_x: '
                'known flow needs the camera motion the toy city records'
            )
        images = [os.path.normpath(os.path.join(data_dir, p)) for p in seq['images']]
        cam = seq['camera_x']
        hood = int(seq.get('hood_top', seq.get('height', 1 << 30)))
        tracks = [o['track'] for o in seq.get('objects', [])]
        for t in range(len(images)):
            for d in range(1, max_distance + 1):
                k = t - d
                if k < 0:
                    break
                dx = cam[t] - cam[k]
                boxes = [tr[t]['bbox'] for tr in tracks if tr[t]['bbox'] is not None]
                boxes += [
                    [b[0] - dx, b[1], b[2] - dx, b[3]]
                    for tr in tracks
                    for b in [tr[k]['bbox']]
                    if b is not None
                ]
                place = f'{videos_json}: sequence {seq.get("name", index)} frames {t} and {k}'
                rows.append((images[t], images[k], float(dx), hood, boxes, place))
    if not rows:
        raise UserError(
            f'{videos.list_path}: its sequences in {videos_json} have no frame '
            'pairs (need at least 2 frames per sequence)'
        )
    most = max(1, max(len(r[4]) for r in rows))
    boxes = [r[4] + [[0, 0, 0, 0]] * (most - len(r[4])) for r in rows]
    return FlowPairs(
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        boxes,
        [r[5] for r in rows],
    )


def known_flow(shape, dx, hood_top, boxes):
    """Dense target of one pair: `(flow [H, W, 2] float32 px, valid [H, W, 1] float32)`.

    flow = (dx, 0) everywhere; valid = 1 where y < hood_top, 0 <= x + dx <= W - 1 and (y, x) is in
    none of `boxes` ([K, 4] int [x0, y0, x1, y1), half-open).
    """
    h, w = shape[0], shape[1]
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    boxes = tf.cast(boxes, tf.int32)
    inside = (
        (xs[None] >= boxes[:, 0, None, None])
        & (xs[None] < boxes[:, 2, None, None])
        & (ys[None] >= boxes[:, 1, None, None])
        & (ys[None] < boxes[:, 3, None, None])
    )
    x_key = tf.cast(xs, tf.float32) + tf.cast(dx, tf.float32)
    valid = (
        (ys < hood_top)
        & (x_key >= 0)
        & (x_key <= tf.cast(w - 1, tf.float32))
        & ~tf.reduce_any(inside, axis=0)
    )
    flow = tf.stack([tf.fill([h, w], tf.cast(dx, tf.float32)), tf.zeros([h, w])], axis=-1)
    return flow, tf.cast(valid, tf.float32)[..., None]


def flow_dataset(pairs, *, crop_size=None, random_mirror=False, shuffle_buffer=2000, **stream):
    """Endless batches of `((key [B,h,w,3], current [B,h,w,3]), (flow [B,h,w,2], valid
    [B,h,w,1]))`: frames (float32 RGB 0..255) and their known flow (`known_flow`). With
    `crop_size` (h, w) both frames are cut at one random place and only pixels whose key
    position lies inside the crop are supervised; a mirrored pair gets its flow x negated.
    Seeded and deterministic. `batch_size` is the global batch; with `input_context` this
    worker's per-replica batches of it (`icnet_tf.data.shard_samples`). `stream`:
    `batch_size`, `seed`, `input_context` of `icnet_tf.data.sample_stream`."""
    records = (pairs.current, pairs.key, pairs.dx, pairs.hood_top, pairs.boxes)
    ds, batch_size = sample_stream(records, shuffle_buffer=shuffle_buffer, **stream)

    def load(fields, sample_seed):
        cur_path, key_path, dx, hood_top, boxes = fields
        cur = tf.cast(decode_image(tf.io.read_file(cur_path)), tf.float32)
        key = tf.cast(decode_image(tf.io.read_file(key_path)), tf.float32)
        tf.debugging.assert_equal(
            tf.shape(key), tf.shape(cur), message='key and current frames differ in size'
        )
        seeds = tf.random.experimental.stateless_split(sample_seed, 3)
        if crop_size is not None:
            shape = tf.shape(cur)
            tf.debugging.assert_greater_equal(
                shape[:2],
                tf.constant(crop_size, tf.int32),
                message='frames smaller than the crop size',
            )
            y0 = tf.random.stateless_uniform([], seeds[1], 0, shape[0] - crop_size[0] + 1, tf.int32)
            x0 = tf.random.stateless_uniform([], seeds[2], 0, shape[1] - crop_size[1] + 1, tf.int32)
            cur = cur[y0 : y0 + crop_size[0], x0 : x0 + crop_size[1]]
            key = key[y0 : y0 + crop_size[0], x0 : x0 + crop_size[1]]
            hood_top = hood_top - y0
            boxes = boxes - tf.stack([x0, y0, x0, y0])
        flow, valid = known_flow(tf.shape(cur), dx, hood_top, boxes)
        if random_mirror:
            flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
            cur, key, valid = (
                tf.cond(flip, lambda v=v: v[:, ::-1], lambda v=v: v) for v in (cur, key, valid)
            )
            flow = flow * tf.where(flip, tf.constant([-1.0, 1.0]), tf.constant([1.0, 1.0]))
        return (key, cur), (flow, valid)

    return batches(ds, load, batch_size)
