"""The original's pre/postprocessing: check_input padding, mean/BGR, flip averaging."""

import numpy as np
import pytest
import tensorflow as tf

from icnet_tf import ICNet
from icnet_tf.network import CAFFE_BGR_MEAN as IMG_MEAN_BGR
from icnet_tf.network import caffe_bgr_input as to_network_input
from icnet_tf.predict import Segmenter, padded_size, segment


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


def test_segment_uses_the_networks_own_input_convention_and_upsampling():
    """`segment(PSPNet101(layout='mmseg'), rgb)` feeds mmseg's RGB mean/std input and resizes the
    logits with half-pixel centres (mmseg's `resize`), computed here independently in NumPy
    (it used to feed the Caffe BGR-minus-mean input to every network)."""
    from icnet_tf import PSPNet101

    net = PSPNet101(num_classes=4, layout='mmseg', blocks=(1, 1, 1, 1), width_multiplier=1 / 8)
    rgb = np.random.default_rng(7).integers(0, 256, (1, 64, 64, 3)).astype(np.uint8)
    got = segment(net, rgb)
    mean = np.array([123.675, 116.28, 103.53], np.float32)
    std = np.array([58.395, 57.12, 57.375], np.float32)
    logits = net((rgb.astype(np.float32) - mean) / std).numpy()[0]  # 64x64 needs no padding
    # Bilinear with half-pixel centres (PyTorch align_corners=False), in NumPy.
    h, w = logits.shape[:2]

    def axis(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    (y0, y1, fy), (x0, x1, fx) = axis(64, h), axis(64, w)
    rows = logits[y0] * (1 - fy)[:, None, None] + logits[y1] * fy[:, None, None]
    up = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    want = np.argmax(up, -1)
    assert np.mean(got[0] == want) >= 0.999
    # What the old path computed (Caffe input, align-corners resize) is far from it.
    from icnet_tf.network import caffe_bgr_input, resize_bilinear_align_corners

    old = resize_bilinear_align_corners(net(caffe_bgr_input(rgb)), (64, 64)).numpy()[0]
    assert np.mean(np.argmax(old, -1) == want) < 0.95


def test_read_image_refuses_huge_declared_sizes_before_decoding(tmp_path):
    """A tiny PNG declaring 12000x12000 pixels is refused from its header, with one line."""
    import struct
    import zlib

    from PIL import Image

    from converters.errors import UserError
    from icnet_tf.predict import read_image

    def chunk(kind, data):
        return (
            struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
        )

    # A 57-byte PNG whose header declares 12000x12000 gray pixels (and holds none).
    path = tmp_path / 'huge.png'
    header = struct.pack('>IIBBBBB', 12000, 12000, 8, 0, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IEND', b''))
    with pytest.raises(UserError, match=r'huge.png: 12000x12000 is 144 megapixels'):
        read_image(str(path))
    small = tmp_path / 'small.png'
    Image.new('RGB', (30, 20)).save(small)
    assert read_image(str(small), max_pixels=600).shape == (20, 30, 3)
    with pytest.raises(UserError, match='more than the limit'):
        read_image(str(small), max_pixels=599)
    # the tools' --max_image_megapixels sets the default limit (and Pillow's, when higher)
    from PIL import Image as PILImage

    from icnet_tf import predict

    saved = predict.MAX_PIXELS, PILImage.MAX_IMAGE_PIXELS
    try:
        predict.set_max_pixels(599)
        with pytest.raises(
            UserError, match=r'small.png: 30x20 is 0.0006 megapixels, more than the'
        ):
            read_image(str(small))
        predict.set_max_pixels(200e6)
        assert PILImage.MAX_IMAGE_PIXELS == 200_000_000
    finally:
        predict.MAX_PIXELS, PILImage.MAX_IMAGE_PIXELS = saved
