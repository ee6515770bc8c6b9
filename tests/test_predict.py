"""The original's pre/postprocessing: check_input padding, mean/BGR, flip averaging."""

import numpy as np
import pytest
import tensorflow as tf

from icnet_tf import ICNet
from icnet_tf.network import CAFFE_BGR_MEAN as IMG_MEAN_BGR
from icnet_tf.network import caffe_bgr_input as to_network_input
from icnet_tf.predict import Segmenter, padded_size


@pytest.mark.parametrize(
    'hw,want',
    [
        ((1024, 2048), (1024, 2048)),  # both multiples: unchanged
        ((1025, 2049), (1056, 2080)),
        ((1024, 2050), (1056, 2080)),  # the original grows BOTH sides if either is off
        ((100, 64), (128, 96)),
    ],
)
def test_padded_size_follows_check_input(hw, want):
    assert padded_size(*hw) == want
    got = padded_size(tf.constant(hw[0]), tf.constant(hw[1]))
    assert tuple(int(v) for v in got) == want


def test_network_input_is_bgr_minus_mean():
    rgb = np.array([[[10, 20, 30]]], np.uint8)
    got = to_network_input(rgb).numpy()[0, 0]
    np.testing.assert_allclose(
        got, [30 - IMG_MEAN_BGR[0], 20 - IMG_MEAN_BGR[1], 10 - IMG_MEAN_BGR[2]], atol=1e-4
    )


def test_flip_averages_the_mirrored_prediction():
    net = ICNet(num_classes=3, seed=5)
    rgb = np.random.default_rng(0).integers(0, 255, (200, 230, 3), dtype=np.uint8)
    plain = Segmenter(net, compiled=False)
    flip = Segmenter(net, flip=True, compiled=False)
    p = plain.probabilities(rgb[None]).numpy()
    m = plain.probabilities(rgb[None, :, ::-1]).numpy()[:, :, ::-1]
    np.testing.assert_allclose(flip.probabilities(rgb[None]).numpy(), (p + m) / 2, atol=1e-6)
    labels = flip(rgb)
    assert labels.shape == (200, 230) and labels.dtype == np.int32
