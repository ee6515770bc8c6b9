"""Deterministic NumPy weights and inputs for golden-tensor parity tests.

Every array depends only on (seed, parameter key, shape), never on creation order, so the
reference implementation (run once, offline) and the code under test draw identical weights
without sharing any code path but this file. Keys are `<layer name>/<param>` with the
caffe-tensorflow parameter names (`weights` HWIO, `biases`, `scale`, `offset`, `mean`,
`variance`).
"""

import zlib

import numpy as np


def _rng(seed, key):
    return np.random.default_rng([int(seed), zlib.crc32(key.encode('utf-8'))])


def seeded_array(key, shape, seed):
    """One parameter array, scaled so that deep random networks stay well conditioned."""
    shape = tuple(int(d) for d in shape)
    param = key.rsplit('/', 1)[-1]
    rng = _rng(seed, key)
    if param == 'weights':  # He-normal on the fan-in of an HWIO (or HW-O-I transposed) kernel
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
        arr = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
    elif param in ('scale', 'variance'):
        arr = rng.uniform(0.5, 1.5, shape)
    elif param in ('biases', 'offset', 'mean'):
        arr = rng.normal(0.0, 0.1, shape)
    else:
        raise ValueError(f'unknown parameter kind in {key!r}')
    return arr.astype(np.float32)


def seeded_weights(shapes, seed):
    """`{'layer/param': shape}` -> nested `{layer: {param: ndarray}}`."""
    out = {}
    for key, shape in shapes.items():
        layer, param = key.rsplit('/', 1)
        out.setdefault(layer, {})[param] = seeded_array(key, shape, seed)
    return out


def seeded_images(shape, seed):
    """A float32 NHWC batch shaped like mean-subtracted BGR pixels (roughly -128..128)."""
    rng = _rng(seed, 'images')
    return rng.uniform(-128.0, 128.0, tuple(shape)).astype(np.float32)


def seeded_torch_array(key, shape, seed):
    """One PyTorch state-dict entry (`conv.weight` OIHW, BN `weight/bias/running_*`...)."""
    shape = tuple(int(d) for d in shape)
    param = key.rsplit('.', 1)[-1]
    rng = _rng(seed, key)
    if param == 'num_batches_tracked':
        return np.array(0, dtype=np.int64)
    if param == 'weight' and len(shape) > 1:  # conv (O, I, kh, kw) / transposed (I, O, kh, kw)
        arr = rng.normal(0.0, np.sqrt(2.0 / max(int(np.prod(shape[1:])), 1)), shape)
    elif param in ('weight', 'running_var'):  # BN gamma and variance
        arr = rng.uniform(0.5, 1.5, shape)
    elif param in ('bias', 'running_mean'):
        arr = rng.normal(0.0, 0.1, shape)
    else:
        raise ValueError(f'unknown parameter kind in {key!r}')
    return arr.astype(np.float32)


def seeded_torch_state_dict(shapes, seed):
    """`{'torch.key': shape}` -> flat `{'torch.key': ndarray}` (load with torch.from_numpy)."""
    return {key: seeded_torch_array(key, shape, seed) for key, shape in shapes.items()}


def seeded_uniform(shape, seed, low, high, tag='uniform'):
    """A float32 array uniform in [low, high), e.g. normalised image pairs for FlowNetS."""
    return _rng(seed, tag).uniform(low, high, tuple(shape)).astype(np.float32)
