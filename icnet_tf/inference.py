"""`python -m icnet_tf.inference`: segment images, write colour, trainId and overlay PNGs.

    python -m icnet_tf.inference --img_path X [--restore_from W] [--model ICNet_BN|ICNet]
        [--filter_scale 1] [--num_classes 19] [--save_dir output/]
        [--palette cityscapes|original] [--overlay]

`--img_path`: one image, a folder (its files with an image extension, not recursive) or a glob
(quote it). Images of any size and mode (grayscale, RGBA, 16-bit, palette...; see
`predict.read_image`), mixed sizes included. For each image `<stem>_color.png` (palette
colours), `<stem>_labelTrainIds.png` (uint8 trainIds) and, with --overlay, `<stem>_overlay.png`
are written to --save_dir at the input's size (when two inputs share a stem, the extension is
kept in it: `a.png` -> `a.png_color.png`).

`--restore_from`: a caffe-tensorflow `.npy`, a TF checkpoint (directory or prefix), or a
SavedModel written by `python -m icnet_tf.export` (then the model flags are not used and its
`serving_default` signature does everything). Without it the network keeps random weights and
says so. Processing follows the original: RGB -> BGR, mean, zero padding to a
multiple of 32, forward, align-corners resize of the logits, crop, argmax; the network runs in a
`tf.function` that retraces at most once for run-time sizes (`reduce_retracing`).

Unreadable or corrupt images are skipped; the others are still written, and at the end every
failed file is named with its reason and the exit status is 1. A missing --img_path, or one that
matches no image, is one line and exit status 1.
"""

import glob
import os
import statistics
import sys
import time

import numpy as np
import tensorflow as tf
from absl import flags
from PIL import Image

from converters.errors import UserError
from icnet_tf import cli
from icnet_tf.palette import colorize, overlay
from icnet_tf.predict import Segmenter, read_image

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
    """The image files `img_path` names: the file itself, a folder's images, or a glob's files."""
    if not img_path:
        raise UserError('--img_path is required: an image file, a folder or a (quoted) glob')
    if os.path.isfile(img_path):
        return [img_path]
    if os.path.isdir(img_path):
        found = sorted(
            os.path.join(img_path, name)
            for name in os.listdir(img_path)
            if name.lower().endswith(IMAGE_EXTENSIONS)
            and os.path.isfile(os.path.join(img_path, name))
        )
        if not found:
            raise UserError(f'{img_path}: folder holds no images ({", ".join(IMAGE_EXTENSIONS)})')
        return found
    if not glob.has_magic(img_path):
        raise UserError(f'{img_path}: no such file or directory')
    found = sorted(p for p in glob.glob(img_path) if os.path.isfile(p))
    if not found:
        raise UserError(f'{img_path}: the pattern matches no files')
    return found


def output_stems(paths):
    """`{path: stem}` for output names; the extension is kept where two inputs share a stem."""
    stems = {p: os.path.splitext(os.path.basename(p))[0] for p in paths}
    counts = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    out, used = {}, set()
    for p, stem in stems.items():
        name = stem if counts[stem] == 1 else os.path.basename(p)
        base, k = name, 1
        while name in used:  # same file name in different folders (a glob over folders)
            k += 1
            name = f'{base}_{k}'
        used.add(name)
        out[p] = name
    return out


class NetworkPredictor:
    """uint8 RGB [H, W, 3] -> int32 labels [H, W] with an in-memory network (`Segmenter`)."""

    def __init__(self, net):
        self.num_classes = net.num_classes
        self.segmenter = Segmenter(net, reduce_retracing=True)

    def __call__(self, rgb):
        return self.segmenter(rgb)


class SavedModelPredictor:
    """The same with the `serving_default` signature of an exported SavedModel."""

    def __init__(self, export_dir):
        from icnet_tf import serving

        self.signature, self._loaded = serving.load_signature(export_dir)
        meta = serving.load_metadata(export_dir)
        self.num_classes = meta.get('num_classes')
        if self.num_classes is None:
            probabilities = self.signature.structured_outputs.get('probabilities')
            self.num_classes = probabilities.shape[-1] if probabilities is not None else None

    def __call__(self, rgb):
        return self.signature(images=tf.constant(rgb[None]))['labels'][0].numpy()


def make_predictor(restore_from, model, num_classes, filter_scale):
    """A predictor from the flags; prints what was loaded (or that the weights are random)."""
    from icnet_tf import build_model
    from icnet_tf.serving import is_saved_model

    if restore_from and is_saved_model(restore_from):
        predictor = SavedModelPredictor(restore_from)
        print(
            f'using the exported SavedModel {restore_from} (model flags are not used; '
            f'{predictor.num_classes or "?"} classes)'
        )
        return predictor
    net = build_model(model, num_classes=num_classes, filter_scale=filter_scale)
    if restore_from:
        print(net.load(restore_from, skip=tuple(net.aux_heads), verbose=False))
    else:
        net.build()
        print(
            f'warning: no --restore_from given: {model} has RANDOM weights, so the labels '
            'are noise (pass a .npy, a checkpoint or an exported SavedModel)',
            file=sys.stderr,
        )
    return NetworkPredictor(net)


def write_outputs(save_dir, stem, rgb, labels, palette, num_classes, with_overlay):
    if num_classes and num_classes > 256:
        raise UserError(f'{num_classes} classes do not fit the uint8 trainId PNGs')
    outputs = {
        f'{stem}_color.png': colorize(labels, palette, num_classes),
        f'{stem}_labelTrainIds.png': labels.astype(np.uint8),
    }
    if with_overlay:
        outputs[f'{stem}_overlay.png'] = overlay(rgb, labels, palette, num_classes=num_classes)
    for name, array in outputs.items():
        Image.fromarray(array).save(os.path.join(save_dir, name))
    return list(outputs)


def run_inference(
    paths, predictor, save_dir, *, palette='cityscapes', with_overlay=False, stream=None
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
            write_outputs(
                save_dir, stems[path], rgb, labels, palette, predictor.num_classes, with_overlay
            )
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


def main(argv):
    del argv
    paths = find_images(FLAGS.img_path)
    predictor = make_predictor(
        FLAGS.restore_from, FLAGS.model, FLAGS.num_classes, FLAGS.filter_scale
    )
    start = time.perf_counter()
    done, failed = run_inference(
        paths, predictor, FLAGS.save_dir, palette=FLAGS.palette, with_overlay=FLAGS.overlay
    )
    total = time.perf_counter() - start
    if done:
        times = list(done.values())
        median = statistics.median(times)
        print(
            f'{len(done)} image(s) segmented in {total:.1f} s (median {median:.0f} '
            f'ms/image, first {times[0]:.0f} ms incl. tracing); wrote *_color.png, '
            f'*_labelTrainIds.png{", *_overlay.png" if FLAGS.overlay else ""} to '
            f'{FLAGS.save_dir}/'
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
        'restore_from', None, '.npy, TF checkpoint (directory or prefix) or exported SavedModel dir'
    )
    flags.DEFINE_string('save_dir', 'output/', 'where to write the PNGs')
    flags.DEFINE_enum(
        'palette',
        'cityscapes',
        ['cityscapes', 'original'],
        "official Cityscapes colours or the original repository's table",
    )
    flags.DEFINE_bool('overlay', False, 'also write <stem>_overlay.png (colours over the photo)')
    cli.define_model_flags()
    cli.run(main)
