"""Feature warping of Deep Feature Flow (DFF), on top of `tfa.image.dense_image_warp`.

DFF propagates the deep features of a key frame to the current frame with the
optical flow predicted by FlowNet: ``warp(key_features, flow)``. The original
(MXNet) implementation is ``GridGenerator(transform_type='warp')`` followed by
``BilinearSampler``; this module reproduces it exactly, including its zero
padding outside the frame.

Only one private function, `_sample_with_border_clamp`, talks to TensorFlow
Addons (end-of-life). Replacing the backend means rewriting that one function
with any bilinear sampler that clamps coordinates to the border; the zero
padding and all the validation live in `warp` and do not depend on the backend.
"""

import warnings

import tensorflow as tf

with warnings.catch_warnings():
    # The end-of-life notice TFA prints on import; the dependency is confined to this module.
    warnings.filterwarnings('ignore', message=r'\s*TensorFlow Addons', category=UserWarning)
    import tensorflow_addons as tfa

__all__ = ['warp']

_FEATURE_DTYPES = (tf.float16, tf.float32, tf.float64)
_FLOW_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def warp(features: tf.Tensor, flow: tf.Tensor, name: str | None = None) -> tf.Tensor:
    """Warps `features` with a dense optical flow, zero outside the frame.

    Specifically, the value at `output[b, y, x, c]` is the bilinear sample of
    `features[b, :, :, c]` at row `y + flow[b, y, x, 1]` and column
    `x + flow[b, y, x, 0]`:

        sy = y + flow[b, y, x, 1]        # dy, rows
        sx = x + flow[b, y, x, 0]        # dx, columns
        y0, x0 = floor(sy), floor(sx)
        wy, wx = sy - y0, sx - x0
        output[b, y, x, c] =
            (1 - wy) * (1 - wx) * F(y0,     x0    ) + (1 - wy) * wx * F(y0,     x0 + 1)
          +      wy  * (1 - wx) * F(y0 + 1, x0    ) +      wy  * wx * F(y0 + 1, x0 + 1)

    where `F(i, j) = features[b, i, j, c]` if `0 <= i < height` and
    `0 <= j < width`, and `F(i, j) = 0` otherwise. Coordinates are on the
    integer pixel grid of the feature map (pixel centres, i.e. the
    `align_corners=True` convention): a sample at integer `(sy, sx)` inside the
    frame is exactly that pixel, and a zero flow is the identity, bit for bit.

    Channel order and sign follow the optical-flow convention of FlowNet and
    DFF: channel 0 is the horizontal displacement `dx` (columns), channel 1
    the vertical one `dy` (rows), and the flow maps each pixel `p` of the
    CURRENT frame to `p + flow(p)` in the KEY frame whose features are warped.
    NOTE: this differs from `tfa.image.dense_image_warp`, which reads
    `image[b, y - flow[..., 0], x - flow[..., 1]]` (channel 0 = rows,
    subtracted); `warp(f, flow)` equals `dense_image_warp(f, -flow[..., ::-1])`
    wherever the sample and its four neighbours are inside the frame.

    Border behaviour: zero padding per neighbour, not clamping (also unlike
    tfa). The feature map is interpolated as if extended with zeros beyond its
    border, so a sample at `sx = -0.5` gives `0.5 * features[b, sy, 0, c]`
    (for integer `sy`), a sample at `sx = width - 1 + 0.3` gives
    `0.7 * features[b, sy, width - 1, c]`, and any sample with `sx <= -1`,
    `sx >= width`, `sy <= -1` or `sy >= height` gives 0.

    This reproduces MXNet `GridGenerator(transform_type='warp')` +
    `BilinearSampler` of the original DFF, i.e. PyTorch
    `F.grid_sample(features_nchw, grid, mode='bilinear', padding_mode='zeros',
    align_corners=True)` with `grid[..., 0] = 2 * sx / (width - 1) - 1` and
    `grid[..., 1] = 2 * sy / (height - 1) - 1`.

    Implementation: `features` get a one-pixel ring of zeros (and `flow` a ring
    of anything, here zeros), the padded map is warped with a bilinear sampler
    that clamps coordinates to the border (`tfa.image.dense_image_warp`), and
    the ring is cropped off. Per axis, the clamping sampler on the padded map
    is linear interpolation of the zero-extended map at the coordinate clamped
    to `[-1, size]`; inside that interval the padded map holds exactly the
    zero-extended values on every integer node, and outside it the clamp lands
    on the zero ring, where the zero-extended map is 0 as well. Bilinear
    interpolation is the product of the two axes, so the result is exact.

    Args:
      features: 4-D `Tensor` with shape `[batch, height, width, channels]`,
        of type `tf.float32` (also `tf.float16` or `tf.float64`).
      flow: 4-D `Tensor` with shape `[batch, height, width, 2]`, in pixels of
        the feature grid, channels `(dx, dy)`. Any float type; it is cast to
        `tf.float32` to build the sampling coordinates (the gradient flows
        back through the cast). It must be finite.
      name: A name for the operation (optional).

    Returns:
      A 4-D `Tensor` with shape `[batch, height, width, channels]` and the
      dtype of `features`.

    Gradients: differentiable in both inputs (piecewise). The gradient with
    respect to `features` is the transposed bilinear weights. The gradient with
    respect to `flow` is the derivative of the interpolant: it is zero where
    all four neighbours are outside the frame. At integer coordinates the
    interpolant has a kink and is not differentiable; there the returned value
    is one of the two one-sided derivatives (the right-sided one, from the
    floor, except exactly on the frame-and-ring boundaries `-1` and `size`).
    Check gradients numerically only away from integer coordinates.

    Raises:
      ValueError: if an input does not have rank 4, the last dimension of
        `flow` is not 2, the batch or spatial sizes differ, or `height < 1` or
        `width < 1`, where the shapes are known statically. Otherwise the same
        checks raise `tf.errors.InvalidArgumentError` when the graph runs (with
        the message of `tf.ensure_shape` for an input of unknown rank). Unlike
        tfa, 1-pixel-high or -wide maps (even 1x1) are fine.
      TypeError: if `features` or `flow` does not have a supported float type.
    """
    with tf.name_scope(name or 'warp'):
        features = tf.convert_to_tensor(features, name='features')
        flow = tf.convert_to_tensor(flow, name='flow')
        if features.dtype not in _FEATURE_DTYPES:
            raise TypeError(
                f'warp: features must be float16, float32 or float64, got {features.dtype.name}'
            )
        if flow.dtype not in _FLOW_DTYPES:
            raise TypeError(f'warp: flow must be a float tensor, got {flow.dtype.name}')

        features, flow, checks = _validate_shapes(features, flow)
        if checks:
            with tf.control_dependencies(checks):
                features = tf.identity(features)
                flow = tf.identity(flow)

        out_shape = features.shape.merge_with(flow.shape[:-1].concatenate([None]))
        flow = tf.cast(flow, tf.float32)

        ring = [[0, 0], [1, 1], [1, 1], [0, 0]]
        padded = _sample_with_border_clamp(tf.pad(features, ring), tf.pad(flow, ring))
        warped = padded[:, 1:-1, 1:-1, :]
        warped.set_shape(out_shape)
        return warped


# reduce_retracing: eager calls with ever new map sizes reuse one shape-generic trace instead of
# tracing tfa's function (~0.3 s) for every size. Inside a caller's tf.function it is inlined.
@tf.function(reduce_retracing=True)
def _sample_with_border_clamp(features: tf.Tensor, flow: tf.Tensor) -> tf.Tensor:
    """The backend: bilinear sampling that CLAMPS coordinates to the border.

    Returns `out[b, y, x, c]` = bilinear sample of `features[b, :, :, c]` at
    `(clip(y + flow[b, y, x, 1], 0, H - 1), clip(x + flow[b, y, x, 0], 0, W - 1))`
    for `features` `[B, H, W, C]` with `H, W >= 2` and a float32 `flow`
    `[B, H, W, 2]` in `(dx, dy)` order. The result has the dtype of
    `features`; it must be differentiable in both inputs. This is the only
    function that depends on TensorFlow Addons.
    """
    # tfa samples image[y - f[..., 0], x - f[..., 1]]: rows first, subtracted.
    tfa_flow = -tf.stack([flow[..., 1], flow[..., 0]], axis=-1)
    return tfa.image.dense_image_warp(features, tfa_flow)


def _validate_shapes(
    features: tf.Tensor, flow: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, list[tf.Operation]]:
    """Checks the shapes statically where known, and returns runtime assertions for the rest.

    An input of unknown rank goes through `tf.ensure_shape(x, [None] * 4)`. The rank must be
    enforced by that data dependency, not by an assertion: Grappler refines the unknown rank
    to 4 from the rank-4 consumers downstream and would constant-fold a `tf.rank` check away.
    Returns the (possibly rank-checked) inputs and the assertions.
    """
    checked = []
    for tensor, what in ((features, 'features'), (flow, 'flow')):
        if tensor.shape.rank is None:
            # The runtime error reads "Shape of tensor <...>/features [5,7,3] is not compatible
            # with expected shape [?,?,?,?]".
            tensor = tf.ensure_shape(tf.identity(tensor, name=what), [None] * 4)
        elif tensor.shape.rank != 4:
            layout = '[batch, height, width, ' + ('channels]' if what == 'features' else '2]')
            raise ValueError(f'warp: {what} {layout} must have rank 4, got shape {tensor.shape}')
        checked.append(tensor)
    features, flow = checked

    checks = []
    dyn_f, dyn_w = tf.shape(features), tf.shape(flow)

    def runtime_check(condition, message):
        checks.append(
            tf.debugging.Assert(
                condition, [message + '; got features shape', dyn_f, 'and flow shape', dyn_w]
            )
        )

    if flow.shape[3] is not None:
        if flow.shape[3] != 2:
            raise ValueError(
                f'warp: the last dimension of flow must be 2 (dx, dy), got flow shape {flow.shape}'
            )
    else:
        runtime_check(tf.equal(dyn_w[3], 2), 'warp: the last dimension of flow must be 2 (dx, dy)')

    for axis, dim in ((0, 'batch size'), (1, 'height'), (2, 'width')):
        if features.shape[axis] is not None and flow.shape[axis] is not None:
            if features.shape[axis] != flow.shape[axis]:
                raise ValueError(
                    f'warp: features and flow must have the same {dim}, got features '
                    f'shape {features.shape} and flow shape {flow.shape}'
                )
        else:
            runtime_check(
                tf.equal(dyn_f[axis], dyn_w[axis]),
                f'warp: features and flow must have the same {dim}',
            )

    for axis, dim in ((1, 'height'), (2, 'width')):
        if features.shape[axis] is not None:
            if features.shape[axis] < 1:
                raise ValueError(f'warp: features must have {dim} >= 1, got shape {features.shape}')
        else:
            runtime_check(tf.greater_equal(dyn_f[axis], 1), f'warp: features must have {dim} >= 1')
    return features, flow, checks
