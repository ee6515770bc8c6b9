"""`icnet_tf.labels`: label images read by meaning (palette indices, 16-bit values, RGB through
the colour map, encodings by name and by value) and prediction PNGs in the official formats.

Expected values come from the cityscapesscripts package's table or are written into tiny
images by the test itself.
"""

import os
import struct
import zlib

import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image

from converters.errors import UserError
from icnet_tf.datasets import ADE20K, CITYSCAPES, COLOR, others
from icnet_tf.labels import detect_encoding, read_label, write_label_png

RNG = np.random.default_rng(7)
CS_TO_TRAIN = np.array(
    [255 if cs_labels.id2label[i].trainId in (255, -1) else cs_labels.id2label[i].trainId
     for i in range(34)]
)  # fmt: skip


def save(path, array, mode=None):
    img = Image.fromarray(array) if mode is None else Image.fromarray(array, mode)
    img.save(path)
    return str(path)


def one_line_about(info, path):
    text = str(info.value)
    assert text.startswith(str(path)) and '\n' not in text, text
    return text


# ------------------------------------------------------------------------------------ reading
def test_palette_mode_png_is_read_by_index_not_colour(tmp_path):
    train = RNG.integers(0, 19, (6, 9)).astype(np.uint8)
    train[0, 0] = 255
    img = Image.fromarray(train, 'L').convert('P')  # keeps values as indices
    img.putpalette(RNG.integers(0, 256, 768, dtype=np.uint8).tobytes())  # colours: noise
    path = tmp_path / 'a_gtFine_labelTrainIds.png'
    img.save(path)
    assert Image.open(path).mode == 'P'
    assert np.array_equal(read_label(str(path), CITYSCAPES), train)


def test_sixteen_bit_png_by_value(tmp_path):
    raw = RNG.integers(0, 151, (5, 7)).astype(np.uint16)
    path = save(tmp_path / 'ADE_val_00000001.png', raw)
    assert Image.open(path).mode.startswith('I;16')
    out = read_label(path, ADE20K)
    assert out.dtype == np.uint8
    assert np.array_equal(out, np.where(raw == 0, 255, raw.astype(np.int64) - 1))
    raw[2, 3] = 300  # not an ADE20K value
    bad = save(tmp_path / 'ADE_val_00000002.png', raw)
    with pytest.raises(UserError, match=r'values \[300\] are not ade20k ade ids') as info:
        read_label(bad, ADE20K)
    one_line_about(info, bad)
    # 16-bit values for a dataset with more than 256 classes
    spec = others(1000, ignore_label=65535)
    big = RNG.integers(0, 1000, (4, 4)).astype(np.uint16)
    assert np.array_equal(read_label(save(tmp_path / 'big.png', big), spec, 'trainIds'), big)


def test_thirty_two_bit_values_out_of_range_refused(tmp_path):
    path = save(tmp_path / 'x_labelTrainIds.tif', np.full((3, 4), 70000, np.int32))
    with pytest.raises(UserError, match=r'32-bit label values 70000\.\.70000 are outside') as i:
        read_label(path, CITYSCAPES)
    one_line_about(i, path)


def test_rgb_labels_through_the_colour_map(tmp_path):
    train = RNG.integers(0, 19, (6, 8))
    train[1, :] = 255
    rgb = np.where((train == 255)[..., None], 0, CITYSCAPES.palette[np.minimum(train, 18)])
    path = save(tmp_path / 'frame_gtFine_color.png', rgb.astype(np.uint8))
    assert np.array_equal(read_label(path, CITYSCAPES), train)
    assert detect_encoding([path], CITYSCAPES) == COLOR
    assert np.array_equal(read_label(path, CITYSCAPES, COLOR), train)
    rgba = np.concatenate([rgb, np.full((6, 8, 1), 255)], -1).astype(np.uint8)
    assert np.array_equal(read_label(save(tmp_path / 'o.png', rgba), CITYSCAPES), train)
    # an RGB image in a list of single-channel labels
    with pytest.raises(UserError, match='an RGB image, but this list holds'):
        read_label(path, CITYSCAPES, 'labelIds')


def test_rgb_labels_refused(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    path = save(tmp_path / 'unknown.png', rgb)
    with pytest.raises(UserError, match=r'colours \(1, 2, 3\) are not in the cityscapes') as i:
        read_label(path, CITYSCAPES)
    one_line_about(i, path)
    grey = save(tmp_path / 'grey.png', np.full((4, 4, 3), 7, np.uint8))
    with pytest.raises(UserError, match='equal R, G, B: save labels single-channel'):
        read_label(grey, CITYSCAPES)
    # ADE20K's road and skyscraper share a colour: ambiguous
    shared = save(tmp_path / 'ade.png', np.full((4, 4, 3), 140, np.uint8))
    with pytest.raises(UserError, match=r'belongs to 6 \(road\) and 48 \(skyscraper\)') as i:
        read_label(shared, ADE20K)
    one_line_about(i, shared)
    rgba = np.zeros((2, 2, 4), np.uint8)
    transparent = save(tmp_path / 't.png', rgba)
    with pytest.raises(UserError, match='transparent pixels'):
        read_label(transparent, CITYSCAPES)


@pytest.mark.parametrize('mode', ['LA', 'F', '1'])
def test_other_modes_refused(tmp_path, mode):
    img = Image.new(mode, (4, 3))
    path = str(tmp_path / ('x.tif' if mode == 'F' else 'x.png'))
    img.save(path)
    with pytest.raises(UserError, match=f'label image mode {mode} is not supported') as info:
        read_label(path, CITYSCAPES, 'trainIds')
    one_line_about(info, path)


def _png_header_only(width, height):
    def chunk(kind, data):
        body = kind + data
        return struct.pack('>I', len(data)) + body + struct.pack('>I', zlib.crc32(body))

    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IEND', b'')


def test_huge_declared_size_refused_before_decoding(tmp_path):
    path = tmp_path / 'huge_labelTrainIds.png'
    path.write_bytes(_png_header_only(100_000, 100_000))  # 10 G pixels declared, 50 bytes
    with pytest.raises(UserError) as info:
        read_label(str(path), CITYSCAPES)
    one_line_about(info, path)
    small = save(tmp_path / 's_labelTrainIds.png', np.zeros((20, 20), np.uint8))
    with pytest.raises(UserError, match='20x20 is larger than 100 pixels'):
        read_label(small, CITYSCAPES, max_pixels=100)
    for broken in (tmp_path / 'missing.png', tmp_path / 'text.png'):
        if broken.name == 'text.png':
            broken.write_text('not an image')
        with pytest.raises(UserError) as info:
            read_label(str(broken), CITYSCAPES)
        one_line_about(info, broken)


# ------------------------------------------------------------------------------- encodings
def test_the_silent_case_labelids_with_small_values_read_by_name(tmp_path):
    """A labelIds file whose ids are all < 19 looks like trainIds; its name decides."""
    raw = RNG.choice([0, 1, 4, 7, 8, 11, 17], (6, 6)).astype(np.uint8)
    path = save(tmp_path / 'ulm_000000_000019_gtFine_labelIds.png', raw)
    assert detect_encoding([path], CITYSCAPES) == 'labelIds'
    assert np.array_equal(read_label(path, CITYSCAPES), CS_TO_TRAIN[raw])
    # the same values under a name that does not tell are ambiguous
    anonymous = save(tmp_path / 'frame.png', raw)
    with pytest.raises(UserError, match='cannot tell the label encoding') as info:
        detect_encoding([anonymous], CITYSCAPES)
    text = one_line_about(info, anonymous)
    assert 'labelIds and trainIds' in text and '*labelIds.png (labelIds)' in text
    with pytest.raises(UserError, match='cannot tell'):
        read_label(anonymous, CITYSCAPES)


def test_encoding_from_values_when_names_do_not_tell(tmp_path):
    label_ids = save(tmp_path / 'a.png', np.array([[0, 7, 26]], np.uint8))  # 26 = car
    train_ids = save(tmp_path / 'b.png', np.array([[0, 13, 255]], np.uint8))
    small = save(tmp_path / 'c.png', np.array([[0, 13]], np.uint8))
    assert detect_encoding([label_ids, small], CITYSCAPES) == 'labelIds'
    assert detect_encoding([small, train_ids], CITYSCAPES) == 'trainIds'
    assert read_label(label_ids, CITYSCAPES).tolist() == [[255, 0, 13]]
    assert read_label(train_ids, CITYSCAPES).tolist() == [[0, 13, 255]]
    nonsense = save(tmp_path / 'd.png', np.array([[40]], np.uint8))
    with pytest.raises(UserError, match=r'values \[40\] fit no cityscapes label encoding'):
        detect_encoding([nonsense], CITYSCAPES)


def test_a_mix_of_encodings_is_refused(tmp_path):
    a = save(tmp_path / 'x_000000_000019_gtFine_labelIds.png', np.zeros((2, 2), np.uint8))
    b = save(tmp_path / 'x_000001_000019_gtFine_labelTrainIds.png', np.zeros((2, 2), np.uint8))
    with pytest.raises(UserError) as info:
        detect_encoding([a, a, b], CITYSCAPES)
    text = one_line_about(info, b)
    assert a in text and 'trainIds' in text and 'labelIds' in text
    # by values: a named labelIds file and an anonymous one holding 255
    c = save(tmp_path / 'anon.png', np.array([[1, 255]], np.uint8))
    with pytest.raises(UserError, match=f'{a}') as info:
        detect_encoding([a, c], CITYSCAPES)
    one_line_about(info, c)
    # RGB and single-channel files in one list
    rgb = save(tmp_path / 'rgb.png', np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(UserError, match='use one encoding'):
        detect_encoding([rgb, c], CITYSCAPES)


def test_ade20k_encodings(tmp_path):
    raw = np.array([[0, 1, 150]], np.uint8)
    official = save(tmp_path / 'ADE_val_00000001.png', raw)
    assert read_label(official, ADE20K).tolist() == [[255, 0, 149]]
    ours = save(tmp_path / 'ADE_val_00000001_trainIds.png', np.array([[255, 0, 149]], np.uint8))
    assert detect_encoding([ours], ADE20K) == 'trainIds'
    assert read_label(ours, ADE20K).tolist() == [[255, 0, 149]]


# ------------------------------------------------------------------------------------ writing
def test_write_all_formats(tmp_path):
    h, w = 5, 6
    train = RNG.integers(0, 19, (h, w))
    train[0, 0] = 255
    rgb = RNG.integers(0, 256, (h, w, 3)).astype(np.uint8)
    base = str(tmp_path / 'berlin_000000_000019_leftImg8bit')
    paths = {f: write_label_png(base, train, CITYSCAPES, f, rgb=rgb) for f in
             ('trainIds', 'labelIds', 'color', 'overlay')}  # fmt: skip
    assert {f: os.path.basename(p) for f, p in paths.items()} == {
        f: f'berlin_000000_000019_leftImg8bit_{f}.png' for f in paths
    }
    assert np.array_equal(np.asarray(Image.open(paths['trainIds'])), train)
    official = {k: cs_labels.trainId2label[k].id for k in range(19)}
    official[255] = cs_labels.name2label['unlabeled'].id
    expected_ids = np.vectorize(official.get)(train)
    assert np.array_equal(np.asarray(Image.open(paths['labelIds'])), expected_ids)
    colour = np.asarray(Image.open(paths['color'])).astype(np.int64)
    palette = {k: cs_labels.trainId2label[k].color for k in range(19)}
    palette[255] = (0, 0, 0)
    expected_colour = np.array([[palette[v] for v in row] for row in train.tolist()])
    assert np.array_equal(colour, expected_colour)
    blended = np.round(0.5 * expected_colour + 0.5 * rgb.astype(np.float64))
    assert np.abs(np.asarray(Image.open(paths['overlay'])) - blended).max() <= 1
    # round trip through the reader (labelIds named by our writer)
    assert np.array_equal(read_label(paths['labelIds'], CITYSCAPES), train)
    assert np.array_equal(read_label(paths['trainIds'], CITYSCAPES), train)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths.values())


def test_write_ade20k_official_ids(tmp_path):
    train = np.array([[0, 149, 255]])
    path = write_label_png(str(tmp_path / 'ADE_val_00000001'), train, ADE20K, 'labelIds')
    assert np.asarray(Image.open(path)).tolist() == [[1, 150, 0]]
    assert read_label(path, ADE20K).tolist() == train.tolist()


def test_write_refuses_to_overwrite_what_this_run_did_not_write(tmp_path):
    train = np.zeros((2, 3), np.int64)
    existing = tmp_path / 'a_trainIds.png'
    existing.write_bytes(b'precious')
    with pytest.raises(UserError, match='exists and was not written by this run') as info:
        write_label_png(str(tmp_path / 'a'), train, CITYSCAPES, 'trainIds', written=set())
    one_line_about(info, existing)
    assert existing.read_bytes() == b'precious'
    written = set()
    path = write_label_png(str(tmp_path / 'a'), train, CITYSCAPES, 'trainIds', overwrite=True,
                           written=written)  # fmt: skip
    assert np.asarray(Image.open(path)).tolist() == train.tolist()
    # a file this run wrote may be written again
    write_label_png(str(tmp_path / 'a'), train + 1, CITYSCAPES, 'trainIds', written=written)
    assert np.asarray(Image.open(path)).tolist() == (train + 1).tolist()
    with pytest.raises(UserError, match='overlay needs the RGB image'):
        write_label_png(str(tmp_path / 'b'), train, CITYSCAPES, 'overlay')
    with pytest.raises(UserError, match=r'train ids \[19\] are neither'):
        write_label_png(str(tmp_path / 'c'), train + 19, CITYSCAPES, 'labelIds')
    with pytest.raises(UserError, match='unknown output format'):
        write_label_png(str(tmp_path / 'd'), train, CITYSCAPES, 'jpeg')
    assert sorted(os.listdir(tmp_path)) == ['a_trainIds.png']  # no temporary files left
