r"""`python -m dff_tf.inference`: segment a video with Deep Feature Flow.

    python -m dff_tf.inference --frames DIR_or_GLOB --restore_from snapshots_dff/ \
        [--key_interval 5] [--save_dir dff_output] [--flownet_weights W] [--gif_width 1024]

Frames are the image files of a directory or of a glob pattern, in natural name order
(frame_2 before frame_10); all must have the size of the first readable one. The first frame
and then every --key_interval-th frame is a key frame (N_feat + N_task); the others reuse the
cached key features (FlowNetS + warp + N_task). Writes `<save_dir>/<frame name>_color.png`
(the segmentation in the colours of --dataset, default: the one recorded next to the DFF
checkpoint) and `<save_dir>/video.gif` (input | segmentation
side by side, scaled to --gif_width), and prints frames/s of key frames, propagated frames and
overall. A frame that cannot be read or has another size is skipped (the schedule goes on with
the next frame) and reported at the end, with exit status 1.
"""

import os
import time

import numpy as np
from absl import flags
from PIL import Image

from converters.errors import UserError
from dff_tf.cli import define_model_flags, define_weights_flags, model_and_dataset
from dff_tf.data import frame_paths
from dff_tf.model import VideoRunner, build_dff, check_frame_size, load_weights
from icnet_tf import cli
from icnet_tf.cli import check_save_dir
from icnet_tf.labels import check_outputs, is_own_output, write_label_png
from icnet_tf.predict import read_image

FLAGS = flags.FLAGS
GIF_FPS = 17.0  # Cityscapes' frame rate
GIF_NAME = 'video.gif'


def own_output(path):
    """A file this tool writes (`<frame>_color.png`, `video.gif`): never read back as a frame."""
    return is_own_output(path) or os.path.basename(path) == GIF_NAME


def readable_frames(paths, problems):
    """(path, uint8 RGB) of every readable frame of the first frame's size; the others are
    recorded in `problems` and skipped."""
    size = None
    for path in paths:
        try:
            image = read_image(path)
        except UserError as e:
            problems.append(str(e))
            continue
        if size is None:
            size = image.shape
        elif image.shape != size:
            problems.append(
                f'{path}: frame is {image.shape[1]}x{image.shape[0]}, the video {size[1]}x{size[0]}'
            )
            continue
        yield path, image


def side_by_side(image, colour, width):
    both = Image.fromarray(np.concatenate([image, colour], axis=1))
    if width and both.width > width:
        both = both.resize((width, max(1, round(both.height * width / both.width))), Image.BILINEAR)
    return both


def segment_video(dff, paths, *, key_interval, save_dir, spec, gif_width=1024, overwrite=False):
    """Run the schedule over `paths`, write `<frame>_color.png` (the colours of the dataset
    `spec`) and `video.gif`, each through a temporary name; an existing file this run did not
    write is replaced only with `overwrite`. Returns (runner, problems, n)."""
    runner = VideoRunner(dff, key_interval=key_interval)
    problems, gif = [], []
    features = key_frame = None
    count = 0
    for path, image in readable_frames(paths, problems):
        if count == 0:
            check_frame_size(dff, *image.shape[:2], f'{path}: frame size')
        if count % key_interval == 0:
            features, labels = runner.key_step(image)
            key_frame = image
        else:
            labels = runner.propagate_step(features, key_frame, image)
        stem = os.path.splitext(os.path.basename(path))[0]
        written = write_label_png(
            os.path.join(save_dir, stem), labels, spec, 'color', overwrite=overwrite
        )
        with Image.open(written) as colour:
            gif.append(side_by_side(image, np.asarray(colour.convert('RGB')), gif_width))
        count += 1
    if gif:
        path = os.path.join(save_dir, GIF_NAME)
        tmp = os.path.join(save_dir, f'.{GIF_NAME}.{os.getpid()}')
        gif[0].save(
            tmp,
            format='GIF',
            save_all=True,
            append_images=gif[1:],
            duration=round(1000 / GIF_FPS),
            loop=0,
        )
        os.replace(tmp, path)
    return runner, problems, count


def speed_line(runner, count, elapsed):
    speed = runner.speed()
    n = speed['samples']
    text = (
        f'{count} frames ({n["key"]} key, {n["propagate"]} propagated) in {elapsed:.1f} s; '
        f'key frames {speed["key_fps"]:.2f} frames/s'
    )
    if n['propagate']:
        text += (
            f', propagated frames {speed["propagate_fps"]:.2f} frames/s, overall at key '
            f'interval {speed["key_interval"]} {speed["overall_fps"]:.2f} frames/s'
        )
    return text + ' (medians, first call of each kind excluded: tracing)'


def main(argv):
    del argv
    paths = [p for p in frame_paths(FLAGS.frames) if not own_output(p)]
    if not paths:
        raise UserError(f'{FLAGS.frames}: holds no frames besides earlier outputs of this tool')
    check_save_dir(FLAGS.save_dir, paths)
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    check_outputs(FLAGS.save_dir, stems, ['color'], overwrite=FLAGS.overwrite)
    gif_path = os.path.join(FLAGS.save_dir, GIF_NAME)
    if os.path.lexists(gif_path) and not FLAGS.overwrite:
        raise UserError(f'{gif_path}: exists: pass --overwrite or choose another --save_dir')
    config, spec = model_and_dataset(FLAGS.restore_from, flownet_weights=FLAGS.flownet_weights)
    dff = build_dff(config)
    load_weights(dff, FLAGS.restore_from, FLAGS.flownet_weights)
    os.makedirs(FLAGS.save_dir, exist_ok=True)
    start = time.perf_counter()
    runner, problems, count = segment_video(
        dff,
        paths,
        key_interval=FLAGS.key_interval,
        save_dir=FLAGS.save_dir,
        gif_width=FLAGS.gif_width,
        spec=spec,
        overwrite=FLAGS.overwrite,
    )
    if count:
        print(speed_line(runner, count, time.perf_counter() - start))
        print(
            f'wrote {count} segmentation PNGs and video.gif to {os.path.join(FLAGS.save_dir, "")}'
        )
    if problems:
        more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
        raise UserError(f'{len(problems)} of {len(paths)} frames skipped: {problems[0]}{more}')


def define_flags():
    flags.DEFINE_string('frames', None, 'directory of frames or a glob pattern ("v/*.png")')
    define_weights_flags()
    flags.DEFINE_integer('key_interval', 5, 'a key frame every N frames', lower_bound=1)
    flags.DEFINE_string('save_dir', 'dff_output', 'where to write PNGs and video.gif')
    flags.DEFINE_bool('overwrite', False, 'replace outputs of an earlier run in --save_dir')
    flags.DEFINE_integer(
        'gif_width', 1024, 'width of the side-by-side GIF (0: full size)', lower_bound=0
    )
    flags.mark_flags_as_required(['frames'])
    define_model_flags()


if __name__ == '__main__':
    define_flags()
    cli.run(main)
