"""The chained builder's ops against hand-computed values and independent NumPy computations."""

import numpy as np
import pytest
import tensorflow as tf

from icnet_tf.network import (
    BN_EPSILON,
    BN_MOMENTUM,
    Network,
    caffe_interp_size,
    resize_bilinear_align_corners,
    resize_bilinear_legacy,
)


# ------------------------------------------------------------------ NumPy reference helpers
def np_resize_bilinear(x, out_h, out_w, align_corners):
    """Direct loops over the TF1 ResizeBilinear definitions (no half-pixel centres)."""
    b, h, w, c = x.shape

    def src(i, n_in, n_out):
        if align_corners:
            return i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        return i * n_in / n_out

    out = np.zeros((b, out_h, out_w, c), np.float64)
    for i in range(out_h):
        y = src(i, h, out_h)
        y0 = int(np.floor(y))
        y1 = min(y0 + 1, h - 1)
        fy = y - y0
        for j in range(out_w):
            xx = src(j, w, out_w)
            x0 = int(np.floor(xx))
            x1 = min(x0 + 1, w - 1)
            fx = xx - x0
            top = x[:, y0, x0] * (1 - fx) + x[:, y0, x1] * fx
            bottom = x[:, y1, x0] * (1 - fx) + x[:, y1, x1] * fx
            out[:, i, j] = top * (1 - fy) + bottom * fy
    return out


def np_conv2d(x, w, stride=1, dilation=1):
    """VALID NHWC convolution by explicit sums; w is HWIO."""
    b, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    eh, ew = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    oh, ow = (h - eh) // stride + 1, (wd - ew) // stride + 1
    out = np.zeros((b, oh, ow, co))
    for i in range(oh):
        for j in range(ow):
            patch = x[
                :, i * stride : i * stride + eh : dilation, j * stride : j * stride + ew : dilation
            ]
            out[:, i, j] = np.einsum('bhwc,hwco->bo', patch, w)
    return out


class Tiny(Network):
    """A network whose setup is given as a function, for testing single ops."""

    output_name = 'out'

    def __init__(self, setup_fn, channels=3, **kw):
        super().__init__(**kw)
        self._setup_fn = setup_fn
        self.input_channels = channels

    def setup(self, n):
        self._setup_fn(n)

    def build_input_shape(self):
        return (1, 8, 8, self.input_channels)


def run(setup_fn, x, **call_kw):
    net = Tiny(setup_fn, channels=x.shape[-1])
    return net, net(tf.constant(x, tf.float32), **call_kw).numpy()


# ------------------------------------------------------------------------------- interp
@pytest.mark.parametrize(
    'size,s,z,expected',
    [
        (1025, 0.5, 1, 513),
        (1024, 0.5, 1, 512),
        (2049, 0.5, 1, 1025),
        (2048, 0.5, 1, 1024),
        (33, 1, 2, 65),
        (32, 1, 2, 63),
        (65, 1, 2, 129),
        (64, 1, 2, 127),
        (129, 0.5, 1, 65),
        (7, 1, 1, 7),
    ],
)
def test_caffe_interp_size(size, s, z, expected):
    assert caffe_interp_size(size, s, z) == expected
    assert int(caffe_interp_size(tf.constant(size), s, z)) == expected


def test_align_corners_resize_hand_computed():
    x = np.array([[0.0, 1.0], [2.0, 3.0]]).reshape(1, 2, 2, 1)
    got = resize_bilinear_align_corners(tf.constant(x, tf.float32), (3, 3)).numpy()[0, ..., 0]
    np.testing.assert_allclose(got, [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]], atol=1e-6)


def test_legacy_resize_hand_computed():
    # TF1 default mapping: source = i * in / out; the last sample clamps to the last pixel.
    x = np.array([0.0, 3.0]).reshape(1, 1, 2, 1)
    got = resize_bilinear_legacy(tf.constant(x, tf.float32), (1, 3)).numpy().ravel()
    np.testing.assert_allclose(got, [0.0, 2.0, 3.0], atol=1e-6)


@pytest.mark.parametrize('in_hw,out_hw', [((5, 7), (9, 13)), ((9, 13), (5, 7)), ((4, 4), (7, 3))])
def test_resizes_match_numpy(in_hw, out_hw):
    x = np.random.default_rng(0).normal(size=(2, *in_hw, 3))
    for fn, ac in ((resize_bilinear_align_corners, True), (resize_bilinear_legacy, False)):
        got = fn(tf.constant(x, tf.float32), out_hw).numpy()
        np.testing.assert_allclose(got, np_resize_bilinear(x, *out_hw, ac), atol=1e-5)


@pytest.mark.parametrize(
    'hw,s,z', [((33, 65), 1, 2), ((32, 64), 1, 2), ((65, 129), 0.5, 1), ((64, 128), 0.5, 1)]
)
def test_interp_layer_sizes_and_values(hw, s, z):
    x = np.random.default_rng(1).normal(size=(1, *hw, 2))
    _, got = run(lambda n: n.feed('data').interp(s_factor=s, z_factor=z, name='out'), x)
    oh, ow = caffe_interp_size(hw[0], s, z), caffe_interp_size(hw[1], s, z)
    assert got.shape == (1, oh, ow, 2)
    # TF computes the source coordinate in float32: ~1e-5 off the float64 reference.
    np.testing.assert_allclose(got, np_resize_bilinear(x, oh, ow, True), atol=1e-4)


def test_interp_with_unknown_spatial_shape():
    net = Tiny(lambda n: n.feed('data').interp(s_factor=0.5, name='out'), channels=1)
    f = tf.function(net).get_concrete_function(tf.TensorSpec([1, None, None, 1], tf.float32))
    x = np.random.default_rng(2).normal(size=(1, 33, 65, 1)).astype(np.float32)
    np.testing.assert_allclose(
        f(tf.constant(x)).numpy(), np_resize_bilinear(x, 17, 33, True), atol=1e-5
    )


# ------------------------------------------------------------------------ convolutions
def test_conv_and_atrous_conv_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 11, 12, 3))

    def setup(n):
        (
            n.feed('data')
            .zero_padding(2, name='pad')
            .atrous_conv(3, 3, 4, 2, relu=False, name='atrous')
        )
        n.feed('data').conv(3, 3, 5, 2, 2, relu=True, name='strided')
        n.feed('data').conv(1, 1, 2, 1, 1, relu=False, biased=False, name='out')

    net = Tiny(setup)
    net(tf.constant(x, tf.float32))
    for layer in ('atrous', 'strided'):
        net.params[layer]['biases'].assign(rng.normal(size=net.params[layer]['biases'].shape))
    net(tf.constant(x, tf.float32))
    p = {k: {q: v.numpy() for q, v in d.items()} for k, d in net.params.items()}

    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    want = np_conv2d(padded, p['atrous']['weights'], dilation=2) + p['atrous']['biases']
    assert net.layers['atrous'].shape == x.shape[:3] + (4,)  # zero_padding(d) keeps the size
    np.testing.assert_allclose(net.layers['atrous'].numpy(), want, atol=1e-4)
    want = np.maximum(np_conv2d(x, p['strided']['weights'], stride=2) + p['strided']['biases'], 0)
    np.testing.assert_allclose(net.layers['strided'].numpy(), want, atol=1e-4)
    assert set(p['out']) == {'weights'}  # biased=False creates no bias


def test_conv_same_padding_stride2_follows_tf():
    # TF 'SAME' with stride 2 on an even size pads 0 top/left and 1 bottom/right.
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    net = Tiny(
        lambda n: n.feed('data').conv(
            3, 3, 1, 2, 2, padding='SAME', relu=False, biased=False, name='out'
        ),
        channels=1,
    )
    net(tf.constant(x, tf.float32))
    w = np.ones((3, 3, 1, 1))
    net.params['out']['weights'].assign(w)
    got = net(tf.constant(x, tf.float32)).numpy()
    want = np_conv2d(np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))), w, stride=2)
    np.testing.assert_allclose(got, want)


def test_conv_transpose_matches_pytorch_geometry():
    # out = (h - 1) * s + k - 2 * crop; defined as the adjoint of a strided VALID conv.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 3, 4, 2))
    net = Tiny(
        lambda n: n.feed('data').conv_transpose(4, 4, 3, 2, 2, crop=1, name='out'), channels=2
    )
    got = net(tf.constant(x, tf.float32)).numpy()
    w = net.params['out']['weights'].numpy()  # [kh, kw, c_out, c_in]
    full = np.zeros((1, (3 - 1) * 2 + 4, (4 - 1) * 2 + 4, 3))
    for i in range(3):
        for j in range(4):
            full[0, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += np.einsum('c,hwoc->hwo', x[0, i, j], w)
    np.testing.assert_allclose(got, full[:, 1:-1, 1:-1], atol=1e-5)
    assert got.shape == (1, 6, 8, 3)


# --------------------------------------------------------------------- padding and pools
def test_zero_padding_then_valid_max_pool_hand_computed():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]).reshape(1, 3, 3, 1)
    _, got = run(
        lambda n: n.feed('data').zero_padding(1, name='p').max_pool(3, 3, 2, 2, name='out'), x
    )
    np.testing.assert_array_equal(got[0, ..., 0], [[5.0, 6.0], [8.0, 9.0]])
    _, got = run(
        lambda n: n.feed('data').zero_padding(1, name='p').avg_pool(3, 3, 2, 2, name='out'), x
    )
    np.testing.assert_allclose(got[0, ..., 0], [[12 / 9, 16 / 9], [24 / 9, 28 / 9]], atol=1e-6)


def test_zero_padding_asymmetric():
    x = np.ones((1, 2, 2, 1))
    _, got = run(lambda n: n.feed('data').zero_padding(((1, 0), (0, 2)), name='out'), x)
    assert got.shape == (1, 3, 4, 1)
    assert got[0, 0].sum() == 0 and got[0, 1:, :2].sum() == 4 and got[0, :, 2:].sum() == 0


# ------------------------------------------------------------------------- add / concat
def test_add_resizes_first_input_like_tf1():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(1, 3, 5, 2)), rng.normal(size=(1, 4, 6, 2))

    def setup(n):
        n.outputs['a'] = tf.constant(a, tf.float32)
        n.outputs['b'] = tf.constant(b, tf.float32)
        n.feed('a', 'b').add(name='out')

    _, got = run(setup, np.zeros((1, 1, 1, 3)))
    np.testing.assert_allclose(got, np_resize_bilinear(a, 4, 6, False) + b, atol=1e-5)


def test_add_same_shapes_is_plain_sum_and_concat():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, 4, 4, 3))

    def setup(n):
        n.feed('data').relu(name='r')
        n.feed('data', 'r', 'data').add(name='s')
        n.feed('data', 's').concat(name='out')

    net, got = run(setup, x)
    np.testing.assert_allclose(net.layers['s'].numpy(), 2 * x + np.maximum(x, 0), atol=1e-5)
    assert got.shape == (1, 4, 4, 6)


# --------------------------------------------------------------------------- batch norm
def _bn_net(update):
    net = Tiny(lambda n: n.feed('data').batch_normalization(name='out'), channels=3)
    rng = np.random.default_rng(7)
    x = rng.normal(2.0, 3.0, size=(2, 5, 4, 3))
    net(tf.constant(x, tf.float32))
    values = {
        'scale': rng.uniform(0.5, 1.5, 3),
        'offset': rng.normal(size=3),
        'mean': rng.normal(size=3),
        'variance': rng.uniform(0.5, 2, 3),
    }
    for k, v in values.items():
        net.params['out'][k].assign(v)
    return net, x, values


def test_batch_norm_inference_uses_moving_statistics():
    net, x, v = _bn_net(False)
    got = net(tf.constant(x, tf.float32), training=False).numpy()
    want = (x - v['mean']) / np.sqrt(v['variance'] + BN_EPSILON) * v['scale'] + v['offset']
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_batch_norm_training_uses_batch_statistics_and_updates_only_on_request():
    net, x, v = _bn_net(True)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    want = (x - mean) / np.sqrt(var + BN_EPSILON) * v['scale'] + v['offset']
    got = net(tf.constant(x, tf.float32), training=True).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(net.params['out']['mean'].numpy(), v['mean'], atol=1e-7)
    np.testing.assert_allclose(net.params['out']['variance'].numpy(), v['variance'], atol=1e-7)

    net(tf.constant(x, tf.float32), training=True, update_stats=True)
    n = x.shape[0] * x.shape[1] * x.shape[2]
    m = BN_MOMENTUM
    np.testing.assert_allclose(
        net.params['out']['mean'].numpy(), m * v['mean'] + (1 - m) * mean, atol=1e-5
    )
    np.testing.assert_allclose(
        net.params['out']['variance'].numpy(),
        m * v['variance'] + (1 - m) * var * n / (n - 1),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match='update_stats'):
        net(tf.constant(x, tf.float32), training=False, update_stats=True)


def test_batch_norm_of_16_bit_input_keeps_float32_statistics():
    """Mixed precision: a bfloat16 / float16 input is normalised with float32 batch statistics
    (those of its own 16-bit values, to float32 accuracy) and float32 gamma/beta, and the moving
    statistics are updated in float32; only the output is rounded to the 16-bit dtype."""
    for dtype, eps in ((tf.bfloat16, 2.0**-8), (tf.float16, 2.0**-11)):
        net, x, v = _bn_net(True)
        x16 = tf.cast(tf.constant(x, tf.float32), dtype)
        x_seen = tf.cast(x16, tf.float64).numpy()  # the values the layer receives
        mean, var = x_seen.mean(axis=(0, 1, 2)), x_seen.var(axis=(0, 1, 2))
        want = (x_seen - mean) / np.sqrt(var + BN_EPSILON) * v['scale'] + v['offset']
        got = net(x16, training=True, update_stats=True, compute_dtype=dtype)
        assert got.dtype == dtype
        # one rounding of the output: half an ulp of |y|, plus float32 noise
        np.testing.assert_allclose(tf.cast(got, tf.float64), want, rtol=eps, atol=1e-5)
        n, m = x.shape[0] * x.shape[1] * x.shape[2], BN_MOMENTUM
        # float32 statistics of the 16-bit values: far below a 16-bit rounding of them
        np.testing.assert_allclose(
            net.params['out']['mean'].numpy(), m * v['mean'] + (1 - m) * mean, atol=1e-5
        )
        np.testing.assert_allclose(
            net.params['out']['variance'].numpy(),
            m * v['variance'] + (1 - m) * var * n / (n - 1),
            atol=1e-5,
        )
        assert all(p.dtype == tf.float32 for p in net.params['out'].values())
        inference = net(x16, compute_dtype=dtype)  # moving statistics, fused, float32 inside
        m_now, v_now = (net.params['out'][k].numpy() for k in ('mean', 'variance'))
        want = (x_seen - m_now) / np.sqrt(v_now + BN_EPSILON) * v['scale'] + v['offset']
        np.testing.assert_allclose(tf.cast(inference, tf.float64), want, rtol=eps, atol=1e-5)


def test_compute_dtype_runs_every_layer_in_it_from_the_float32_variables():
    """`compute_dtype`: the same variables (names, shapes, float32: the master weights), no new
    ones; every layer computes in the 16-bit dtype (the output differs from float32 by bfloat16
    rounding, nonzero and within a few ulps of the output's scale), and the gradients reach the
    float32 variables."""

    def setup(n):
        (
            n.feed('data')
            .conv(3, 3, 8, 1, 1, name='c1', padding='SAME')
            .batch_normalization(name='bn', relu=True)
            .zero_padding(2, name='pad')
            .atrous_conv(3, 3, 8, 2, name='a1')
            .interp(z_factor=2, name='zoom')
            .conv_transpose(4, 4, 4, 2, 2, crop=1, name='up')
        )
        n.feed('up').resize_bilinear((9, 9), name='r')
        n.feed('r', 'r').add(name='s').conv(1, 1, 3, 1, 1, relu=False, name='out')

    x = tf.constant(np.random.default_rng(5).normal(size=(2, 9, 9, 3)), tf.float32)
    net = Tiny(setup, seed=1)
    ref = net(x, training=True).numpy()
    keys = {k: (tuple(v.shape), v.dtype) for k, v in net.variables_by_key().items()}
    with tf.GradientTape() as tape:
        got = net(x, training=True, compute_dtype=tf.bfloat16)
        loss = tf.reduce_sum(tf.cast(got, tf.float32) ** 2)
    grads = tape.gradient(loss, net.trainable_variables)
    assert got.dtype == tf.bfloat16
    assert {k: (tuple(v.shape), v.dtype) for k, v in net.variables_by_key().items()} == keys
    assert all(d == tf.float32 for _, d in keys.values())
    assert all(g is not None and g.dtype == tf.float32 for g in grads)
    err = np.abs(tf.cast(got, tf.float32).numpy() - ref).max() / np.abs(ref).max()
    assert 0 < err < 8 * 2.0**-8, err  # 16-bit, not float32; a few bfloat16 ulps
    with pytest.raises(ValueError, match='compute_dtype'):
        net(x, compute_dtype=tf.float64)


def test_dropout_only_when_training():
    x = np.ones((1, 8, 8, 4))
    f = lambda n: n.feed('data').dropout(0.5, name='out')  # noqa: E731
    _, got = run(f, x)
    np.testing.assert_array_equal(got, x)
    _, got = run(f, x, training=True)
    assert set(np.unique(got)) <= {0.0, 2.0} and (got == 0).any()


# ------------------------------------------------------------------ builder contract
def test_unknown_feed_names_the_layer():
    with pytest.raises(KeyError, match="'nope'"):
        run(lambda n: n.feed('nope').relu(name='out'), np.zeros((1, 2, 2, 3)))


def test_duplicate_and_missing_names_are_errors():
    with pytest.raises(ValueError, match='duplicate'):
        run(lambda n: n.feed('data').relu(name='out').relu(name='out'), np.zeros((1, 2, 2, 3)))
    with pytest.raises(TypeError):
        run(lambda n: n.feed('data').relu(), np.zeros((1, 2, 2, 3)))


def test_variables_created_once_keyed_by_layer_and_checked():
    net = Tiny(
        lambda n: (
            n.feed('data')
            .conv(3, 3, 4, 1, 1, name='c1')
            .batch_normalization(name='c1_bn')
            .relu(name='out')
        )
    )
    net(tf.zeros((1, 8, 8, 3)))
    assert net.param_shapes() == {
        'c1/weights': (3, 3, 3, 4),
        'c1/biases': (4,),
        'c1_bn/scale': (4,),
        'c1_bn/offset': (4,),
        'c1_bn/mean': (4,),
        'c1_bn/variance': (4,),
    }
    assert {v.name for v in net.trainable_variables} == {
        'c1/weights:0',
        'c1/biases:0',
        'c1_bn/scale:0',
        'c1_bn/offset:0',
    }
    before = list(net.variables)
    net(tf.zeros((2, 16, 12, 3)))  # other sizes reuse the same variables
    assert list(net.variables) == before
    net.input_channels = 5  # same layers, other channel count
    with pytest.raises(ValueError, match='c1/weights'):
        net(tf.zeros((1, 8, 8, 5)))
    assert net.conv_weights() == [net.params['c1']['weights']]
    assert len(net.bn_affine()) == 2


def test_layers_record_latest_eager_call_only():
    net = Tiny(lambda n: n.feed('data').relu(name='r').relu(name='out'))
    assert net.layers == {}
    net(tf.ones((1, 2, 2, 3)))
    assert set(net.layers) == {'data', 'r', 'out'}
    tf.function(net)(tf.zeros((1, 3, 3, 3)))
    assert net.layers['out'].shape == (1, 2, 2, 3)  # the traced call did not overwrite it
    out = net(tf.ones((1, 2, 2, 3)), outputs=['r', 'out'])
    assert set(out) == {'r', 'out'}


def test_checkpoint_round_trip(tmp_path):
    from converters.tf_checkpoint import read_weights_checkpoint, save_weights_checkpoint

    net = Tiny(
        lambda n: n.feed('data').conv(1, 1, 2, 1, 1, name='c').batch_normalization(name='out'),
        seed=3,
    )
    net(tf.zeros((1, 2, 2, 3)))
    prefix = save_weights_checkpoint(net, str(tmp_path))
    back = read_weights_checkpoint(str(tmp_path))
    assert back.keys() == {'c', 'out'} and prefix.startswith(str(tmp_path))
    np.testing.assert_array_equal(back['c']['weights'], net.params['c']['weights'].numpy())
    other = Tiny(
        lambda n: n.feed('data').conv(1, 1, 2, 1, 1, name='c').batch_normalization(name='out'),
        seed=4,
    )
    other(tf.zeros((1, 2, 2, 3)))
    other.load(str(tmp_path))
    np.testing.assert_array_equal(
        other.params['c']['weights'].numpy(), net.params['c']['weights'].numpy()
    )
