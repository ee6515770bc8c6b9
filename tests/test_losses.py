"""The training loss, schedule and optimizer against independent NumPy computations."""

import numpy as np
import tensorflow as tf

from icnet_tf import ICNet_BN
from icnet_tf.losses import PolyLR, TF1Momentum, masked_xent_sum, segmentation_loss

# ICNet_BN's loss weights, as the network declares them (LAMBDA1..3 of the original).
HEAD_WEIGHTS = ICNet_BN(num_classes=5).loss_weights


def icnet_loss(outputs, labels, **kwargs):
    return segmentation_loss(outputs, labels, head_weights=HEAD_WEIGHTS, **kwargs)


def np_nearest(labels, out_h, out_w):
    """TF1 resize_nearest_neighbor (align_corners=False): source = floor(i * in / out)."""
    h, w = labels.shape[1:3]
    rows = np.floor(np.arange(out_h) * h / out_h).astype(int)
    cols = np.floor(np.arange(out_w) * w / out_w).astype(int)
    return labels[:, rows][:, :, cols]


def np_masked_xent(logits, labels, num_classes, ignore):
    lab = np_nearest(labels, *logits.shape[1:3])[..., 0]
    keep = (lab < num_classes) & (lab != ignore)
    z = logits[keep].astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -logp[np.arange(len(z)), lab[keep]].mean()


def make_case(seed=0, num_classes=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, (2, 33, 47, 1))
    labels[rng.random(labels.shape) < 0.2] = 255  # ignore
    labels[rng.random(labels.shape) < 0.05] = num_classes + 2  # >= num_classes: also masked
    outputs = {
        'sub4_out': rng.normal(size=(2, 3, 4, num_classes)),
        'sub24_out': rng.normal(size=(2, 5, 7, num_classes)),
        'conv6_cls': rng.normal(size=(2, 9, 12, num_classes)),
    }
    return outputs, labels


def test_masked_xent_matches_numpy_per_head():
    outputs, labels = make_case()
    for _head, logits in outputs.items():
        total, count = masked_xent_sum(tf.constant(logits, tf.float32), tf.constant(labels), 5, 255)
        np.testing.assert_allclose(
            float(total / count), np_masked_xent(logits, labels, 5, 255), rtol=1e-5
        )


def test_16_bit_logits_are_read_in_float32():
    """Mixed precision: bfloat16 / float16 logits go through the cross entropy in float32, i.e.
    the loss is NumPy's on the 16-bit values themselves (float32 accuracy, not 16-bit)."""
    outputs, labels = make_case(3)
    logits = outputs['conv6_cls'] * 4
    for dtype in (tf.bfloat16, tf.float16):
        low = tf.cast(tf.constant(logits, tf.float32), dtype)
        total, count = masked_xent_sum(low, tf.constant(labels), 5, 255)
        assert total.dtype == tf.float32
        seen = tf.cast(low, tf.float64).numpy()
        np.testing.assert_allclose(
            float(total / count), np_masked_xent(seen, labels, 5, 255), rtol=1e-6
        )


def test_total_loss_weights_heads_and_decays_conv_kernels_only():
    outputs, labels = make_case(1)
    kernels = [
        tf.constant(np.random.default_rng(2).normal(size=(3, 3, 4, 2)), tf.float32),
        tf.constant(np.ones((1, 1, 2, 5)), tf.float32),
    ]
    total, parts = icnet_loss(
        {k: tf.constant(v, tf.float32) for k, v in outputs.items()},
        tf.constant(labels),
        num_classes=5,
        ignore_label=255,
        weight_decay=1e-3,
        conv_weights=kernels,
    )
    want = sum(w * np_masked_xent(outputs[h], labels, 5, 255) for h, w in HEAD_WEIGHTS.items())
    want += 1e-3 * sum((k.numpy().astype(np.float64) ** 2).sum() / 2 for k in kernels)
    np.testing.assert_allclose(float(total), want, rtol=1e-5)
    assert HEAD_WEIGHTS == {'sub4_out': 0.16, 'sub24_out': 0.4, 'conv6_cls': 1.0}
    assert set(parts) == set(HEAD_WEIGHTS) | {'weight_decay'}


def test_all_ignored_gives_zero_not_nan():
    outputs, labels = make_case(3)
    total, count = masked_xent_sum(
        tf.constant(outputs['conv6_cls'], tf.float32), tf.fill(labels.shape, 255), 5, 255
    )
    assert float(total) == 0.0 and float(count) == 0.0
    loss, _ = icnet_loss(
        {'conv6_cls': tf.constant(outputs['conv6_cls'], tf.float32)},
        tf.fill(labels.shape, 255),
        num_classes=5,
        ignore_label=255,
        weight_decay=0.0,
        conv_weights=[tf.zeros((1, 1, 1, 1))],
    )
    assert float(loss) == 0.0


def test_poly_learning_rate():
    lr = PolyLR(1e-2, 100, 0.9)
    for step in (0, 1, 50, 99, 100, 150):
        want = 1e-2 * (1 - min(step, 100) / 100) ** 0.9
        np.testing.assert_allclose(float(lr(step)), want, rtol=1e-5, atol=1e-12)


def test_tf1_momentum_semantics_under_a_changing_learning_rate():
    rng = np.random.default_rng(4)
    w0 = rng.normal(size=(3, 2))
    grads = [rng.normal(size=(3, 2)) for _ in range(5)]
    schedule = PolyLR(0.1, 5, 0.9)
    var = tf.Variable(w0, dtype=tf.float32)
    opt = TF1Momentum(schedule, momentum=0.9)
    for g in grads:
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
    # TF1 MomentumOptimizer: accum = m * accum + g; w -= lr_t * accum
    w, accum = w0.copy(), np.zeros_like(w0)
    for step, g in enumerate(grads):
        accum = 0.9 * accum + g
        w -= 0.1 * (1 - step / 5) ** 0.9 * accum
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-5)
    assert int(opt.iterations) == 5
