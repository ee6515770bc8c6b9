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
