"""List parsing/validation and the augmentation pipeline (alignment, padding, determinism)."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from converters.errors import UserError
from icnet_tf.data import augment, check_labels, read_list, shard_samples, train_dataset
from icnet_tf.datasets import others
from icnet_tf.network import CAFFE_BGR_MEAN as IMG_MEAN_BGR
from icnet_tf.network import caffe_bgr_input


def write_pair(root, name, rgb, label):
    img_path = os.path.join(root, f'{name}.png')
    lab_path = os.path.join(root, f'{name}_label.png')
    Image.fromarray(rgb).save(img_path)  # uint16 arrays become 16-bit PNGs
    Image.fromarray(label.astype(np.uint8), 'L').save(lab_path)
    return f'{name}.png {name}_label.png'


def blocky(seed, h=48, w=64, classes=4, block=8):
    """An image whose colour encodes the class of each 8x8 block, and the matching label."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, classes, (h // block, w // block))
    label = np.kron(grid, np.ones((block, block), int))
    rgb = np.stack([label * 60, label * 30 + 10, 200 - label * 40], -1).astype(np.uint8)
    return rgb, label


def test_read_list_and_errors(tmp_path):
    rgb, label = blocky(0)
    line = write_pair(str(tmp_path), 'a', rgb, label)
    good = tmp_path / 'good.txt'
    good.write_text(line + '\n\n' + line + '\n')
    pairs = read_list(str(good), str(tmp_path))
    assert len(pairs) == 2 and pairs[0][0] == os.path.join(str(tmp_path), 'a.png')

    bad = tmp_path / 'bad.txt'
    bad.write_text(line + '\nonly_one_field.png\n')
    with pytest.raises(UserError, match=r'bad.txt:2: expected 2 fields'):
        read_list(str(bad), str(tmp_path))
    missing = tmp_path / 'missing.txt'
    missing.write_text(line + '\nnope.png a_label.png\n')
    with pytest.raises(UserError, match=r'missing.txt:2: no such file .*nope.png'):
        read_list(str(missing), str(tmp_path))
    with pytest.raises(UserError, match='no such list file'):
        read_list(str(tmp_path / 'absent.txt'))


def test_check_labels_reports_line_and_values(tmp_path):
    rgb, label = blocky(1)
    lines = [write_pair(str(tmp_path), 'ok', rgb, label)]
    label = label.copy()
    label[0, 0], label[1, 1] = 255, 7
    lines.append(write_pair(str(tmp_path), 'bad', rgb, label))
    (tmp_path / 'l.txt').write_text('\n'.join(lines))
    pairs = read_list(str(tmp_path / 'l.txt'), str(tmp_path))
    spec = others(4)
    assert check_labels(pairs[:1], spec).decoder == 'png8'
    with pytest.raises(UserError, match=r'l.txt:2: .*bad_label.png: values \[7\] are not'):
        check_labels(pairs, spec, str(tmp_path / 'l.txt'))


def _decoded_class(image):
    """Invert blocky()'s colour code on a mean-subtracted BGR image."""
    rgb = image[..., ::-1] + np.array(IMG_MEAN_BGR)[::-1]
    return np.rint(rgb[..., 0] / 60).astype(int)


@pytest.mark.parametrize('scale,mirror', [(False, False), (False, True), (True, True)])
def test_augmentation_keeps_image_and_label_aligned(scale, mirror):
    rgb, label = blocky(2)
    image = tf.reverse(tf.cast(rgb, tf.float32), [-1]) - IMG_MEAN_BGR
    for s in range(6):
        img, lab = augment(
            image,
            tf.constant(label[..., None], tf.uint8),
            tf.constant([s, 9]),
            crop_size=(40, 90),
            random_scale=scale,
            random_mirror=mirror,
            ignore_label=255,
        )
        img, lab = img.numpy(), lab.numpy()[..., 0]
        assert img.shape == (40, 90, 3) and lab.shape == (40, 90)
        padded = lab == 255
        if not scale:
            assert padded.all(axis=0)[64:].all()  # width 64 < crop 90: padded columns
        np.testing.assert_array_equal(img[padded], 0.0)  # image padding = the mean colour
        inside = ~padded
        agree = (_decoded_class(img)[inside] == lab[inside]).mean()
        # bilinear image vs nearest label differ only on block borders when scaling
        assert agree > (0.85 if scale else 0.999), agree


def test_dataset_is_deterministic_and_decodes_any_mode(tmp_path):
    lines = []
    for i, mode in enumerate(['RGB', 'L', 'RGBA', 'I;16']):
        rgb, label = blocky(10 + i, h=64, w=64)
        if mode == 'L':
            arr = rgb[..., 0]
        elif mode == 'RGBA':
            arr = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
        elif mode == 'I;16':
            arr = rgb[..., 0].astype(np.uint16) * 257
        else:
            arr = rgb
        lines.append(write_pair(str(tmp_path), f's{i}', arr, label))
    (tmp_path / 'l.txt').write_text('\n'.join(lines))
    pairs = read_list(str(tmp_path / 'l.txt'), str(tmp_path))

    def first_batches(seed):
        ds = train_dataset(
            pairs,
            preprocess=caffe_bgr_input,
            batch_size=2,
            crop_size=(48, 48),
            random_scale=True,
            random_mirror=True,
            seed=seed,
        )
        return [(x.numpy(), y.numpy()) for x, y in ds.take(3)]

    a, b, c = first_batches(1), first_batches(1), first_batches(2)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    assert a[0][0].shape == (2, 48, 48, 3) and a[0][1].shape == (2, 48, 48, 1)


def _context(pipelines, pipeline, replicas):
    return tf.distribute.InputContext(
        num_input_pipelines=pipelines, input_pipeline_id=pipeline, num_replicas_in_sync=replicas
    )


@pytest.mark.parametrize('pipelines,replicas', [(1, 1), (1, 3), (2, 2), (2, 4), (3, 6)])
def test_shard_samples_gives_every_replica_its_slice_of_the_global_batch(pipelines, replicas):
    """Replica r (pipeline i's local replica j, r = i * local + j, as tf.distribute numbers
    them) gets records [k B + r B / N, k B + (r + 1) B / N) of global step k."""
    batch, steps, local = 12, 3, replicas // pipelines
    stream = tf.data.Dataset.range(1_000_000)
    one_process = [b.tolist() for b in stream.batch(batch).take(steps).as_numpy_iterator()]
    per_pipeline = []
    for i in range(pipelines):
        ds, per_replica = shard_samples(stream, batch, _context(pipelines, i, replicas))
        assert per_replica == batch // replicas
        # a pipeline's local replicas take its consecutive batches, local ones per step
        batches = ds.batch(per_replica).take(steps * local).as_numpy_iterator()
        per_pipeline.append([b.tolist() for b in batches])
    for k in range(steps):
        by_replica = [
            per_pipeline[i][k * local + j] for i in range(pipelines) for j in range(local)
        ]
        assert sum(by_replica, []) == one_process[k]
    assert shard_samples(stream, batch) == (stream, batch)  # no context: unchanged


def test_shard_samples_refuses_a_batch_the_replicas_do_not_divide():
    with pytest.raises(UserError, match='global batch size 10 is not divisible by the 4'):
        shard_samples(tf.data.Dataset.range(100), 10, _context(2, 0, 4))


def test_sharded_train_dataset_is_the_one_process_batch(tmp_path):
    """Two workers' pipelines (same seed) decode and augment exactly the samples, with the
    same random scale/mirror/crop, that one process puts in its global batch."""
    lines = [write_pair(str(tmp_path), f's{i}', *blocky(20 + i, h=64, w=64)) for i in range(5)]
    (tmp_path / 'l.txt').write_text('\n'.join(lines))
    pairs = read_list(str(tmp_path / 'l.txt'), str(tmp_path))
    options = dict(
        preprocess=caffe_bgr_input,
        batch_size=4,
        crop_size=(48, 48),
        random_scale=True,
        random_mirror=True,
        seed=3,
    )
    one = [x.numpy() for x, _ in train_dataset(pairs, **options).take(3)]
    shards = []
    for i in range(2):
        ds = train_dataset(pairs, **options, input_context=_context(2, i, 2))
        shards.append([x.numpy() for x, _ in ds.take(3)])
    for k in range(3):
        assert shards[0][k].shape == (2, 48, 48, 3)
        np.testing.assert_array_equal(np.concatenate([shards[0][k], shards[1][k]]), one[k])


# ------------------------------------------------------------------ labels read by meaning
def one_pair(root, name, label, *, mode=None, label_name=None, size=None):
    """An image (its colour: noise) and a label file, as a one-line list's pairs."""
    h, w = size or label.shape[:2]
    rng = np.random.default_rng(len(name))
    image = os.path.join(root, f'{name}_leftImg8bit.png')
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(image)
    path = os.path.join(root, label_name or f'{name}_label.png')
    img = Image.fromarray(label) if mode is None else Image.fromarray(label, mode)
    img.save(path)
    return [(image, path)]


def pipeline_labels(pairs, labels):
    """The label tensor train_dataset gives for a one-pair list (no augmentation)."""
    h, w = Image.open(pairs[0][1]).size[::-1]
    ds = train_dataset(
        pairs, preprocess=caffe_bgr_input, batch_size=1, crop_size=(h, w), labels=labels
    )
    return next(iter(ds))[1].numpy()[0, ..., 0]


def test_pipeline_reads_label_ids_palette_indices_and_sixteen_bit(tmp_path):
    from cityscapesscripts.helpers import labels as cs_labels

    from icnet_tf.datasets import CITYSCAPES
    from icnet_tf.labels import read_label

    rng = np.random.default_rng(3)
    # Cityscapes labelIds (all 34 ids), through the official table (cityscapesscripts')
    ids = rng.integers(0, 34, (24, 40)).astype(np.uint8)
    pairs = one_pair(str(tmp_path), 'a', ids, label_name='a_gtFine_labelIds.png')
    fmt = check_labels(pairs, CITYSCAPES)
    assert (fmt.encoding, fmt.decoder) == ('labelIds', 'png8')
    official = np.array([cs_labels.id2label[i].trainId for i in range(34)])
    want = np.where((official[ids] < 0) | (official[ids] == 255), 255, official[ids])
    np.testing.assert_array_equal(pipeline_labels(pairs, fmt), want)
    # a palette-mode PNG: its indices, not the luminance of its (noise) colours
    train = rng.integers(0, 19, (24, 40)).astype(np.uint8)
    train[:3] = 255
    pal = Image.fromarray(train, 'L').convert('P')
    pal.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    path = tmp_path / 'p_gtFine_labelTrainIds.png'
    pal.save(path)
    pairs = one_pair(str(tmp_path), 'p', train, label_name='ignored.png')
    pairs = [(pairs[0][0], str(path))]
    fmt = check_labels(pairs, CITYSCAPES)
    assert (fmt.encoding, fmt.decoder) == ('trainIds', 'pil')
    np.testing.assert_array_equal(pipeline_labels(pairs, fmt), train)
    luminance = tf.io.decode_png(tf.io.read_file(str(path)), channels=1).numpy()[..., 0]
    assert not np.array_equal(luminance, train)  # what decode_png alone would have given
    # 16-bit labels of a dataset with 300 classes, by value
    spec = others(300, ignore_label=65535)
    big = rng.integers(0, 300, (24, 40)).astype(np.uint16)
    big[0, 0] = 65535
    pairs = one_pair(str(tmp_path), 'b', big)
    fmt = check_labels(pairs, spec)
    assert fmt.decoder == 'png16'
    np.testing.assert_array_equal(pipeline_labels(pairs, fmt), big.astype(np.int64))
    np.testing.assert_array_equal(read_label(pairs[0][1], spec, 'trainIds'), big)


def test_ade20k_zero_labels_are_left_out_of_the_loss(tmp_path):
    """Stored 0 ("other") becomes ignore in the pipeline, and the head's loss is the mean cross
    entropy over the other pixels only (NumPy, labels nearest-sampled to the logits grid)."""
    from icnet_tf.datasets import ADE20K
    from icnet_tf.training import make_loss_fn
    from tests.test_models import TinyNet

    rng = np.random.default_rng(4)
    raw = rng.integers(1, 151, (64, 64)).astype(np.uint8)
    raw[rng.random(raw.shape) < 0.3] = 0
    pairs = one_pair(str(tmp_path), 'ADE_train_00000001', raw, label_name='ADE_train_00000001.png')
    fmt = check_labels(pairs, ADE20K)
    assert (fmt.encoding, fmt.decoder) == ('ade', 'png8')
    net = TinyNet(num_classes=150, seed=3).build()
    ds = train_dataset(
        pairs, preprocess=net.preprocess, batch_size=1, crop_size=(64, 64), labels=fmt
    )
    images, labels = next(iter(ds))
    np.testing.assert_array_equal(labels.numpy()[0, ..., 0], np.where(raw == 0, 255, raw - 1))
    loss_fn = make_loss_fn(net, ignore_label=255, weight_decay=0.0, update_mean_var=False)
    _, parts = loss_fn((images, labels))
    logits = net.layers['logits'].numpy()[0].astype(np.float64)  # 16x16, stride 4
    stored = raw[::4, ::4].astype(np.int64)  # TF1 nearest resize by 1/4: pixel 4i
    keep = stored != 0
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_softmax, np.maximum(stored - 1, 0)[..., None], -1)[..., 0]
    assert 0 < keep.sum() < keep.size
    assert float(parts['logits']) == pytest.approx(-picked[keep].mean(), rel=1e-5)


def test_validation_pass_names_both_files_of_a_size_mismatch(tmp_path):
    from icnet_tf.datasets import CITYSCAPES
    from icnet_tf.predict import Protocol

    label = np.zeros((20, 30), np.uint8)
    pairs = one_pair(str(tmp_path), 'm', label, label_name='m_gtFine_labelIds.png', size=(20, 31))
    with pytest.raises(UserError) as info:
        check_labels(pairs, CITYSCAPES, 'val.txt')
    text = str(info.value)
    assert text.startswith(f'val.txt:1: {pairs[0][0]}: the image is 20x31') and pairs[0][1] in text
    pairs = one_pair(str(tmp_path), 'n', label, label_name='n_gtFine_labelIds.png')
    with pytest.raises(UserError, match=r'n_leftImg8bit.png: the image is 20x30 .* 16x64'):
        check_labels(pairs, CITYSCAPES, protocol=Protocol(pad_to=(16, 64), source='--input_size'))
    assert check_labels(pairs, CITYSCAPES, protocol=Protocol(pad_to=(20, 30))).decoder == 'png8'


def test_sample_files_find_the_file_tf_data_cannot_decode(tmp_path):
    """A truncated image passes the validation pass (headers only) and breaks the pipeline
    mid-training, which does not say which file; `SampleFiles` finds it and names its list
    line (blank lines counted), and leaving its sample out gives a working pipeline."""
    from icnet_tf.data import pair_files

    root = str(tmp_path)
    lines = [write_pair(root, name, *blocky(i)) for i, name in enumerate('abcd')]
    (tmp_path / 'l.txt').write_text('\n' + '\n\n'.join(lines) + '\n')  # lines 2, 4, 6, 8
    pairs = read_list(str(tmp_path / 'l.txt'), root)
    labels = check_labels(pairs, others(4), str(tmp_path / 'l.txt'))
    png = tmp_path / 'c.png'
    png.write_bytes(png.read_bytes()[:-60])  # cut inside the image data: header intact
    assert check_labels(pairs, others(4), str(tmp_path / 'l.txt')).decoder == 'png8'
    Image.fromarray(blocky(9, h=40)[0]).save(tmp_path / 'd.png')  # not its label's size

    files = pair_files(pairs, str(tmp_path / 'l.txt'), labels)
    ds = train_dataset(
        files.select(pairs), preprocess=caffe_bgr_input, batch_size=4, crop_size=(32, 32)
    )
    with pytest.raises(tf.errors.InvalidArgumentError):
        next(iter(ds))  # TensorFlow's error, naming no file
    bad = files.find_bad()
    assert [i for i, _ in bad] == [2, 3]
    assert str(bad[0][1]) == (
        f'{tmp_path}/l.txt:6: {png}: cannot decode (Invalid PNG data, size {png.stat().st_size})'
    )
    assert str(bad[1][1]) == (
        f'{tmp_path}/l.txt:8: {tmp_path}/d_label.png: is 48x64 (HxW) but {tmp_path}/d.png '
        'of the same sample is 40x64'
    )
    files.exclude(bad)
    assert files.kept == [0, 1] and files.skipped == [b for _, b in bad]
    ds = train_dataset(
        files.select(pairs), preprocess=caffe_bgr_input, batch_size=4, crop_size=(32, 32)
    )
    assert next(iter(ds))[0].shape == (4, 32, 32, 3)
    with pytest.raises(UserError, match='every training sample has a bad file'):
        files.exclude([(0, bad[0][1]), (1, bad[0][1])])


def test_check_labels_names_the_real_list_line_past_blank_lines(tmp_path):
    rgb, label = blocky(1)
    ok = write_pair(str(tmp_path), 'ok', rgb, label)
    label = label.copy()
    label[0, 0] = 7
    (tmp_path / 'l.txt').write_text(f'{ok}\n\n\n{write_pair(str(tmp_path), "bad", rgb, label)}\n')
    pairs = read_list(str(tmp_path / 'l.txt'), str(tmp_path))
    with pytest.raises(UserError, match=r'l.txt:4: .*bad_label.png: values \[7\]'):
        check_labels(pairs, others(4), str(tmp_path / 'l.txt'))


def test_the_validation_pass_refuses_training_images_over_the_size_limit(tmp_path):
    """The input pipeline decodes whole images: one over the tools' limit
    (--max_image_megapixels) is refused before training, naming its list line."""
    from icnet_tf import predict

    (tmp_path / 'l.txt').write_text(write_pair(str(tmp_path), 'a', *blocky(0)) + '\n')
    pairs = read_list(str(tmp_path / 'l.txt'), str(tmp_path))
    saved = predict.MAX_PIXELS
    try:
        predict.set_max_pixels(48 * 64 - 1)
        with pytest.raises(UserError, match=r'l.txt:1: .*a.png: 64x48 is 0.00307 megapixels, more'):
            check_labels(pairs, others(4), str(tmp_path / 'l.txt'))
        predict.set_max_pixels(48 * 64)
        assert check_labels(pairs, others(4), str(tmp_path / 'l.txt')).decoder == 'png8'
    finally:
        predict.MAX_PIXELS = saved
