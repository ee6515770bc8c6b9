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
