"""`python -m icnet_tf.inference`: files written, image modes, bad inputs, palettes, and results
equal to `predict.Segmenter` in-process."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from converters.errors import UserError
from icnet_tf import ICNet_BN
from icnet_tf.datasets import others
from icnet_tf.inference import find_images, output_stems
from icnet_tf.palette import CITYSCAPES, ORIGINAL, colorize, overlay
from icnet_tf.predict import Segmenter, read_image
from tests.golden.seeded import seeded_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 5

# cityscapesScripts helpers/labels.py, trainIds 0..18, (name, colour) verbatim.
CITYSCAPES_SCRIPTS = [
    ('road', (128, 64, 128)),
    ('sidewalk', (244, 35, 232)),
    ('building', (70, 70, 70)),
    ('wall', (102, 102, 156)),
    ('fence', (190, 153, 153)),
    ('pole', (153, 153, 153)),
    ('traffic light', (250, 170, 30)),
    ('traffic sign', (220, 220, 0)),
    ('vegetation', (107, 142, 35)),
    ('terrain', (152, 251, 152)),
    ('sky', (70, 130, 180)),
    ('person', (220, 20, 60)),
    ('rider', (255, 0, 0)),
    ('car', (0, 0, 142)),
    ('truck', (0, 0, 70)),
    ('bus', (0, 60, 100)),
    ('train', (0, 80, 100)),
    ('motorcycle', (0, 0, 230)),
    ('bicycle', (119, 11, 32)),
]


def run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, '-m', 'icnet_tf.inference', *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith('error:')]


@pytest.fixture(scope='module')
def weights_npy(tmp_path_factory):
    net = ICNet_BN(num_classes=NUM_CLASSES).build()
    path = str(tmp_path_factory.mktemp('weights') / 'seeded_bn.npy')
    np.save(path, seeded_weights(net.param_shapes(), seed=0), allow_pickle=True)
    return path


@pytest.fixture(scope='module')
def seeded_net(weights_npy):
    net = ICNet_BN(num_classes=NUM_CLASSES)
    net.load(weights_npy, skip=('sub4_out', 'sub24_out'), verbose=False)
    return net


# name -> (PIL mode, H, W); sizes differ, one needs more than the 193x193 minimum
IMAGES = {
    'gray.png': ('L', 70, 90),
    'rgba.png': ('RGBA', 64, 64),
    'deep16.png': ('I;16', 50, 120),
    'photo.jpg': ('RGB', 200, 230),
    'pal.png': ('P', 40, 33),
}


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for name, (mode, h, w) in IMAGES.items():
        if mode == 'L':
            img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), 'L')
        elif mode == 'RGBA':
            img = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), 'RGBA')
        elif mode == 'I;16':
            img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
        elif mode == 'P':
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert('P')
        else:
            yy, xx = np.mgrid[0:h, 0:w]
            rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1)
            img = Image.fromarray(rgb.astype(np.uint8))
        img.save(folder / name)
        assert Image.open(folder / name).mode == mode
    (folder / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'not really a png' * 4)
    (folder / 'notes.txt').write_text('not an image: ignored by the folder scan')
    return folder


@pytest.fixture(scope='module')
def folder_run(image_folder, weights_npy, tmp_path_factory):
    out = tmp_path_factory.mktemp('out')
    done = run_cli(
        '--img_path',
        str(image_folder),
        '--restore_from',
        weights_npy,
        '--num_classes',
        str(NUM_CLASSES),
        '--save_dir',
        str(out),
        '--overlay',
    )
    return done, out


def test_folder_of_mixed_images_writes_every_output_at_the_input_size(folder_run):
    done, out = folder_run
    assert done.returncode == 1, done.stderr  # the corrupt file fails the run...
    for name, (_, h, w) in IMAGES.items():  # ...but every good image is written
        stem = os.path.splitext(name)[0]
        colour = np.asarray(Image.open(out / f'{stem}_color.png'))
        with Image.open(out / f'{stem}_trainIds.png') as img:
            assert img.mode == 'L'
            labels = np.asarray(img)
        over = np.asarray(Image.open(out / f'{stem}_overlay.png'))
        assert colour.shape == (h, w, 3) and labels.shape == (h, w) and over.shape == (h, w, 3)
        assert labels.max() < NUM_CLASSES
        # --num_classes 5 and no --dataset: a dataset of its own, in the generated colours
        np.testing.assert_array_equal(colour, others(NUM_CLASSES).palette[labels])
    written = sorted(os.listdir(out))
    assert len(written) == 3 * len(IMAGES) and not any('corrupt' in n for n in written)


def test_corrupt_file_is_one_clear_line_in_the_summary(folder_run):
    done, _ = folder_run
    errors = error_lines(done.stderr)
    corrupt = [line for line in errors if 'corrupt.png' in line]
    assert len(corrupt) == 1 and 'not a readable image' in corrupt[0], done.stderr
    assert any('1 of 6 image(s) failed' in line for line in errors), done.stderr
    assert 'Traceback' not in done.stderr
    assert 'corrupt.png: skipped' in done.stdout


def test_results_equal_the_segmenter_in_process(folder_run, image_folder, seeded_net):
    _, out = folder_run
    segmenter = Segmenter(seeded_net, compiled=False)
    for name in IMAGES:
        rgb = read_image(str(image_folder / name))
        expected = segmenter(rgb)
        got = np.asarray(Image.open(out / f'{os.path.splitext(name)[0]}_trainIds.png'))
        # The CLI's tf.function uses reduce_retracing (run-time shapes after the second size):
        # equal up to float rounding, so allow the odd pixel at a near-tie.
        assert np.mean(got == expected) >= 0.999, name
        over = np.asarray(Image.open(out / f'{os.path.splitext(name)[0]}_overlay.png'))
        palette = others(NUM_CLASSES).palette
        np.testing.assert_array_equal(over, overlay(rgb, got, palette, num_classes=NUM_CLASSES))


def test_missing_path_and_missing_flag_are_one_line_each(tmp_path):
    missing = tmp_path / 'nope.png'
    for args, needle in (
        (['--img_path', str(missing)], 'nope.png: no such file or directory'),
        ([], '--img_path is required'),
    ):
        done = run_cli(*args, '--save_dir', str(tmp_path / 'out'))
        assert done.returncode == 1
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith('error:') and needle in lines[0], done.stderr


def test_find_images(image_folder, tmp_path):
    found = find_images(str(image_folder))
    assert [os.path.basename(p) for p in found] == sorted(list(IMAGES) + ['corrupt.png'])
    assert find_images(str(image_folder / '*.png')) == [p for p in found if p.endswith('.png')]
    with pytest.raises(UserError, match='matches no files'):
        find_images(str(tmp_path / '*.jpg'))
    with pytest.raises(UserError, match='holds no images'):
        find_images(str(tmp_path))
    assert output_stems(['a/x.png', 'a/x.jpg', 'a/y.png', 'b/y.png']) == {
        'a/x.png': 'x.png',
        'a/x.jpg': 'x.jpg',
        'a/y.png': 'y.png',
        'b/y.png': 'y.png_2',
    }


def test_original_palette_and_random_weights(tmp_path, image_folder):
    done = run_cli(
        '--img_path',
        str(image_folder / 'pal.png'),
        '--num_classes',
        '19',
        '--save_dir',
        str(tmp_path),
        '--palette',
        'original',
    )
    assert done.returncode == 0, done.stderr
    assert 'RANDOM weights' in done.stderr  # no --restore_from: said clearly
    labels = np.asarray(Image.open(tmp_path / 'pal_trainIds.png'))
    colour = np.asarray(Image.open(tmp_path / 'pal_color.png'))
    assert labels.shape == IMAGES['pal.png'][1:]
    np.testing.assert_array_equal(colour, ORIGINAL[labels])


def test_cityscapes_palette_is_the_official_table():
    assert [tuple(int(v) for v in c) for c in CITYSCAPES] == [c for _, c in CITYSCAPES_SCRIPTS]
    assert tuple(CITYSCAPES[0]) == (128, 64, 128)  # road
    assert tuple(CITYSCAPES[10]) == (70, 130, 180)  # sky
    assert tuple(CITYSCAPES[11]) == (220, 20, 60)  # person


def test_original_palette_is_the_off_by_one_table():
    assert tuple(ORIGINAL[2]) == (69, 69, 69)  # building (official 70, 70, 70)
    assert tuple(ORIGINAL[10]) == (69, 129, 180)  # sky (official 70, 130, 180)
    assert tuple(ORIGINAL[0]) == (128, 64, 128)  # road is the same
    differ = [i for i in range(19) if tuple(ORIGINAL[i]) != tuple(CITYSCAPES[i])]
    assert differ and all(
        np.abs(ORIGINAL[i].astype(int) - CITYSCAPES[i]).max() == 1 for i in differ
    )
    labels = np.array([[2, 10], [255, 0]])
    np.testing.assert_array_equal(
        colorize(labels, 'original'), [[(69, 69, 69), (69, 129, 180)], [(0, 0, 0), (128, 64, 128)]]
    )


def test_save_dir_that_is_the_input_folder_is_refused(tmp_path):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / 'a.png')
    done = run_cli('--img_path', str(tmp_path), '--save_dir', str(tmp_path))
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'is the folder of the input' in lines[0], done.stderr
    assert os.listdir(tmp_path) == ['a.png']


def test_a_folder_scan_skips_what_the_tools_wrote(tmp_path):
    for name in ('a.png', 'a_trainIds.png', 'a_labelIds.png', 'a_color.png', 'a_overlay.png',
                 'old_labelTrainIds.png', 'b.jpg'):  # fmt: skip
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name)
    assert [os.path.basename(p) for p in find_images(str(tmp_path))] == ['a.png', 'b.jpg']
    assert [os.path.basename(p) for p in find_images(str(tmp_path / 'a*.png'))] == ['a.png']
    assert find_images(str(tmp_path / 'a_color.png')) == [str(tmp_path / 'a_color.png')]
    for name in ('a.png', 'b.jpg'):
        os.remove(tmp_path / name)
    with pytest.raises(UserError, match='5 files named like its outputs skipped'):
        find_images(str(tmp_path))


def test_a_folder_is_read_in_natural_order(tmp_path):
    """p2 before p10, as DFF inference orders frames (not p1, p10, p11, p2)."""
    for name in ('p10.png', 'p2.png', 'p1.png', 'p11.png'):
        (tmp_path / name).write_bytes(b'')
    names = [os.path.basename(p) for p in find_images(str(tmp_path))]
    assert names == ['p1.png', 'p2.png', 'p10.png', 'p11.png']
    names = [os.path.basename(p) for p in find_images(str(tmp_path / 'p*.png'))]
    assert names == ['p1.png', 'p2.png', 'p10.png', 'p11.png']
