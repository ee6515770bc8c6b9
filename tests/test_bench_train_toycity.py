"""resolution_ceiling() of bench/train_toycity.py on label maps whose score is counted by hand."""

import numpy as np
import pytest
from PIL import Image

from bench.train_toycity import resolution_ceiling


def save(tmp_path, name, label):
    path = str(tmp_path / name)
    Image.fromarray(label.astype(np.uint8)).save(path)
    return path


def test_thin_line_on_a_sampled_column(tmp_path):
    # 8x8, stride 4: samples at rows/cols 2 and 6. A 1-px line of class 1 on column 2 is sampled,
    # so the whole 4-px wide cell column 0..3 becomes class 1.
    label = np.zeros((8, 8), np.uint8)
    label[:, 2] = 1
    ceiling = resolution_ceiling([save(tmp_path, 'a.png', label)], stride=4, num_classes=2)
    iou1 = 8 / (8 + 24)  # TP column 2; FP columns 0, 1, 3
    iou0 = 32 / (32 + 24)  # TP columns 4..7; FN columns 0, 1, 3
    assert ceiling == pytest.approx((iou0 + iou1) / 2)


def test_sizes_not_divisible_by_the_stride_and_ignore(tmp_path):
    line = np.zeros((8, 8), np.uint8)
    line[:, 2] = 1
    # 6x6: one sample (2, 2), repeated to 4x4 and edge-padded to 6x6. The class-1 pixel at
    # (1, 1) is missed; the ignore pixel at (5, 5) is skipped.
    small = np.zeros((6, 6), np.uint8)
    small[1, 1] = 1
    small[5, 5] = 255
    paths = [save(tmp_path, 'a.png', line), save(tmp_path, 'b.png', small)]
    ceiling = resolution_ceiling(paths, stride=4, num_classes=2)
    iou1 = 8 / (8 + 24 + 1)
    iou0 = (32 + 34) / (32 + 34 + 24 + 1)  # FN columns 0, 1, 3; FP the missed pixel
    assert ceiling == pytest.approx((iou0 + iou1) / 2)


def test_a_sampled_ignore_pixel_drops_its_cell(tmp_path):
    # the sample at (6, 6) is ignore: the labels of its whole 4x4 cell are not scored (a network
    # outputs something there, but the ceiling gives it the benefit of the doubt)
    label = np.zeros((8, 8), np.uint8)
    label[:, 2] = 1
    label[6, 6] = 255
    ceiling = resolution_ceiling([save(tmp_path, 'a.png', label)], stride=4, num_classes=2)
    iou1 = 8 / (8 + 24)
    iou0 = 16 / (16 + 24)  # the cell rows 4..7, cols 4..7 is dropped
    assert ceiling == pytest.approx((iou0 + iou1) / 2)
