"""The exported SavedModel checks its input (icnet_tf.serving): a gray, RGBA, unbatched or empty
input fails with a message naming the expected `[N, H, W, 3]` uint8, not inside TensorFlow
(or silently: TensorFlow does not compare a signature's declared shape with what it is fed).
Valid input gives the labels of the unchecked graph. The exports' numerics are tested in
tests/test_export.py; here a tiny network keeps the exports fast."""

import numpy as np
import pytest
import tensorflow as tf

from icnet_tf.serving import SegmentationModule, export_saved_model, load_signature
from tests.test_models import TinyNet, scene

EXPECTED = 'images: expected uint8 RGB [N, H, W, 3]'


@pytest.fixture(scope='module')
def net():
    return TinyNet(seed=3).build()


@pytest.fixture(scope='module')
def exported(net, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('tiny') / 'saved')
    export_saved_model(net, folder)
    return load_signature(folder)


def images(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


@pytest.mark.parametrize(
    'shape',
    [(2, 20, 24, 1), (1, 20, 24, 4), (20, 24, 3), (0, 20, 24, 3), (1, 0, 24, 3), (1, 20, 0, 3)],
    ids=['gray', 'rgba', 'unbatched', 'no-images', 'no-rows', 'no-columns'],
)
def test_a_wrong_input_shape_gets_the_expected_shape_in_its_message(exported, shape):
    serve, _ = exported
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        serve(images=images(shape))
    message = ' '.join(str(e.value).split())
    assert EXPECTED in message and f'[got shape] [{" ".join(map(str, shape))}]' in message


def test_a_float_tensor_is_refused_by_the_signature_dtype(exported):
    serve, _ = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match='expected to be a uint8 tensor'):
        serve(images=tf.zeros((1, 20, 24, 3), tf.float32))


def test_valid_input_gives_the_labels_of_the_unchecked_graph(exported, net):
    serve, _ = exported
    batch = tf.constant(np.stack([scene(np.random.default_rng(s), 20, 28)[0] for s in (1, 2)]))
    got = serve(images=batch)
    module = SegmentationModule(net)
    expected = module.segment(batch)  # the graph without the check
    np.testing.assert_array_equal(got['labels'].numpy(), expected['labels'].numpy())
    np.testing.assert_allclose(
        got['probabilities'].numpy(), expected['probabilities'].numpy(), atol=1e-6
    )
    assert len(set(got['labels'].numpy().ravel())) > 1  # not a constant answer


def test_a_fixed_input_size_is_checked_too(net):
    module = SegmentationModule(net, input_size=(20, 24), probabilities=False)
    assert module.serve(images((1, 20, 24, 3)))['labels'].shape == (1, 20, 24)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        module.serve(images((1, 24, 20, 3)))
    assert 'images: expected uint8 RGB [N, 20, 24, 3]' in str(e.value)
