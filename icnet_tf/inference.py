"""`python -m icnet_tf.inference`: segment images, write label, colour and overlay PNGs.

    python -m icnet_tf.inference --img_path X [--restore_from W] [--model ICNet_BN|ICNet]
        [--filter_scale 1] [--dataset cityscapes|ade20k|others] [--save_dir output/]
        [--output_format trainIds,color] [--input_size H,W | --protocol whole|dataset]
        [--palette dataset|original] [--overwrite]

`--img_path`: one image, a folder (its files with an image extension, not recursive) or a glob
(quote it). Images of any size and mode (grayscale, RGBA, 16-bit, palette...; see
`predict.read_image`), mixed sizes included. A folder or glob skips files named like this
tool's outputs (`*_trainIds.png`, `*_labelIds.png`, `*_color.png`, `*_overlay.png`,
`*_labelTrainIds.png`). For each image, `<stem>_<format>.png` is written to --save_dir at the
input's size for each --output_format (`icnet_tf.labels.write_label_png`): `trainIds` (the
network's ids), `labelIds` (the dataset's official ids: Cityscapes labelIds, ADE20K 1..150),
`color` (the dataset's colours), `overlay` (colours over the photo; `--overlay` adds it). When
two inputs share a stem the extension is kept in it (`a.png` -> `a.png_color.png`). A folder
written with `--output_format labelIds` holds one PNG per frame, what the Cityscapes benchmark
and cityscapesScripts' evaluator read. Files this run did not write are never replaced without
--overwrite, and --save_dir may not be a folder the images come from.

`--restore_from`: a caffe-tensorflow `.npy`, a TF checkpoint (directory or prefix), or a
SavedModel written by `python -m icnet_tf.export` (then the model flags are not used and its
`serving_default` signature does everything; its dataset is the one recorded at export).
A SavedModel is a program, not only weights: loading one runs the graph it carries, so pass
only SavedModels you exported yourself or trust (weights files are read as data only).
Without it the network keeps random weights and says so. Processing follows the original:
RGB -> BGR, mean, zero padding to a multiple of 32, forward, align-corners resize of the
logits, crop, argmax; the network runs in a `tf.function` that retraces at most once for
run-time sizes (`reduce_retracing`). `--protocol dataset` applies the dataset's evaluation
protocol instead (Cityscapes: zero-pad to 1025x2049; ADE20K: resize to 480x480) and
`--input_size H,W` pads every image to H,W, so that test-set predictions are made exactly as
`icnet_tf.evaluate` makes them on the validation set; an image larger than the padding size is
an error before anything is written.

Unreadable or corrupt images are skipped; the others are still written, and at the end every
failed file is named with its reason and the exit status is 1. A missing --img_path, or one that
matches no image, is one line and exit status 1.
"""

import dataclasses
import glob
import os
import statistics
import sys
import time

import tensorflow as tf
from absl import flags
from PIL import Image

from converters.errors import UserError
from icnet_tf import cli
from icnet_tf.data import natural_key
from icnet_tf.labels import check_outputs, is_own_output, output_stems, write_label_png
from icnet_tf.palette import ORIGINAL
from icnet_tf.predict import Protocol, Segmenter, read_image

FLAGS = flags.FLAGS

IMAGE_EXTENSIONS = (
    '.png',
    '.jpg',
    '.jpeg',
    '.bmp',
    '.tif',
    '.tiff',
    '.gif',
    '.ppm',
    '.pgm',
    '.pbm',
    '.webp',
)


def find_images(img_path):
    """The image files `img_path` names: the file itself, a folder's images, or a glob's files
    (a folder or glob leaves out files named like this tool's outputs, `labels.is_own_output`)."""
    if not img_path:
        raise UserError('--img_path is required: an image file, a folder or a (quoted) glob')
    if os.path.isfile(img_path):
        return [img_path]
    if os.path.isdir(img_path):
        images = [
            name
            for name in os.listdir(img_path)
            if name.lower().endswith(IMAGE_EXTENSIONS)
            and os.path.isfile(os.path.join(img_path, name))
        ]
        found = sorted(
            (os.path.join(img_path, n) for n in images if not is_own_output(n)), key=natural_key
        )
        if not found:
            own = len(images)
            skipped = f'; {own} files named like its outputs skipped' if own else ''
            raise UserError(
                f'{img_path}: folder holds no images ({", ".join(IMAGE_EXTENSIONS)}){skipped}'
            )
        return found
    if not glob.has_magic(img_path):
        raise UserError(f'{img_path}: no such file or directory')
    found = sorted(
        (p for p in glob.glob(img_path) if os.path.isfile(p) and not is_own_output(p)),
        key=natural_key,
    )
    if not found:
        raise UserError(f'{img_path}: the pattern matches no files')
    return found


class NetworkPredictor:
    """uint8 RGB [H, W, 3] -> int32 labels [H, W] with an in-memory network (`Segmenter`)."""

    def __init__(self, net, protocol=None):
        self.num_classes = net.num_classes
        self.dataset = None
        self.segmenter = Segmenter(net, reduce_retracing=True, **(protocol or Protocol()).options())

    def __call__(self, rgb):
        return self.segmenter(rgb)


class SavedModelPredictor:
    """The same with the `serving_default` signature of an exported SavedModel."""

    def __init__(self, export_dir):
        from icnet_tf import serving

        self.signature, self._loaded = serving.load_signature(export_dir)
        meta = serving.load_metadata(export_dir)
        self.dataset = meta.get('dataset')
        self.num_classes = meta.get('num_classes')
        if self.num_classes is None:
            probabilities = self.signature.structured_outputs.get('probabilities')
            self.num_classes = probabilities.shape[-1] if probabilities is not None else None

    def __call__(self, rgb):
        return self.signature(images=tf.constant(rgb[None]))['labels'][0].numpy()


def make_predictor(restore_from, model, model_options, protocol_of=None, spec_of=None):
    """(predictor, dataset spec, protocol) from the flags; prints what was loaded (or that the
    weights are random). `spec_of(held_classes, record, holder, restore_from=...)` gives the
    dataset (default `cli.dataset_spec`; a SavedModel's from what it holds and recorded),
    `protocol_of(spec)` the `predict.Protocol` (default: whole image)."""
    from icnet_tf import build_model
    from icnet_tf.serving import is_saved_model

    spec_of = spec_of or cli.dataset_spec
    protocol_of = protocol_of or (lambda spec: Protocol())
    if restore_from and is_saved_model(restore_from):
        predictor = SavedModelPredictor(restore_from)
        spec = spec_of(predictor.num_classes, predictor.dataset, restore_from)
        protocol = protocol_of(spec)
        if protocol.pad_to or protocol.resize_to:
            raise UserError(
                f'{restore_from}: an exported SavedModel pads images itself (to multiples of '
                '32): --input_size and --protocol dataset need the checkpoint or .npy'
            )
        print(
            f'using the exported SavedModel {restore_from} (model flags are not used; '
            f'{predictor.num_classes or "?"} classes, dataset {spec.name})'
        )
        return predictor, spec, protocol
    spec = spec_of(restore_from=restore_from)
    protocol = protocol_of(spec)
    net = build_model(model, num_classes=spec.num_classes, **model_options)
    cli.load_or_warn(
        net,
        restore_from,
        f'{model} has RANDOM weights, so the labels are noise (pass a .npy, a checkpoint or an '
        'exported SavedModel)',
    )
    return NetworkPredictor(net, protocol), spec, protocol


def run_inference(
    paths, predictor, save_dir, spec, *, formats=('trainIds', 'color'), overwrite=False, stream=None
):
    """Segment every path; returns ({path: ms}, {path: reason}) for the done and failed ones."""
    from icnet_tf.training import Progress

    stream = stream or sys.stdout
    os.makedirs(save_dir, exist_ok=True)
    stems = output_stems(paths)
    bar = Progress(0, len(paths), stream=stream) if stream.isatty() else None
    done, failed = {}, {}
    width = len(str(len(paths)))
    for index, path in enumerate(paths, 1):
        start = time.perf_counter()
        try:
            rgb = read_image(path)
            labels = predictor(rgb)
            ms = (time.perf_counter() - start) * 1000
            base = os.path.join(save_dir, stems[path])
            for fmt in formats:
                write_label_png(base, labels, spec, fmt, rgb=rgb, overwrite=overwrite)
            done[path] = ms
            line = (
                f'[{index:{width}d}/{len(paths)}] {path}: {rgb.shape[1]}x{rgb.shape[0]} {ms:.0f} ms'
            )
        except UserError as e:
            failed[path] = ' '.join(str(e).split())
            line = f'[{index:{width}d}/{len(paths)}] {path}: skipped'
        except (tf.errors.OpError, OSError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            failed[path] = f'{path}: {type(e).__name__}: {reason}'
            line = f'[{index:{width}d}/{len(paths)}] {path}: failed'
        if bar:
            bar.update(index, {'ms/img': done.get(path, float('nan'))}, force=True)
        else:
            print(line, file=stream, flush=True)
    if bar:
        bar.close()
    return done, failed


def check_sizes(paths, protocol):
    """Every image must fit the padding size: the first one that does not is a one-line error
    before anything is written (unreadable files are left to the run, which reports them)."""
    if not protocol.pad_to:
        return
    for path in paths:
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (OSError, ValueError):
            continue
        protocol.check(height, width, path)


def main(argv):
    del argv
    paths = find_images(FLAGS.img_path)
    formats = cli.output_formats()
    if FLAGS.overlay and 'overlay' not in formats:
        formats += ('overlay',)
    cli.check_save_dir(FLAGS.save_dir, paths)
    check_outputs(FLAGS.save_dir, output_stems(paths).values(), formats, FLAGS.overwrite)
    predictor, spec, protocol = make_predictor(
        FLAGS.restore_from, FLAGS.model, cli.model_options(), cli.protocol
    )
    check_sizes(paths, protocol)
    if FLAGS.palette == 'original':
        if spec.num_classes != len(ORIGINAL):
            raise UserError(f'--palette original has 19 colours, the model {spec.num_classes}')
        spec = dataclasses.replace(spec, palette=ORIGINAL)
    print(f'{len(paths)} image(s), dataset {spec.name}, {protocol.describe()}')
    start = time.perf_counter()
    done, failed = run_inference(
        paths, predictor, FLAGS.save_dir, spec, formats=formats, overwrite=FLAGS.overwrite
    )
    total = time.perf_counter() - start
    if done:
        times = list(done.values())
        median = statistics.median(times)
        print(
            f'{len(done)} image(s) segmented in {total:.1f} s (median {median:.0f} '
            f'ms/image, first {times[0]:.0f} ms incl. tracing); wrote '
            f'{", ".join(f"*_{f}.png" for f in formats)} to {os.path.join(FLAGS.save_dir, "")}'
        )
    if failed:
        for reason in failed.values():
            print(f'error: {reason}', file=sys.stderr)
        print(
            f'error: {len(failed)} of {len(paths)} image(s) failed (listed above); the others '
            'were written',
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == '__main__':
    flags.DEFINE_string('img_path', None, 'an image, a folder of images or a quoted glob')
    flags.DEFINE_string(
        'restore_from',
        None,
        '.npy, .pth, TF1/TF2 checkpoint or an exported SavedModel dir (a SavedModel runs the '
        'graph it carries: load only ones you trust)',
    )
    cli.define_output_flags('output/', 'trainIds,color', 'where to write the PNGs')
    cli.define_protocol_flags('whole')
    flags.DEFINE_enum(
        'palette',
        'dataset',
        ['dataset', 'original'],
        "the dataset's colours, or the original repository's Cityscapes table",
    )
    flags.DEFINE_bool(
        'overlay', False, 'also write <stem>_overlay.png (adds overlay to --output_format)'
    )
    cli.define_model_flags()
    cli.run(main)
