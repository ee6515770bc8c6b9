"""`python -m data.lists` and `icnet_tf.datasets.scan_pairs`: list files from tiny official
trees (Cityscapes, ADE20K) in the original's format, unmatched files reported per file."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from converters.errors import UserError
from data.lists import make_list
from icnet_tf.data import read_list
from icnet_tf.datasets import ADE20K, CITYSCAPES, others, read_tree, scan_pairs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIXEL = np.zeros((2, 4), np.uint8)


def touch(root, rel, array=PIXEL):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path) if path.endswith('.png') else open(path, 'wb').close()
    return rel


@pytest.fixture
def cityscapes(tmp_path):
    root = str(tmp_path / 'cityscapes')
    frames = {'val': [('lindau', 0), ('lindau', 1), ('munster', 5)], 'train': [('ulm', 3)]}
    for split, items in frames.items():
        for city, n in items:
            key = f'{city}/{city}_{n:06d}_000019'
            touch(root, f'leftImg8bit/{split}/{key}_leftImg8bit.png')
            touch(root, f'gtFine/{split}/{key}_gtFine_labelIds.png')
            touch(root, f'gtFine/{split}/{key}_gtFine_instanceIds.png')
            touch(root, f'gtFine/{split}/{key}_gtFine_polygons.json')
    touch(root, 'gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png')
    touch(root, 'leftImg8bit/test/bonn/bonn_000000_000019_leftImg8bit.png')
    touch(root, 'gtFine/test/bonn/bonn_000000_000019_gtFine_labelIds.png')  # placeholder
    return root


def test_cityscapes_val_pairs_in_the_original_format(cityscapes):
    pairs, problems = scan_pairs(CITYSCAPES, cityscapes, 'val')
    assert problems == []
    assert pairs == [
        (
            f'leftImg8bit/val/{c}/{c}_{n:06d}_000019_leftImg8bit.png',
            f'gtFine/val/{c}/{c}_{n:06d}_000019_gtFine_labelIds.png',
        )
        for c, n in [('lindau', 0), ('lindau', 1), ('munster', 5)]
    ]
    out, count, _ = make_list('cityscapes', cityscapes, 'val')
    assert out == os.path.join(cityscapes, 'list', 'cityscapes_val_list.txt') and count == 3
    with open(out, encoding='utf-8') as f:
        lines = f.read().splitlines()
    assert lines == [f'{a} {b}' for a, b in pairs]
    # the project's own list reader takes it as it is
    assert read_list(out, cityscapes) == [
        (os.path.join(cityscapes, a), os.path.join(cityscapes, b)) for a, b in pairs
    ]
    assert read_tree(CITYSCAPES, cityscapes, 'val') == read_list(out, cityscapes)


def test_cityscapes_test_split_lists_images_only(cityscapes, tmp_path):
    out, count, _ = make_list('cityscapes', cityscapes, 'test', str(tmp_path / 't.txt'))
    with open(out, encoding='utf-8') as f:
        assert f.read() == 'leftImg8bit/test/bonn/bonn_000000_000019_leftImg8bit.png\n'


def test_missing_pairs_reported_per_file(cityscapes, tmp_path):
    os.remove(
        os.path.join(cityscapes, 'gtFine/val/munster/munster_000005_000019_gtFine_labelIds.png')
    )
    touch(cityscapes, 'gtFine/val/lindau/lindau_000009_000019_gtFine_labelIds.png')
    pairs, problems = scan_pairs(CITYSCAPES, cityscapes, 'val')
    assert len(pairs) == 2
    assert problems == [
        'leftImg8bit/val/munster/munster_000005_000019_leftImg8bit.png: no label '
        'gtFine/val/munster/munster_000005_000019_gtFine_labelIds.png',
        'gtFine/val/lindau/lindau_000009_000019_gtFine_labelIds.png: no image '
        'leftImg8bit/val/lindau/lindau_000009_000019_leftImg8bit.png',
    ]
    out = str(tmp_path / 'val.txt')
    stream = io.StringIO()
    with pytest.raises(UserError, match='2 unmatched files'):
        make_list('cityscapes', cityscapes, 'val', out, stream=stream)
    assert stream.getvalue().splitlines() == [f'error: {p}' for p in problems]
    assert not os.path.exists(out)
    with pytest.raises(
        UserError, match=r'munster_000005_000019_leftImg8bit\.png: no label.*1 more'
    ):
        read_tree(CITYSCAPES, cityscapes, 'val')
    _, count, _ = make_list(
        'cityscapes', cityscapes, 'val', out, allow_missing=True, stream=io.StringIO()
    )
    assert count == 2 and len(open(out).read().splitlines()) == 2
    assert len(read_tree(CITYSCAPES, cityscapes, 'val', allow_missing=True)) == 2


def test_train_ids_by_flag_and_a_helpful_error_when_absent(cityscapes):
    pairs, problems = scan_pairs(CITYSCAPES, cityscapes, 'val', 'trainIds')
    assert pairs == [
        (
            'leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png',
            'gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png',
        )
    ]
    assert len(problems) == 2  # the other two frames have no labelTrainIds file
    with pytest.raises(UserError, match=r'no \*_gtFine_labelTrainIds\.png label files; found '):
        scan_pairs(CITYSCAPES, cityscapes, 'train', 'trainIds')


def test_a_tree_with_only_train_ids_is_read_without_the_flag(tmp_path):
    """The toy city (and a tree made with cityscapesScripts' createTrainIdLabelImgs alone) has
    only *_labelTrainIds.png: without --label_encoding those are paired; an encoding asked
    for and absent names the flag for the one there."""
    (tmp_path / 'leftImg8bit' / 'val' / 'c').mkdir(parents=True)
    (tmp_path / 'gtFine' / 'val' / 'c').mkdir(parents=True)
    (tmp_path / 'leftImg8bit/val/c/c_000000_000001_leftImg8bit.png').write_bytes(b'')
    (tmp_path / 'gtFine/val/c/c_000000_000001_gtFine_labelTrainIds.png').write_bytes(b'')
    pairs, problems = scan_pairs(CITYSCAPES, str(tmp_path), 'val')
    assert (
        pairs
        == [
            (
                'leftImg8bit/val/c/c_000000_000001_leftImg8bit.png',
                'gtFine/val/c/c_000000_000001_gtFine_labelTrainIds.png',
            )
        ]
        and problems == []
    )
    with pytest.raises(UserError, match=r'instead \(--label_encoding trainIds\)$'):
        scan_pairs(CITYSCAPES, str(tmp_path), 'val', 'labelIds')


def test_overwrite_needs_the_flag(cityscapes, tmp_path):
    out = tmp_path / 'val.txt'
    out.write_text('precious\n')
    with pytest.raises(UserError, match='exists .pass --overwrite'):
        make_list('cityscapes', cityscapes, 'val', str(out))
    assert out.read_text() == 'precious\n'
    make_list('cityscapes', cityscapes, 'val', str(out), overwrite=True)
    assert len(out.read_text().splitlines()) == 3
    assert sorted(os.listdir(tmp_path)) == ['cityscapes', 'val.txt']  # no temporary left


def test_bad_trees_and_splits(tmp_path, cityscapes):
    cases = [
        (lambda: scan_pairs(CITYSCAPES, str(tmp_path / 'nope'), 'val'), 'no such directory'),
        (lambda: scan_pairs(CITYSCAPES, str(tmp_path), 'val'), 'not a cityscapes tree'),
        (lambda: scan_pairs(ADE20K, cityscapes, 'test'), "no split 'test'"),
        (lambda: scan_pairs(CITYSCAPES, cityscapes, 'val', 'ade'), "no 'ade' label files"),
        (lambda: scan_pairs(others(3), cityscapes, 'val'), 'no official folder layout'),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match=message):
            call()


@pytest.mark.parametrize('nested', [False, True])
def test_ade20k_tree(tmp_path, nested):
    root = str(tmp_path / 'data')
    top = os.path.join(root, 'ADEChallengeData2016') if nested else root
    for split, folder in (('train', 'training'), ('val', 'validation')):
        for n in (2, 1):
            touch(top, f'images/{folder}/ADE_{split}_{n:08d}.jpg')
            touch(top, f'annotations/{folder}/ADE_{split}_{n:08d}.png')
    touch(top, 'images/validation/ADE_val_00000003.jpg')
    prefix = 'ADEChallengeData2016/' if nested else ''
    pairs, problems = scan_pairs(ADE20K, root, 'val')
    assert pairs == [
        (
            f'{prefix}images/validation/ADE_val_{n:08d}.jpg',
            f'{prefix}annotations/validation/ADE_val_{n:08d}.png',
        )
        for n in (1, 2)
    ]
    assert problems == [
        f'{prefix}images/validation/ADE_val_00000003.jpg: no label '
        f'{prefix}annotations/validation/ADE_val_00000003.png'
    ]
    out, count, _ = make_list('ade20k', root, 'train', str(tmp_path / 'train.txt'))
    assert open(out).read().splitlines() == [
        f'{prefix}images/training/ADE_train_{n:08d}.jpg '
        f'{prefix}annotations/training/ADE_train_{n:08d}.png'
        for n in (1, 2)
    ]


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, '-m', 'data.lists', *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli(cityscapes, tmp_path):
    out = str(tmp_path / 'val.txt')
    ok = run_cli(
        '--dataset', 'cityscapes', '--data_dir', cityscapes, '--split', 'val', '--out', out
    )
    assert ok.returncode == 0, ok.stderr
    assert f'wrote 3 lines to {out}' in ok.stdout and len(open(out).read().splitlines()) == 3
    os.remove(
        os.path.join(cityscapes, 'gtFine/val/lindau/lindau_000001_000019_gtFine_labelIds.png')
    )
    bad = run_cli('--dataset', 'cityscapes', '--data_dir', cityscapes, '--split', 'val',
                  '--out', out, '--overwrite')  # fmt: skip
    assert bad.returncode == 1
    lines = [line for line in bad.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 2, bad.stderr
    assert lines[0] == (
        'error: leftImg8bit/val/lindau/lindau_000001_000019_leftImg8bit.png: no label '
        'gtFine/val/lindau/lindau_000001_000019_gtFine_labelIds.png'
    )
    assert lines[-1].startswith('error: ') and '1 unmatched files' in lines[-1]
    assert 'Traceback' not in bad.stderr
    assert len(open(out).read().splitlines()) == 3  # the old list is untouched
