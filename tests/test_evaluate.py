"""Evaluation metrics and the evaluate CLI, checked against an independent NumPy count."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from icnet_tf.metrics import confusion_matrix, scores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)


def test_scores_hand_computed():
    cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])  # class 2 absent from labels and predictions
    iou, miou, acc = scores(cm)
    np.testing.assert_allclose(iou[:2], [3 / 4, 2 / 3])
    assert np.isnan(iou[2])
    assert miou == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert acc == pytest.approx(5 / 6)


def test_confusion_matrix_ignores_and_counts():
    label = np.array([[0, 1, 255], [2, 2, 7]])
    pred = np.array([[0, 2, 1], [2, 0, 1]])
    cm = confusion_matrix(pred, label, 3, 255)
    want = np.zeros((3, 3), int)
    for lab, p in [(0, 0), (1, 2), (2, 2), (2, 0)]:  # 255 and the out-of-range 7 are skipped
        want[lab, p] += 1
    np.testing.assert_array_equal(cm, want)


@pytest.mark.slow
def test_evaluate_cli_matches_numpy_on_saved_predictions(tmp_path):
    from converters.tf_checkpoint import save_weights_checkpoint
    from data import toycity
    from icnet_tf import ICNet_BN

    toy = tmp_path / 'toy'
    toycity.generate(
        str(toy),
        num_train=1,
        num_val=3,
        height=200,
        width=300,
        num_videos_train=0,
        num_videos_val=0,
        seed=5,
    )
    save_weights_checkpoint(ICNet_BN(num_classes=19, seed=4).build(), str(tmp_path / 'w'))
    preds = tmp_path / 'preds'
    r = subprocess.run(
        [
            sys.executable,
            '-m',
            'icnet_tf.evaluate',
            '--data_list',
            str(toy / 'list' / 'val.txt'),
            '--data_dir',
            str(toy),
            '--restore_from',
            str(tmp_path / 'w'),
            '--save_dir',
            str(preds),
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    metrics = json.load(open(preds / 'metrics.json'))
    # independent count: joint histogram of (label, prediction) over non-ignored pixels
    hist = np.zeros((19, 19))
    for line in open(toy / 'list' / 'val.txt'):
        img_rel, lab_rel = line.split()
        label = np.asarray(Image.open(toy / lab_rel)).astype(int)
        stem = os.path.splitext(os.path.basename(img_rel))[0]
        pred = np.asarray(Image.open(preds / f'{stem}_trainIds.png')).astype(int)
        assert pred.shape == label.shape
        keep = label != 255
        hist += np.histogram2d(label[keep], pred[keep], bins=19, range=[[0, 19], [0, 19]])[0]
    np.testing.assert_array_equal(np.load(preds / 'confusion_matrix.npy'), hist)
    inter = np.diag(hist)
    union = hist.sum(0) + hist.sum(1) - inter
    want = np.mean(inter[union > 0] / union[union > 0])
    assert metrics['mIoU'] == pytest.approx(want)
    assert f'{"mIoU":>14s}: {want * 100:6.2f}' in r.stdout


# ------------------------------------------------------------ datasets end to end in the CLIs
TINY = ['--model', 'tests.test_models:TinyNet']


def run(module, *args, expect=0):
    r = subprocess.run(
        [sys.executable, '-m', module, *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == expect, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return r


def one_line_error(r, *fragments):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def printed(stdout, name):
    """The value (%) of a `name: value` row of the report."""
    return float(
        next(line for line in stdout.splitlines() if line.strip().startswith(f'{name}:')).split(
            ':'
        )[1]
    )


def blocks(rng, h, w, values, block=8):
    grid = rng.choice(values, (-(-h // block), -(-w // block)))
    return np.kron(grid, np.ones((block, block), int))[:h, :w]


@pytest.fixture(scope='module')
def cityscapes(tmp_path_factory):
    """A tiny official Cityscapes tree: leftImg8bit + gtFine labelIds (all 34 ids, void ones
    included) and instanceIds (for the official evaluator), 48x80 frames."""
    root = tmp_path_factory.mktemp('cityscapes')
    rng = np.random.default_rng(11)
    frames = {
        'train': [('aachen', 0), ('aachen', 1)],
        'val': [('frankfurt', 0), ('frankfurt', 1), ('lindau', 7)],
    }
    for split, items in frames.items():
        for city, n in items:
            stem = f'{city}_{n:06d}_000019'
            for top in ('leftImg8bit', 'gtFine'):
                (root / top / split / city).mkdir(parents=True, exist_ok=True)
            ids = blocks(rng, 48, 80, np.arange(34)).astype(np.uint8)
            rgb = (ids[..., None] * np.array([7, 3, 5]) + rng.integers(0, 40, (48, 80, 3))) % 256
            Image.fromarray(rgb.astype(np.uint8)).save(
                root / 'leftImg8bit' / split / city / f'{stem}_leftImg8bit.png'
            )
            Image.fromarray(ids).save(
                root / 'gtFine' / split / city / f'{stem}_gtFine_labelIds.png'
            )
            Image.fromarray(ids.astype(np.uint16)).save(
                root / 'gtFine' / split / city / f'{stem}_gtFine_instanceIds.png'
            )
    return root


@pytest.fixture(scope='module')
def trained(cityscapes, tmp_path_factory):
    """`train --data_dir ROOT --split train` (no list) on the labelIds tree, a few steps."""
    snap = tmp_path_factory.mktemp('snap')
    r = run(
        'icnet_tf.train',
        '--data_dir',
        cityscapes,
        '--split',
        'train',
        *TINY,
        '--batch_size',
        2,
        '--input_size',
        '32,32',
        '--num_steps',
        3,
        '--save_pred_every',
        3,
        '--learning_rate',
        0.1,
        '--snapshot_dir',
        snap,
    )
    assert '2 training pairs (cityscapes, 19 classes, labelIds labels)' in r.stdout
    assert json.load(open(snap / 'dataset.json')) == {'name': 'cityscapes'}
    return snap


def official_evaluation(root, results, tmp_path):
    """cityscapesScripts' csEvalPixelLevelSemanticLabeling on a results folder (as a user
    runs it: the environment variables, no arguments); its JSON export."""
    export = tmp_path / 'export'
    export.mkdir(parents=True)
    env = dict(
        ENV,
        CITYSCAPES_DATASET=str(root),
        CITYSCAPES_RESULTS=str(results),
        CITYSCAPES_EXPORT_DIR=str(export),
    )
    r = subprocess.run(
        [sys.executable, '-m', 'cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling'],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return json.load(open(export / 'resultPixelLevelSemanticLabeling.json'))


@pytest.mark.slow
def test_cityscapes_label_ids_tree_evaluates_as_the_official_evaluator_scores(
    cityscapes, trained, tmp_path
):
    """evaluate --data_dir ROOT --split val (labelIds ground truth, no list, the 1025x2049
    protocol by default) and inference --output_format labelIds on the same frames: the
    official evaluator, on either folder, gives the printed mIoU and category mIoU."""
    preds = tmp_path / 'preds'
    r = run(
        'icnet_tf.evaluate',
        '--data_dir',
        cityscapes,
        '--split',
        'val',
        '--restore_from',
        trained,
        *TINY,
        '--save_dir',
        preds,
        '--output_format',
        'labelIds',
    )
    assert 'zero-padded to 1025x2049 (the cityscapes evaluation protocol)' in r.stdout
    assert 'labelIds labels' in r.stdout
    names = sorted(os.listdir(preds))
    assert names == [
        'confusion_matrix.npy',
        'frankfurt_000000_000019_leftImg8bit_labelIds.png',
        'frankfurt_000001_000019_leftImg8bit_labelIds.png',
        'lindau_000007_000019_leftImg8bit_labelIds.png',
        'metrics.json',
    ]
    metrics = json.load(open(preds / 'metrics.json'))
    # the folder as it is: the evaluator reads its PNGs (one per frame) and nothing else
    official = official_evaluation(cityscapes, preds, tmp_path)
    assert 0.005 < official['averageScoreClasses'] < 0.9  # a real mix of hits and misses
    assert printed(r.stdout, 'mIoU') == pytest.approx(
        official['averageScoreClasses'] * 100, abs=0.01
    )
    assert metrics['mIoU'] == pytest.approx(official['averageScoreClasses'], abs=1e-9)
    assert printed(r.stdout, 'category mIoU') == pytest.approx(
        official['averageScoreCategories'] * 100, abs=0.01
    )
    for category, got in metrics['category_iou'].items():  # the 7 evaluated categories
        value = official['categoryScores'][category]
        assert (got is None and np.isnan(value)) or got == pytest.approx(value, abs=1e-9), category

    # inference on the test-set way: the images alone, the evaluation protocol, labelIds only
    out = tmp_path / 'inference'
    run(
        'icnet_tf.inference',
        '--img_path',
        f'{cityscapes}/leftImg8bit/val/*/*.png',
        '--restore_from',
        trained,
        *TINY,
        '--save_dir',
        out,
        '--output_format',
        'labelIds',
        '--protocol',
        'dataset',
    )
    assert sorted(os.listdir(out)) == names[1:4]  # one labelIds PNG per frame, nothing else
    for name in names[1:4]:
        a, b = (np.asarray(Image.open(d / name)) for d in (out, preds))
        assert np.mean(a == b) >= 0.999, name  # near-ties may round differently
    again = official_evaluation(cityscapes, out, tmp_path / 'again')
    assert printed(r.stdout, 'mIoU') == pytest.approx(again['averageScoreClasses'] * 100, abs=0.01)


@pytest.mark.slow
def test_bad_inputs_are_one_line(cityscapes, trained, tmp_path):
    common = ['--restore_from', trained, *TINY]
    # a list mixing labelIds and labelTrainIds files
    train_ids = tmp_path / 'frankfurt_000001_000019_gtFine_labelTrainIds.png'
    Image.fromarray(np.zeros((48, 80), np.uint8)).save(train_ids)
    mixed = tmp_path / 'mixed.txt'
    mixed.write_text(
        'leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png '
        'gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png\n'
        f'leftImg8bit/val/frankfurt/frankfurt_000001_000019_leftImg8bit.png {train_ids}\n'
    )
    r = run('icnet_tf.evaluate', '--data_list', mixed, '--data_dir', cityscapes, *common, expect=1)
    one_line_error(
        r, str(train_ids), 'holds trainIds labels', 'labelIds', 'use one encoding per list'
    )
    # a tree with an image whose label is missing
    broken = tmp_path / 'broken'
    for rel in (
        'leftImg8bit/val/ulm/ulm_000000_000019_leftImg8bit.png',
        'leftImg8bit/val/ulm/ulm_000001_000019_leftImg8bit.png',
        'gtFine/val/ulm/ulm_000000_000019_gtFine_labelIds.png',
    ):
        (broken / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(broken / rel)
    r = run(
        'icnet_tf.train',
        '--data_dir',
        broken,
        '--split',
        'val',
        *TINY,
        '--snapshot_dir',
        tmp_path / 's',
        expect=1,
    )
    one_line_error(
        r, 'ulm_000001_000019_leftImg8bit.png: no label', 'ulm_000001_000019_gtFine_labelIds.png'
    )
    # a preset and a flag that contradict it
    r = run(
        'icnet_tf.evaluate',
        '--data_dir',
        cityscapes,
        '--split',
        'val',
        *common,
        '--dataset',
        'ade20k',
        '--num_classes',
        19,
        expect=1,
    )
    one_line_error(r, '--dataset ade20k has 150 classes but --num_classes is 19')
    # an --input_size smaller than the images (48x80)
    r = run(
        'icnet_tf.evaluate',
        '--data_dir',
        cityscapes,
        '--split',
        'val',
        *common,
        '--input_size',
        '48,64',
        '--save_dir',
        tmp_path / 'e',
        expect=1,
    )
    one_line_error(
        r, 'frankfurt_000000_000019_leftImg8bit.png: the image is 48x80', '48x64 of --input_size'
    )
    assert not (tmp_path / 'e').exists()  # refused before anything was written
    # an image that passes the header checks but does not decode: its list line is named
    image = 'leftImg8bit/val/frankfurt/frankfurt_000001_000019_leftImg8bit.png'
    label = 'gtFine/val/frankfurt/frankfurt_000001_000019_gtFine_labelIds.png'
    truncated = tmp_path / 'truncated.png'
    data = open(os.path.join(cityscapes, image), 'rb').read()
    truncated.write_bytes(data[: len(data) // 2])
    listed = tmp_path / 'truncated.txt'
    listed.write_text(f'\n{image} {label}\n{truncated} {label}\n')
    r = run('icnet_tf.evaluate', '--data_list', listed, '--data_dir', cityscapes, *common, expect=1)
    one_line_error(r, f'error: {listed}:3: {truncated}: ')


@pytest.mark.slow
def test_ade20k_tree_other_pixels_are_ignored_and_written_ids_are_one_to_150(tmp_path):
    """An ADEChallengeData2016 tree whose annotations hold 0 ("other"): training reads them
    as ignore, evaluation leaves them out, labelIds outputs are 1..150, and the mIoU is the
    original's (predictions + 1 against the stored values, stored 0 masked, IoU over the 151
    classes that occur) computed in NumPy from the written files."""
    root = tmp_path / 'ADEChallengeData2016'
    rng = np.random.default_rng(2)
    sizes = {'training': [(40, 56)], 'validation': [(40, 56), (52, 44)]}
    for split, shapes in sizes.items():
        for k, (h, w) in enumerate(shapes, 1):
            stem = f'ADE_{"train" if split == "training" else "val"}_{k:08d}'
            for top in ('images', 'annotations'):
                (root / top / split).mkdir(parents=True, exist_ok=True)
            stored = blocks(rng, h, w, np.arange(151), block=4).astype(np.uint8)
            stored[: h // 3] = 0  # a band of "other"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                root / 'images' / split / f'{stem}.jpg'
            )
            Image.fromarray(stored).save(root / 'annotations' / split / f'{stem}.png')
    snap = tmp_path / 'snap'
    r = run(
        'icnet_tf.train',
        '--dataset',
        'ade20k',
        '--data_dir',
        tmp_path,
        '--split',
        'train',
        *TINY,
        '--batch_size',
        1,
        '--input_size',
        '32,32',
        '--num_steps',
        2,
        '--save_pred_every',
        2,
        '--snapshot_dir',
        snap,
    )
    assert '(ade20k, 150 classes, ade labels)' in r.stdout
    preds = tmp_path / 'preds'
    # no --dataset: the one recorded next to the checkpoint
    r = run(
        'icnet_tf.evaluate',
        '--data_dir',
        root,
        '--split',
        'val',
        '--restore_from',
        snap,
        *TINY,
        '--save_dir',
        preds,
        '--output_format',
        'labelIds,color',
    )
    assert 'resized to 480x480, align_corners (the ade20k evaluation protocol)' in r.stdout
    hist = np.zeros((151, 151))
    for k, (h, w) in enumerate(sizes['validation'], 1):
        stem = f'ADE_val_{k:08d}'
        pred = np.asarray(Image.open(preds / f'{stem}_labelIds.png')).astype(int)
        assert pred.shape == (h, w) and pred.min() >= 1 and pred.max() <= 150
        assert np.asarray(Image.open(preds / f'{stem}_color.png')).shape == (h, w, 3)
        stored = np.asarray(Image.open(root / 'annotations' / 'validation' / f'{stem}.png')).astype(
            int
        )
        keep = stored != 0
        hist += np.histogram2d(stored[keep], pred[keep], bins=151, range=[[0, 151], [0, 151]])[0]
    inter = np.diag(hist)
    union = hist.sum(0) + hist.sum(1) - inter
    want = np.mean(inter[union > 0] / union[union > 0])  # tf.metrics.mean_iou's mean
    assert union[0] == 0  # "other" is neither a label nor a prediction
    assert json.load(open(preds / 'metrics.json'))['mIoU'] == pytest.approx(want, abs=1e-12)
    assert printed(r.stdout, 'mIoU') == pytest.approx(want * 100, abs=0.005)
