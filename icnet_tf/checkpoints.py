"""TF checkpoints of icnet_tf networks: writing weights, reading them back as nested dicts.

Networks are saved as `tf.train.Checkpoint(net=net)` (training adds `optimizer`, `step`). The
object path of a variable ends in `params/<layer>/<param>/.ATTRIBUTES/VARIABLE_VALUE` whatever
the root, so `read_weights_checkpoint()` recovers `{layer: {param: array}}` from any checkpoint
written by this project (weights-only conversions and training snapshots alike).
"""

import os
import re

import tensorflow as tf

from converters.errors import WeightsFileError

_PARAM_KEY = re.compile(r'(?:^|/)params/([^/]+)/([^/]+)/\.ATTRIBUTES/VARIABLE_VALUE$')


def resolve_checkpoint(path):
    """A checkpoint prefix from a directory (its latest checkpoint) or a prefix."""
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise WeightsFileError(f'{path}: directory holds no TF checkpoint')
        return latest
    if os.path.exists(path + '.index'):
        return path
    raise WeightsFileError(
        f'{path}: no such weights file or TF checkpoint '
        '(expected .npy, a checkpoint directory or a checkpoint prefix)'
    )


def read_weights_checkpoint(path):
    prefix = resolve_checkpoint(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        keys = reader.get_variable_to_shape_map()
        out = {}
        for key in keys:
            m = _PARAM_KEY.search(key)
            if m:
                out.setdefault(m.group(1), {})[m.group(2)] = reader.get_tensor(key)
    except (tf.errors.OpError, ValueError) as e:
        raise WeightsFileError(
            f'{prefix}: unreadable TF checkpoint ({str(e).splitlines()[0]})'
        ) from None
    if not out:
        raise WeightsFileError(f'{prefix}: TF checkpoint holds no network parameters')
    return out


def save_weights_checkpoint(net, out_dir):
    """Write the network's variables as a checkpoint in `out_dir`; returns the prefix."""
    os.makedirs(out_dir, exist_ok=True)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(net=net), out_dir, max_to_keep=1)
    return manager.save()
