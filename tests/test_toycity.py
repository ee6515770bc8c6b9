"""Tests for the toy-city synthetic dataset generator (data/toycity.py)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data import toycity as tc
from tests.memcap import MAX_RSS_MB, run_capped

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 96, 192
REQUIRED = {'road', 'sidewalk', 'building', 'sky', 'vegetation', 'pole', 'car', 'person'}
VALID = set(tc.USED_TRAIN_IDS) | {tc.IGNORE}


def _rng(seed):
    return np.random.default_rng(seed)


def _read(out_dir, rel):
    return np.asarray(Image.open(os.path.join(out_dir, rel)))


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('toycity'))
    res = tc.generate(
        out,
        num_train=4,
        num_val=2,
        height=H,
        width=W,
        num_videos_train=2,
        num_videos_val=1,
        video_frames=4,
        seed=3,
        num_workers=1,
    )
    return out, res


SEQUENCE_SEEDS = (8, 20)  # 8: three cars, ego hood; 20: fast pan


@pytest.fixture(scope='module', params=SEQUENCE_SEEDS)
def sequence(request):
    return tc.render_sequence(_rng(request.param), 128, 256, 12)


def test_class_names_are_cityscapes_train_ids():
    assert len(tc.CLASS_NAMES) == 19
    assert (
        tc.CLASS_NAMES[0] == 'road' and tc.CLASS_NAMES[10] == 'sky' and tc.CLASS_NAMES[13] == 'car'
    )
    assert REQUIRED <= {tc.CLASS_NAMES[i] for i in tc.USED_TRAIN_IDS}


def test_render_scene_is_deterministic():
    img, lbl = tc.render_scene(_rng(7), H, W)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert lbl.shape == (H, W) and lbl.dtype == np.uint8
    img2, lbl2 = tc.render_scene(_rng(7), H, W)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lbl, lbl2)
    img3, lbl3 = tc.render_scene(_rng(8), H, W)
    assert not np.array_equal(img, img3) and not np.array_equal(lbl, lbl3)


def test_scenes_cover_classes_with_little_ignore():
    seen, ignore = set(), []
    for seed in range(10):
        img, lbl = tc.render_scene(_rng([5, seed]), 128, 256)
        values = set(np.unique(lbl).tolist())
        assert values <= VALID, values - VALID
        seen |= values
        ignore.append(np.mean(lbl == tc.IGNORE))
        assert img.std() > 15  # not a flat image
        for cls in (tc.ROAD, tc.BUILDING):  # texture and noise inside a class
            assert img[lbl == cls].std() > 4
    assert REQUIRED <= {tc.CLASS_NAMES[i] for i in seen - {tc.IGNORE}}
    assert max(ignore) < 0.08 and np.mean(ignore) < 0.05


def test_sizes_are_configurable_and_checked():
    img, lbl = tc.render_scene(_rng(1), 64, 100)
    assert img.shape == (64, 100, 3) and lbl.shape == (64, 100)
    with pytest.raises(ValueError, match='height'):
        tc.render_scene(_rng(1), 32, 100)


def test_list_files_and_layout(dataset):
    out, res = dataset
    expected = {'train': 4, 'val': 2, 'video_train': 2 * 4, 'video_val': 1 * 4}
    for name, count in expected.items():
        path = res[f'{name}_list']
        assert path == os.path.join(out, 'list', f'{name}.txt')
        lines = open(path).read().splitlines()
        assert len(lines) == count
        for line in lines:
            image_rel, label_rel = line.split(' ')
            assert not os.path.isabs(image_rel) and not os.path.isabs(label_rel)
            if name.startswith('video'):
                split = name[len('video_') :]
                pattern = (
                    rf'leftImg8bit_sequence/{split}/toycity/'
                    rf'toycity_\d{{6}}_\d{{6}}_leftImg8bit\.png'
                )
                assert re.fullmatch(pattern, image_rel)
                assert label_rel == image_rel.replace(
                    'leftImg8bit_sequence', 'gtFine_sequence'
                ).replace('_leftImg8bit.png', '_gtFine_labelTrainIds.png')
            else:
                pattern = rf'leftImg8bit/{name}/toycity/toycity_\d{{6}}_000019_leftImg8bit\.png'
                assert re.fullmatch(pattern, image_rel)
                assert label_rel == image_rel.replace('leftImg8bit', 'gtFine', 1).replace(
                    '_leftImg8bit.png', '_gtFine_labelTrainIds.png'
                )
            image = Image.open(os.path.join(out, image_rel))
            label = Image.open(os.path.join(out, label_rel))
            assert image.mode == 'RGB' and label.mode == 'L'
            assert image.size == label.size == (W, H)
            values = np.asarray(label)
            assert values.dtype == np.uint8 and values.ndim == 2
            assert set(np.unique(values).tolist()) <= VALID


def test_generate_matches_api_and_is_deterministic(dataset, tmp_path):
    out, _ = dataset
    # The files are exactly what the API renders from the documented per-sample seed.
    img, lbl = tc.render_scene(np.random.default_rng([3, 0, 1]), H, W)
    np.testing.assert_array_equal(_read(out, tc.scene_paths('train', 1)[0]), img)
    np.testing.assert_array_equal(_read(out, tc.scene_paths('train', 1)[1]), lbl)
    # Same seed -> byte-identical files (here: a smaller run shares the first samples).
    again = str(tmp_path / 'again')
    tc.generate(
        again,
        num_train=2,
        num_val=1,
        height=H,
        width=W,
        num_videos_train=1,
        num_videos_val=0,
        video_frames=4,
        seed=3,
        num_workers=1,
    )
    for rel in (
        open(os.path.join(again, 'list', 'train.txt')).read().split()
        + open(os.path.join(again, 'list', 'video_train.txt')).read().split()
    ):
        with open(os.path.join(out, rel), 'rb') as a, open(os.path.join(again, rel), 'rb') as b:
            assert a.read() == b.read(), rel
    other = str(tmp_path / 'other')
    tc.generate(
        other,
        num_train=1,
        num_val=0,
        height=H,
        width=W,
        num_videos_train=0,
        num_videos_val=0,
        seed=4,
    )
    rel = tc.scene_paths('train', 0)[0]
    assert not np.array_equal(_read(out, rel), _read(other, rel))


def test_videos_json(dataset):
    out, res = dataset
    meta = json.load(open(res['videos_json']))
    seqs = meta['sequences']
    assert [(s['split'], s['sequence']) for s in seqs] == [('train', 0), ('train', 1), ('val', 0)]
    listed = open(res['video_train_list']).read().split()
    assert listed[0::2] == seqs[0]['images'] + seqs[1]['images']
    assert listed[1::2] == seqs[0]['labels'] + seqs[1]['labels']
    for s in seqs:
        assert s['num_frames'] == len(s['images']) == len(s['camera_dx']) == len(s['camera_x']) == 4
        assert (s['height'], s['width']) == (H, W)
        assert all(len(o['track']) == 4 for o in s['objects'])


@pytest.mark.parametrize('seed', SEQUENCE_SEEDS)
def test_render_sequence_is_deterministic(seed):
    frames, labels, meta = tc.render_sequence(_rng(seed), 128, 256, 12)
    assert frames.shape == (12, 128, 256, 3) and labels.shape == (12, 128, 256)
    assert frames.dtype == labels.dtype == np.uint8
    frames2, labels2, meta2 = tc.render_sequence(_rng(seed), 128, 256, 12)
    np.testing.assert_array_equal(frames, frames2)
    np.testing.assert_array_equal(labels, labels2)
    assert json.dumps(meta) == json.dumps(meta2)


def _object_mask(meta, t, shape, dx=0):
    """Pixels of frame t covered by a moving object's box, shifted by -dx columns."""
    mask = np.zeros(shape, bool)
    for o in meta['objects']:
        box = o['track'][t]['bbox']
        if box is not None:
            x0, y0, x1, y1 = box
            mask[max(y0, 0) : max(y1, 0), max(x0 - dx, 0) : max(x1 - dx, 0)] = True
    return mask


def test_background_moves_exactly_with_camera(sequence):
    frames, labels, meta = sequence
    T, Hs, Ws = labels.shape
    assert meta['camera_x'][0] >= 0 and np.all(np.diff(meta['camera_x']) == meta['camera_dx'][1:])
    assert any(meta['camera_dx'][1:])
    cols = np.arange(Ws)
    for t in range(T - 1):
        dx = meta['camera_dx'][t + 1]
        # frame[t + 1][y, x] == frame[t][y, x + dx] on static pixels.
        ok = np.broadcast_to((cols + dx >= 0) & (cols + dx < Ws), (Hs, Ws)).copy()
        ok[meta['hood_top'] :] = False
        ok &= ~_object_mask(meta, t + 1, (Hs, Ws)) & ~_object_mask(meta, t, (Hs, Ws), dx)
        assert ok.mean() > 0.5
        src = np.clip(cols + dx, 0, Ws - 1)
        np.testing.assert_array_equal(labels[t + 1][ok], labels[t][:, src][ok])
        np.testing.assert_array_equal(frames[t + 1][ok], frames[t][:, src][ok])
        if dx:  # and the check is sharp: a wrong shift does not match
            wrong = np.clip(cols + dx + 1, 0, Ws - 1)
            assert np.mean(frames[t + 1][ok] != frames[t][:, wrong][ok]) > 0.3


def _check_tracks(labels, meta):
    """Check recorded tracks against the projection and the labels; return #(object, frame) seen."""
    T, Hs, Ws = labels.shape
    cam = meta['camera']
    checked = 0
    for o in meta['objects']:
        vx, vz = o['velocity']
        assert (vx, vz) != (0, 0) and o['class_name'] == tc.CLASS_NAMES[o['class_id']]
        for t, p in enumerate(o['track']):
            assert p['frame'] == t
            assert p['X'] == pytest.approx(o['track'][0]['X'] + vx * t, abs=1e-3)
            assert p['Z'] == pytest.approx(o['track'][0]['Z'] + vz * t, abs=1e-3)
            if p['bbox'] is None:  # passed behind the camera
                continue
            u = cam['vanishing_x_panorama'] + cam['focal'] * p['X'] / p['Z'] - meta['camera_x'][t]
            assert p['u'] == pytest.approx(u, abs=0.05)
            assert p['v'] == pytest.approx(
                cam['horizon'] + cam['focal'] * cam['height_m'] / p['Z'], abs=0.05
            )
            x0, y0, x1, y1 = p['bbox']
            others = [q['track'][t]['bbox'] for q in meta['objects'] if q is not o]
            cx = meta['camera_x'][t]  # static objects in front may hide part of the object
            others += [
                [b[0] - cx, b[1], b[2] - cx, b[3]]
                for q in meta['static_objects']
                if q['Z'] < p['Z']
                for b in [q['bbox_panorama']]
            ]
            inside = x0 >= 0 and y0 >= 0 and x1 <= Ws and y1 <= Hs and (y1 - y0) >= 8
            alone = all(
                b is None or b[0] >= x1 or b[2] <= x0 or b[1] >= y1 or b[3] <= y0 for b in others
            )
            if not (p['visible'] and inside and alone):
                continue
            region = labels[t, y0:y1, x0:x1] == o['class_id']
            assert region.mean() > 0.15, (o['id'], t, region.mean())
            centre = x0 + np.nonzero(region)[1].mean() + 0.5
            assert abs(centre - p['u']) < 0.25 * (x1 - x0), (o['id'], t, centre, p['u'])
            checked += 1
    return checked


def test_moving_objects_move_as_recorded(sequence):
    frames, labels, meta = sequence
    assert meta['objects'], 'expected moving objects'
    assert _check_tracks(labels, meta) >= len(labels)


def _cli(args, cwd):
    return subprocess.run(
        [sys.executable, '-m', 'data.toycity', *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_generates_dataset(tmp_path):
    out = tmp_path / 'cli'
    proc = _cli(
        [
            '--out_dir',
            str(out),
            '--num_train',
            '2',
            '--num_val',
            '1',
            '--height',
            '64',
            '--width',
            '128',
            '--num_videos_train',
            '1',
            '--num_videos_val',
            '0',
            '--video_frames',
            '3',
            '--seed',
            '5',
        ],
        ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'toycity: wrote 2 train + 1 val scenes' in proc.stdout
    assert len(open(out / 'list' / 'train.txt').read().splitlines()) == 2
    assert len(open(out / 'list' / 'video_train.txt').read().splitlines()) == 3
    assert (out / 'videos.json').exists()
    # A second run into the same (now non-empty) folder is refused and changes nothing.
    before = {p: p.read_bytes() for p in out.rglob('*') if p.is_file()}
    again = _cli(['--out_dir', str(out), '--num_train', '1', '--num_val', '0'], ROOT)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f'error: {out}: exists and is not empty (its lists, videos.json and images would be '
        'replaced): choose a new --out_dir or pass --overwrite'
    ]
    assert {p: p.read_bytes() for p in out.rglob('*') if p.is_file()} == before


@pytest.mark.parametrize(
    'args, needle',
    [
        (['--height', '10'], 'height'),
        (['--width=abc'], 'width'),
        (['--num_train', '-1'], 'num_train'),
        ([], 'out_dir'),
    ],
)
def test_cli_bad_flags_fail_with_one_line(tmp_path, args, needle):
    out = ['--out_dir', str(tmp_path / 'bad')] if needle != 'out_dir' else []
    proc = _cli(out + args, ROOT)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and 'Traceback' not in proc.stderr, proc.stderr
    assert not (tmp_path / 'bad').exists()


# ----------------------------------------------------------------------------------- limits
@pytest.mark.parametrize(
    'args, expect',
    [
        # 10**9 scenes of 4096x4096
        (['--height', '4096', '--width', '4096', '--num_train', '1000000000'],
         '--max_megapixels is 2048: 1000000050 scenes'),
        # one video of 100000 frames of 4096x4096 (pixel limit raised out of the way)
        (['--height', '4096', '--width', '4096', '--num_train', '0', '--num_val', '0',
          '--num_videos_train', '1', '--num_videos_val', '0', '--video_frames', '100000',
          '--max_megapixels', '1e12'],
         '--max_memory_gb is 4: one 4096x4096 video of 100000 frames needs about'),
        # 10**8 small scenes: the lists alone would take 100 GB
        (['--height', '64', '--width', '64', '--num_train', '100000000',
          '--max_megapixels', '1e12'],
         'the lists and tracks of 100000410 images need about 102 GB'),
        # four workers each rendering a 2 GB scene
        (['--num_workers', '4', '--height', '4096', '--width', '4096', '--num_train', '2',
          '--num_val', '0', '--num_videos_train', '0', '--num_videos_val', '0'],
         'at most 1 fit'),
    ],
    ids=['pixels', 'video_frames', 'image_count', 'workers'],
)  # fmt: skip
def test_cli_refuses_absurd_sizes_before_allocating(tmp_path, args, expect):
    """Under a 2 GB address-space cap: one line, exit status 2, nothing written, small peak."""
    out = tmp_path / 'out'
    result = run_capped(['-m', 'data.toycity', '--out_dir', str(out), *args])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result
    assert lines[0].startswith('error: ') and expect in lines[0], lines[0]
    assert result.peak_rss_mb < MAX_RSS_MB, result
    assert not out.exists()


def test_limits_are_checked_and_can_be_raised():
    big_video = (0, 0, 4096, 4096, 1, 0, 30, 0)  # num_train .. seed
    with pytest.raises(ValueError, match='max_memory_gb is 4: one 4096x4096 video of 30 frames'):
        tc.validate_config(tc.Run(*big_video))
    assert tc.validate_config(tc.Run(*big_video, max_memory_gb=8)) == 1
    many = (100000, 0, 256, 512, 0, 0, 30, 0)
    with pytest.raises(ValueError, match='max_megapixels is 2048: 100000 scenes'):
        tc.validate_config(tc.Run(*many))
    assert 1 <= tc.validate_config(tc.Run(*many, max_megapixels=20000)) <= 4
    with pytest.raises(ValueError, match='at most 1 fit'):
        tc.validate_config(tc.Run(2, 0, 4096, 4096, 0, 0, 30, 0, num_workers=2))
    # the automatic worker count is lowered to what fits: one 2.1 GB scene at a time in 4 GB
    assert tc.validate_config(tc.Run(100, 0, 4096, 4096, 0, 0, 30, 0)) == 1
    with pytest.raises(ValueError, match='max_memory_gb is 4: a 64x64 video of 1000000000'):
        tc.render_sequence(_rng(0), 64, 64, 10**9)  # refused before its camera path is drawn
    with pytest.raises(ValueError, match='max_megapixels'):
        tc.generate('/nonexistent/never-created', num_train=10**9)


_PEAK = r"""
import sys
import numpy as np
from data import toycity as tc


def hwm():
    with open('/proc/self/status') as f:
        return int(next(line.split()[1] for line in f if line.startswith('VmHWM:'))) * 1024


base, (h, w, t) = hwm(), map(int, sys.argv[1:4])
if t:
    tc.render_sequence(np.random.default_rng(8), h, w, t)
else:
    tc.render_scene(np.random.default_rng(3), h, w)
print(hwm() - base)
"""


@pytest.mark.parametrize('size', [(512, 1024, 0), (128, 256, 60), (64, 64, 400)])
def test_memory_model_bounds_the_measured_peak(size):
    """task_bytes, which the limits use, is an upper bound of the real peak, not far above it."""
    result = run_capped(['-c', _PEAK, *map(str, size)])
    assert result.returncode == 0, result
    used, model = int(result.stdout), tc.task_bytes(*size[:2], size[2] or None)
    assert model / 4 < used <= model, (used, model)
