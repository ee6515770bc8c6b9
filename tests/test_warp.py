"""Tests of dff_tf.warp: DFF feature warping with zero padding (MXNet BilinearSampler semantics).

Golden values come from hand-computed tables, from an independent pure-NumPy bilinear
sampler written below, and from PyTorch `grid_sample` -- never from `warp` itself.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from dff_tf.warp import warp

# A 3x4 map with distinct values; F = 1 + x + 4 * y is linear, so bilinear samples with all
# four neighbours inside the frame equal the linear function itself (easy to compute by hand).
F34 = np.arange(1, 13, dtype=np.float32).reshape(3, 4)


def np_warp(features, flow):
    """Reference: bilinear sampling at (y + dy, x + dx) of the zero-extended map, in float64."""
    features = np.asarray(features, np.float64)
    flow = np.asarray(flow, np.float64)
    b_, h, w, c = features.shape
    out = np.zeros((b_, h, w, c), np.float64)
    for b in range(b_):
        for y in range(h):
            for x in range(w):
                sy = y + flow[b, y, x, 1]
                sx = x + flow[b, y, x, 0]
                y0, x0 = math.floor(sy), math.floor(sx)
                wy, wx = sy - y0, sx - x0
                for yy, wyy in ((y0, 1.0 - wy), (y0 + 1, wy)):
                    for xx, wxx in ((x0, 1.0 - wx), (x0 + 1, wx)):
                        if 0 <= yy < h and 0 <= xx < w:
                            out[b, y, x] += wyy * wxx * features[b, yy, xx]
    return out


def warp_2d(image, dx, dy):
    """Warps a single-channel [H, W] map with a (possibly constant) flow; returns [H, W]."""
    image = np.asarray(image, np.float32)
    h, w = image.shape
    flow = np.zeros((1, h, w, 2), np.float32)
    flow[0, ..., 0] = dx
    flow[0, ..., 1] = dy
    return warp(image[None, ..., None], flow).numpy()[0, ..., 0], flow


def check_2d(image, dx, dy, expected):
    """Checks warp and the NumPy reference against a hand-computed table."""
    got, flow = warp_2d(image, dx, dy)
    ref = np_warp(np.asarray(image)[None, ..., None], flow)[0, ..., 0]
    np.testing.assert_allclose(ref, expected, rtol=0, atol=1e-12, err_msg='NumPy reference')
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg='warp')


# --- hand-computed tiny grids ---------------------------------------------------------------


def test_zero_flow_is_exact_identity():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    out = warp(feats, np.zeros((2, 5, 7, 2), np.float32)).numpy()
    np.testing.assert_array_equal(out, feats)


def test_integer_shift_right_by_one_zeroes_first_column():
    # Content moves right: output[y, x] = F[y, x - 1], i.e. dx = -1.
    expected = [[0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11]]
    check_2d(F34, dx=-1.0, dy=0.0, expected=expected)
    got, _ = warp_2d(F34, -1.0, 0.0)
    np.testing.assert_array_equal(got, expected)  # integer shifts are exact


def test_integer_shift_down_by_one_zeroes_first_row():
    expected = [[0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8]]
    check_2d(F34, dx=0.0, dy=-1.0, expected=expected)


def test_x_flow_moves_content_horizontally_only():
    # dx = +1 reads the right neighbour (last column 0); the rows are untouched.
    check_2d(F34, dx=1.0, dy=0.0, expected=[[2, 3, 4, 0], [6, 7, 8, 0], [10, 11, 12, 0]])


def test_y_flow_moves_content_vertically_only():
    # dy = +1 reads the row below (last row 0); the columns are untouched.
    check_2d(F34, dx=0.0, dy=1.0, expected=[[5, 6, 7, 8], [9, 10, 11, 12], [0, 0, 0, 0]])


def test_per_pixel_flow_channels_are_not_swapped():
    # Only pixel (0, 0) moves: with (dx, dy) = (2, 1) it reads F[1, 2] = 7; swapped would be F[2,
    # 1].
    flow = np.zeros((1, 3, 4, 2), np.float32)
    flow[0, 0, 0] = [2.0, 1.0]
    out = warp(F34[None, ..., None], flow).numpy()[0, ..., 0]
    expected = F34.copy()
    expected[0, 0] = 7.0
    np.testing.assert_array_equal(out, expected)


def test_half_pixel_shift_in_x():
    # sx = x + 0.5: mean of the pixel and its right neighbour; the right neighbour of the last
    # column is outside, so that column blends with 0.
    check_2d(
        F34,
        dx=0.5,
        dy=0.0,
        expected=[[1.5, 2.5, 3.5, 2.0], [5.5, 6.5, 7.5, 4.0], [9.5, 10.5, 11.5, 6.0]],
    )


def test_half_pixel_outside_on_the_left_blends_with_zero():
    # Sample at x = -0.5 on row y gives 0.5 * F[y, 0].
    check_2d(
        F34,
        dx=-0.5,
        dy=0.0,
        expected=[[0.5, 1.5, 2.5, 3.5], [2.5, 5.5, 6.5, 7.5], [4.5, 9.5, 10.5, 11.5]],
    )


def test_quarter_and_three_quarter_shift_in_both_axes():
    # dy = 0.25, dx = 0.75. Inside: 1 + (x + .75) + 4 (y + .25). Last column: 0.25 * F(y + .25, 3).
    # Last row: 0.75 * F(2, x + .75).
    expected = [[2.75, 3.75, 4.75, 1.25], [6.75, 7.75, 8.75, 2.25], [7.3125, 8.0625, 8.8125, 2.25]]
    check_2d(F34, dx=0.75, dy=0.25, expected=expected)


def test_samples_fully_outside_are_zero():
    # Absolute sample positions (sx, sy), the same for every pixel.
    for sx, sy in [
        (-1.0, 0.0),
        (0.0, -1.0),
        (4.0, 0.0),
        (0.0, 3.0),
        (-100.0, 100.0),
        (-1.5, 0.0),
        (0.0, 3.5),
        (1e4, -1e4),
        (-1.0, -1.0),
        (4.0, 3.0),
    ]:
        got, _ = warp_2d(np.ones((3, 4), np.float32), sx - np.arange(4), sy - np.arange(3)[:, None])
        np.testing.assert_array_equal(got, np.zeros((3, 4)), err_msg=f'sample at (y={sy}, x={sx})')


def test_samples_between_last_pixel_and_zero_ring_and_beyond():
    # Absolute sample positions on row 1 of F34 (flow = position - x); W = 4, H = 3.
    # x in (W - 1, W): blend of the last column with 0; x >= W: 0 (also past the ring).
    xs = np.array([3.3, 3.5, 3.999, 4.0, 4.5, 5.2, 7.0, -0.25, -0.999, -1.7])
    for sx in xs.astype(np.float32).astype(np.float64):  # the positions warp actually sees
        flow = np.zeros((1, 3, 4, 2), np.float32)
        flow[0, 1, 0] = [sx, 0.0]
        got = warp(F34[None, ..., None], flow).numpy()[0, 1, 0, 0]
        if -1 < sx < 0:
            expected = (1 + sx) * F34[1, 0]
        elif 3 < sx < 4:
            expected = (4 - sx) * F34[1, 3]
        else:
            expected = 0.0
        assert got == pytest.approx(expected, abs=1e-5), sx
        assert np_warp(F34[None, ..., None], flow)[0, 1, 0, 0] == pytest.approx(expected, abs=1e-9)
    # Same along y, in the corner: sample at (H - 1 + 0.4, W - 1 + 0.5) = 0.6 * 0.5 * F[2, 3].
    flow = np.zeros((1, 3, 4, 2), np.float32)
    flow[0, 2, 3] = [0.5, 0.4]
    got = warp(F34[None, ..., None], flow).numpy()[0, 2, 3, 0]
    assert got == pytest.approx(0.3 * 12.0, abs=1e-5)
    # Top-left corner at (-0.5, -0.5): 0.25 * F[0, 0].
    flow[0, 2, 3] = [-3.5, -2.5]
    got = warp(F34[None, ..., None], flow).numpy()[0, 2, 3, 0]
    assert got == pytest.approx(0.25 * 1.0, abs=1e-6)


def test_sign_and_channel_order_contrast_with_tfa_inside_the_frame():
    # Documented relation: warp(f, flow) == dense_image_warp(f, -flow[..., ::-1]) where the
    # sample and its four neighbours are inside the frame (tfa clamps instead of zero padding).
    tfa = pytest.importorskip('tensorflow_addons')
    rng = np.random.default_rng(10)
    feats = rng.normal(size=(1, 6, 8, 2)).astype(np.float32)
    flow = rng.uniform(-0.9, 0.9, size=(1, 6, 8, 2)).astype(np.float32)
    ours = warp(feats, flow).numpy()
    theirs = tfa.image.dense_image_warp(feats, -flow[..., ::-1]).numpy()
    np.testing.assert_allclose(ours[:, 1:-1, 1:-1], theirs[:, 1:-1, 1:-1], rtol=0, atol=1e-5)
    assert np.abs(ours[:, 0] - theirs[:, 0]).max() > 1e-2  # differs on the border: zeros vs clamp


# --- random flows vs the NumPy sampler ------------------------------------------------------


def _random_case(rng, b, h, w, c, scale=3.0):
    feats = rng.normal(size=(b, h, w, c)).astype(np.float32)
    flow = rng.uniform(-scale, scale, size=(b, h, w, 2)).astype(np.float32)
    # Some integer displacements and some samples exactly on the frame's edges.
    flow[:, ::3, ::2] = np.round(flow[:, ::3, ::2])
    return feats, flow


def test_random_flows_match_numpy_sampler():
    rng = np.random.default_rng(1)
    feats, flow = _random_case(rng, 2, 5, 7, 3)
    np.testing.assert_allclose(warp(feats, flow).numpy(), np_warp(feats, flow), rtol=0, atol=1e-5)


@pytest.mark.parametrize('hw', [(1, 1), (1, 5), (4, 1), (2, 2)])
def test_tiny_maps_are_legal_and_correct(hw):
    # tfa itself needs H, W >= 2; the zero ring makes 1-pixel maps fine.
    rng = np.random.default_rng(2)
    feats, flow = _random_case(rng, 2, *hw, 2, scale=1.5)
    np.testing.assert_allclose(warp(feats, flow).numpy(), np_warp(feats, flow), rtol=0, atol=1e-5)


def test_each_batch_element_uses_its_own_flow():
    rng = np.random.default_rng(3)
    feats, flow = _random_case(rng, 3, 4, 6, 2)
    out = warp(feats, flow).numpy()
    for b in range(3):
        np.testing.assert_allclose(
            out[b : b + 1], warp(feats[b : b + 1], flow[b : b + 1]).numpy(), rtol=0, atol=1e-6
        )


@pytest.mark.parametrize(
    'fdtype, wdtype, atol',
    [
        (np.float64, np.float64, 1e-5),
        (np.float64, np.float32, 1e-5),
        (np.float32, np.float16, 1e-5),
        (np.float16, np.float32, 2e-2),
    ],
)
def test_dtypes(fdtype, wdtype, atol):
    rng = np.random.default_rng(4)
    feats, flow = _random_case(rng, 1, 4, 5, 2)
    flow = flow.astype(wdtype)
    out = warp(feats.astype(fdtype), flow)
    assert out.dtype == tf.as_dtype(fdtype)
    # Coordinates are float32 (documented), so compare with the reference on the cast flow.
    np.testing.assert_allclose(
        out.numpy().astype(np.float64),
        np_warp(feats.astype(fdtype), flow.astype(np.float32)),
        rtol=0,
        atol=atol,
    )


# --- PyTorch grid_sample (zeros, align_corners=True) ----------------------------------------


@pytest.mark.torch
def test_matches_torch_grid_sample_zeros_align_corners():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(5)
    b, h, w, c = 2, 6, 9, 4
    feats, flow = _random_case(rng, b, h, w, c, scale=4.0)
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
    sx = xs[None] + flow[..., 0].astype(np.float64)
    sy = ys[None] + flow[..., 1].astype(np.float64)
    grid = np.stack([2.0 * sx / (w - 1) - 1.0, 2.0 * sy / (h - 1) - 1.0], axis=-1)
    ref = (
        F.grid_sample(
            torch.from_numpy(feats.transpose(0, 3, 1, 2).astype(np.float64)),
            torch.from_numpy(grid),
            mode='bilinear',
            padding_mode='zeros',
            align_corners=True,
        )
        .numpy()
        .transpose(0, 2, 3, 1)
    )
    np.testing.assert_allclose(ref, np_warp(feats, flow), rtol=0, atol=1e-9)  # reference agrees
    np.testing.assert_allclose(warp(feats, flow).numpy(), ref, rtol=0, atol=1e-5)


# --- gradients --------------------------------------------------------------------------------


def _gradient_case():
    rng = np.random.default_rng(6)
    b, h, w, c = 1, 4, 5, 2
    feats = rng.uniform(-1, 1, size=(b, h, w, c))
    # Integer displacements plus fractional offsets keep every sample (and +-delta) away
    # from integer coordinates, where the interpolant has kinks. Some samples land partially
    # or fully outside the frame.
    flow = rng.integers(-2, 3, size=(b, h, w, 2)).astype(np.float64)
    flow[..., 0] += 0.37
    flow[..., 1] -= 0.29
    return feats, flow


def test_gradient_wrt_features_matches_numeric():
    feats, flow = _gradient_case()
    flow_t = tf.constant(flow, tf.float32)
    theo, num = tf.test.compute_gradient(lambda f: warp(f, flow_t), [tf.constant(feats)])
    assert np.abs(theo[0]).max() > 0.1
    np.testing.assert_allclose(theo[0], num[0], rtol=0, atol=1e-6)


def test_gradient_wrt_flow_matches_numeric():
    feats, flow = _gradient_case()
    feats_t = tf.constant(feats, tf.float32)
    theo, num = tf.test.compute_gradient(
        lambda fl: warp(feats_t, fl), [tf.constant(flow, tf.float32)]
    )
    assert np.abs(theo[0]).max() > 0.1
    np.testing.assert_allclose(theo[0], num[0], rtol=0, atol=1e-3)


def test_flow_gradient_is_zero_where_all_neighbours_are_outside():
    feats = tf.constant(np.random.default_rng(7).normal(size=(1, 3, 4, 2)), tf.float32)
    flow = np.zeros((1, 3, 4, 2), np.float32)
    flow[0, 0, 0] = [-1.6, 0.3]  # x in (-2, -1): outside
    flow[0, 1, 1] = [0.2, 2.4]  # y = 3.4 >= H: outside
    flow[0, 2, 2] = [-0.6, 0.2]  # partially inside (x = 1.4, y = 2.2): nonzero gradient
    flow = tf.constant(flow)
    with tf.GradientTape() as tape:
        tape.watch(flow)
        out = warp(feats, flow)
    grad = tape.gradient(out, flow).numpy()
    np.testing.assert_array_equal(grad[0, 0, 0], [0.0, 0.0])
    np.testing.assert_array_equal(grad[0, 1, 1], [0.0, 0.0])
    assert np.all(grad[0, 2, 2] != 0.0)


# --- tf.function, unknown shapes, validation ------------------------------------------------


def test_tf_function_with_unknown_shapes_equals_eager():
    warp_fn = tf.function(
        warp,
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32),
            tf.TensorSpec([None, None, None, 2], tf.float32),
        ],
    )
    rng = np.random.default_rng(8)
    for shape in [(2, 5, 7), (1, 1, 1), (3, 2, 9)]:
        feats, flow = _random_case(rng, *shape, 3)
        graph = warp_fn(feats, flow)
        np.testing.assert_array_equal(graph.numpy(), warp(feats, flow).numpy())
        np.testing.assert_allclose(graph.numpy(), np_warp(feats, flow), rtol=0, atol=1e-5)
    graph_out = warp_fn.get_concrete_function().structured_outputs
    assert graph_out.shape.as_list() == [None, None, None, 3]


def test_tf_function_unknown_rank_and_gradients():
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32), tf.TensorSpec(None, tf.float32)])
    def fn(feats, flow):
        with tf.GradientTape() as tape:
            tape.watch([feats, flow])
            out = warp(feats, flow)
            loss = tf.reduce_sum(out * out)
        return (out,) + tuple(tape.gradient(loss, [feats, flow]))

    rng = np.random.default_rng(9)
    feats, flow = _random_case(rng, 1, 3, 4, 2)
    out, gf, gw = fn(feats, flow)
    np.testing.assert_allclose(out.numpy(), np_warp(feats, flow), rtol=0, atol=1e-5)
    feats_t, flow_t = tf.constant(feats), tf.constant(flow)
    with tf.GradientTape() as tape:
        tape.watch([feats_t, flow_t])
        loss = tf.reduce_sum(warp(feats_t, flow_t) ** 2)
    ef, ew = tape.gradient(loss, [feats_t, flow_t])
    np.testing.assert_allclose(gf.numpy(), ef.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gw.numpy(), ew.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    'fshape, wshape, match',
    [
        ((5, 7, 3), (5, 7, 2), 'features .* must have rank 4'),
        ((1, 5, 7, 3), (5, 7, 2), 'flow .* must have rank 4'),
        ((1, 5, 7, 3), (1, 5, 7, 3), 'last dimension of flow must be 2'),
        ((2, 5, 7, 3), (1, 5, 7, 2), 'same batch size'),
        ((1, 5, 7, 3), (1, 6, 7, 2), 'same height'),
        ((1, 5, 7, 3), (1, 5, 6, 2), 'same width'),
        ((1, 0, 7, 3), (1, 0, 7, 2), 'height >= 1'),
        ((1, 5, 0, 3), (1, 5, 0, 2), 'width >= 1'),
    ],
)
def test_bad_shapes_raise_clear_errors(fshape, wshape, match):
    with pytest.raises(ValueError, match=match):
        warp(tf.zeros(fshape), tf.zeros(wshape))


def test_bad_dtypes_raise():
    with pytest.raises(TypeError, match='features must be float'):
        warp(tf.zeros((1, 2, 2, 1), tf.int32), tf.zeros((1, 2, 2, 2)))
    with pytest.raises(TypeError, match='flow must be a float'):
        warp(tf.zeros((1, 2, 2, 1)), tf.zeros((1, 2, 2, 2), tf.int32))


@pytest.mark.parametrize(
    'fshape, wshape, match',
    [
        ((1, 5, 7, 3), (1, 6, 7, 2), 'same height'),
        ((1, 5, 7, 3), (1, 5, 6, 2), 'same width'),
        ((2, 5, 7, 3), (1, 5, 7, 2), 'same batch size'),
        ((1, 0, 7, 3), (1, 0, 7, 2), 'height >= 1'),
    ],
)
def test_bad_shapes_raise_at_runtime_with_unknown_shapes(fshape, wshape, match):
    warp_fn = tf.function(
        warp,
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32),
            tf.TensorSpec([None, None, None, 2], tf.float32),
        ],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        warp_fn(tf.zeros(fshape), tf.zeros(wshape))


def test_unknown_rank_checks_at_runtime():
    warp_fn = tf.function(
        warp, input_signature=[tf.TensorSpec(None, tf.float32), tf.TensorSpec(None, tf.float32)]
    )
    # The rank is enforced by tf.ensure_shape (a tf.rank assertion would be folded by Grappler).
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r'features \[5,7,3\] is not compatible with expected shape',
    ):
        warp_fn(tf.zeros((5, 7, 3)), tf.zeros((1, 5, 7, 2)))
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r'flow \[1,5,7,2,1\] is not compatible with expected shape',
    ):
        warp_fn(tf.zeros((1, 5, 7, 3)), tf.zeros((1, 5, 7, 2, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match='same batch size'):
        warp_fn(tf.zeros((2, 5, 7, 3)), tf.zeros((1, 5, 7, 2)))
    with pytest.raises(tf.errors.InvalidArgumentError, match='last dimension of flow must be 2'):
        warp_fn(tf.zeros((1, 5, 7, 3)), tf.zeros((1, 5, 7, 3)))
