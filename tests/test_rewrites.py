"""The exact rewrites of `icnet_tf.rewrites` that are not tested with the exported network in
tests/test_export.py: `sparse_label_upsampling` (`bilinear_labels`) against the unrewritten
resize + top_k, on random, smooth, tied and near-tied logits of many geometries; the training
rewrite (`training_chain`: ICNet's lazy zooms) against the plain network's heads, loss and
gradients."""

import numpy as np
import pytest
import tensorflow as tf

from icnet_tf import ICNet
from icnet_tf.rewrites import (
    LOGIT_LIMIT,
    REWRITES,
    SparseLabelNetwork,
    align_corners_table,
    applied_rewrites,
    bilinear_labels,
    certain_cells,
    serving_network,
    sparse_label_upsampling,
)

CLASSES = 6


def reference_labels(logits, size, crop):
    """The unrewritten serving graph: TF's align-corners resize of every class, crop, top_k."""
    up = tf.raw_ops.ResizeBilinear(
        images=logits, size=size, align_corners=True, half_pixel_centers=False
    )
    return tf.math.top_k(up[:, : crop[0], : crop[1]], 1).indices[..., 0].numpy()


def smooth(rng, h, w, scale=6.0):
    """Large class regions: a coarse random field resized to h x w (most cells agree)."""
    coarse = rng.normal(size=(2, 3, 4, CLASSES)).astype(np.float32) * scale
    return tf.image.resize(coarse, (h, w)).numpy()


def noise(rng, h, w):
    return rng.normal(size=(2, h, w, CLASSES)).astype(np.float32)


def quantized(rng, h, w):
    """Small integers: exact ties between classes and between corners everywhere."""
    return rng.integers(0, 3, (2, h, w, CLASSES)).astype(np.float32)


def near_ties(rng, h, w):
    """Classes 1 and 3 lead by 1-2 units in the last place over classes 0 and 2 (which win
    exact ties); the kernel's rounding flips many such pixels (checked below)."""
    lead = (rng.uniform(-1, 1, (2, h, w)) * 10 ** rng.uniform(0, 3, (2, h, w))).astype(np.float32)
    trail = lead.copy()
    for step in range(2):
        closer = rng.integers(0, 2, lead.shape).astype(bool) | (step == 0)
        trail = np.where(closer, np.nextafter(trail, np.float32(-np.inf)), trail)
    logits = np.full((2, h, w, CLASSES), -2e3, np.float32)
    flip = rng.random((2, h, w)) < 0.2  # some corners lead with class 3 instead
    logits[..., 1] = np.where(flip, trail, lead)
    logits[..., 0] = trail
    logits[..., 3] = np.where(flip, lead, trail)
    logits[..., 2] = np.where(flip, trail, trail)
    return logits


def constant(rng, h, w):
    return np.zeros((2, h, w, CLASSES), np.float32)  # every class ties: label 0 everywhere


KINDS = {
    'noise': noise,
    'smooth': smooth,
    'quantized': quantized,
    'near_ties': near_ties,
    'constant': constant,
}
# (h, w) -> (H, W), crop: exact 8x zoom (integer source positions), ICNet-like scales with a crop,
# odd/even sizes, a single output column, a single input row, no resize, downsampling.
GEOMETRIES = [
    ((5, 7), (33, 49), (33, 49)),
    ((16, 32), (128, 256), (120, 250)),
    ((9, 13), (65, 97), (60, 97)),
    ((6, 8), (47, 62), (47, 62)),
    ((3, 2), (10, 1), (10, 1)),
    ((1, 4), (7, 9), (7, 9)),
    ((7, 9), (7, 9), (7, 9)),
    ((12, 10), (5, 4), (5, 4)),
]


@pytest.mark.parametrize('kind', list(KINDS))
@pytest.mark.parametrize('geometry', GEOMETRIES, ids=lambda g: f'{g[0]}->{g[1]}')
def test_bilinear_labels_equal_the_full_resize_and_top_k(kind, geometry):
    (h, w), size, crop = geometry
    rng = np.random.default_rng(h * 1000 + w * 10 + len(kind))
    logits = KINDS[kind](rng, h, w)
    want = reference_labels(logits, size, crop)
    got = bilinear_labels(tf.constant(logits), size, crop).numpy()
    assert got.dtype == np.int32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_bilinear_labels_with_runtime_shapes():
    rng = np.random.default_rng(3)
    fn = tf.function(
        lambda logits, size, crop: bilinear_labels(logits, size, (crop[0], crop[1])),
        input_signature=[
            tf.TensorSpec([None, None, None, CLASSES]),
            tf.TensorSpec([2], tf.int32),
            tf.TensorSpec([2], tf.int32),
        ],
    )
    for (h, w), size, crop in GEOMETRIES[:4]:
        for kind in ('smooth', 'near_ties', 'quantized'):
            logits = KINDS[kind](rng, h, w)
            got = fn(logits, tf.constant(size), tf.constant(crop)).numpy()
            np.testing.assert_array_equal(got, reference_labels(logits, size, crop))


def test_the_fast_path_decides_most_pixels_and_no_near_tie():
    """Smooth logits: most cells are decided from their corners; near-ties never are, and the
    rule without the margin would be wrong there (the kernel's rounding flips labels)."""
    rng = np.random.default_rng(5)
    logits = smooth(rng, 16, 32)
    assert np.mean(certain_cells(logits).numpy() >= 0) > 0.6
    ties = near_ties(rng, 9, 13)
    cells = certain_cells(ties).numpy()
    assert (cells >= 0).sum() == 0
    # The naive rule (four corners agree -> their label) on these logits:
    label = ties.argmax(-1)
    right = np.concatenate([label[:, :, 1:], label[:, :, -1:]], axis=2)
    down = np.concatenate([label[:, 1:], label[:, -1:]], axis=1)
    down_right = np.concatenate([right[:, 1:], right[:, -1:]], axis=1)
    agree = (label == right) & (label == down) & (label == down_right)
    lo, _, _ = (t.numpy() for t in align_corners_table(9, 65, 65))
    lo_x, _, _ = (t.numpy() for t in align_corners_table(13, 97, 97))
    naive = np.where(agree, label, -1)[:, lo][:, :, lo_x]
    want = reference_labels(ties, (65, 97), (65, 97))
    decided = naive >= 0
    assert decided.mean() > 0.2 and np.any(naive[decided] != want[decided])


def test_non_finite_and_huge_logits_take_the_plain_resize():
    rng = np.random.default_rng(7)
    for bad in (np.inf, -np.inf, np.nan, LOGIT_LIMIT * 1.5):
        logits = smooth(rng, 6, 8)
        logits[0, 2, 3, 1] = bad
        got = bilinear_labels(tf.constant(logits), (47, 62), (40, 62)).numpy()
        np.testing.assert_array_equal(got, reference_labels(logits, (47, 62), (40, 62)))


def test_ties_go_to_the_first_class():
    """The convention both graphs rely on: top_k(k=1) and tf.argmax take the lowest index."""
    x = tf.constant([[1.0, 3.0, 3.0, 0.0], [0.0, -0.0, 0.0, -1.0], [-0.0, 0.0, -1.0, 0.0]])
    assert tf.math.top_k(x, 1).indices[:, 0].numpy().tolist() == [1, 0, 0]
    assert tf.argmax(x, -1).numpy().tolist() == [1, 0, 0]
    labels = bilinear_labels(tf.zeros((1, 3, 4, CLASSES)), (9, 10)).numpy()
    assert labels.shape == (1, 9, 10) and not labels.any()


def test_align_corners_table_matches_the_kernel():
    """Source rows and weights as TF's kernel computes them: resizing a ramp reproduces them."""
    for in_size, out_size in ((5, 33), (16, 128), (128, 1024), (3, 1), (7, 7), (12, 5)):
        lo, hi, lerp = (t.numpy() for t in align_corners_table(in_size, out_size, out_size))
        ramp = np.arange(in_size, dtype=np.float32).reshape(1, in_size, 1, 1) * 1024.0
        up = tf.raw_ops.ResizeBilinear(images=ramp, size=[out_size, 1], align_corners=True)
        top, bottom = (lo * 1024).astype(np.float32), (hi * 1024).astype(np.float32)
        expected = top + (bottom - top) * lerp  # the kernel's float32 ops
        np.testing.assert_array_equal(up.numpy()[0, :, 0, 0], expected)
        assert np.all(lo <= hi) and np.all(hi <= lo + 1) and np.all((lerp >= 0) & (lerp < 1))


def test_sparse_label_upsampling_is_a_rewrite_row_and_checks_the_network():
    assert REWRITES['sparse_label_upsampling'].always is False
    assert 'sparse_label_upsampling' in ICNet.serving_rewrites
    net = ICNet(num_classes=3).build()
    served = serving_network(net)
    assert isinstance(served, SparseLabelNetwork)
    assert not isinstance(serving_network(net, optimize=False), SparseLabelNetwork)
    assert applied_rewrites(net, tflite=True) == [
        'fold_batch_norm',
        'zoom_before_conv',
        'rgb_input',
    ]
    assert applied_rewrites(net, optimize=False, tflite=True) == ['fold_batch_norm']

    class HalfPixelICNet(ICNet):
        def upsample_logits(self, logits, size):
            return tf.image.resize(logits, size)

    with pytest.raises(ValueError, match='align-corners'):
        sparse_label_upsampling(HalfPixelICNet(num_classes=3).build())


def test_rgb_input_preprocess_is_the_caffe_convention_reversed_bit_for_bit():
    from icnet_tf.network import caffe_bgr_input

    net = serving_network(ICNet(num_classes=3).build())
    fn = tf.function(
        net.preprocess, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)]
    )
    rng = np.random.default_rng(11)
    for shape in ((1, 7, 5, 3), (2, 33, 64, 3)):
        rgb = rng.integers(0, 256, shape).astype(np.uint8)
        want = caffe_bgr_input(rgb).numpy()[..., ::-1]
        for got in (net.preprocess(rgb), fn(rgb)):
            assert got.shape == shape
            np.testing.assert_array_equal(got.numpy(), want)


# ------------------------------------------------------------------------- training rewrite
@pytest.mark.parametrize('hw', [(193, 193), (200, 246)])  # 32k+1, and sizes where `add` resizes
def test_training_chain_equals_the_plain_network_and_its_gradients(hw):
    """ICNet_BN in training mode (batch statistics, statistics updated) with its training
    rewrite: the three heads and the loss equal the plain network's to float rounding, and so
    do the gradients of every variable. Gradients through batch-statistics BN at a random
    initialisation are ill-conditioned (a 1-ulp change of the input moves some by ~3%), so
    each variable's gradient may differ from the plain one by 1e-3 of its norm plus twice what
    that 1-ulp control changes it by."""
    from icnet_tf import ICNet_BN
    from icnet_tf.losses import segmentation_loss
    from icnet_tf.rewrites import TrainingZoomChain, training_chain
    from tests.golden.seeded import seeded_images, seeded_weights

    net = ICNet_BN(num_classes=19, psp_bins=(1, 2, 3, 4)).build()
    net.load(seeded_weights(net.param_shapes(), seed=0), verbose=False)
    chain = training_chain(net)
    assert issubclass(chain, TrainingZoomChain) and issubclass(chain, net.chain_class)
    images = seeded_images((2, *hw, 3), seed=1)
    labels = tf.random.stateless_uniform((2, *hw, 1), [1, 2], 0, 19, tf.int32)

    def run(x, chain_class):
        with tf.GradientTape() as tape:
            out = net(
                tf.constant(x),
                training=True,
                outputs=list(net.loss_weights),
                chain_class=chain_class,
            )
            loss, _ = segmentation_loss(
                out,
                labels,
                head_weights=net.loss_weights,
                num_classes=19,
                ignore_label=255,
                weight_decay=1e-4,
                conv_weights=net.conv_weights(),
            )
        grads = tape.gradient(loss, net.trainable_variables)
        return {k: v.numpy() for k, v in out.items()}, float(loss), [g.numpy() for g in grads]

    out, loss, grads = run(images, None)
    lazy_out, lazy_loss, lazy_grads = run(images, chain)
    _, _, control = run(images * np.float32(1 + 2**-22), None)  # the 1-ulp control
    for head, ref in out.items():
        got = lazy_out[head]
        assert isinstance(got, np.ndarray) and got.shape == ref.shape, head
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), head
    assert abs(lazy_loss - loss) <= 1e-6 * loss
    for var, ref, got, ctl in zip(net.trainable_variables, grads, lazy_grads, control):
        bound = 1e-3 * np.linalg.norm(ref) + 2 * np.linalg.norm(ctl - ref)
        assert np.linalg.norm(got - ref) <= bound, var.name


def test_networks_without_training_rewrites_train_plain():
    from icnet_tf import ICNet, PSPNet101
    from icnet_tf.rewrites import training_chain
    from tests.test_models import TinyNet

    assert training_chain(TinyNet()) is None
    assert training_chain(ICNet(num_classes=3)) is None  # the inference structure trains plain
    assert training_chain(PSPNet101(num_classes=3, width_multiplier=1 / 8)) is None
    bad = TinyNet()
    bad.training_rewrites = ('fold_batch_norm',)
    with pytest.raises(ValueError, match="unknown training rewrite 'fold_batch_norm'"):
        training_chain(bad)
