"""TF2 (object-based) checkpoints written by this project: reading them as nested dicts, writing.

Networks are saved as `tf.train.Checkpoint(net=net)` (training adds `optimizer`, `step`). The
object path of a variable ends in `params/<layer>/<param>/.ATTRIBUTES/VARIABLE_VALUE` whatever
the root, so `read()` recovers `{layer: {param: array}}` from any checkpoint written by this
project (weights-only conversions and training snapshots alike). TF1 `Saver` checkpoints (plain
variable names) are the other row of the weights-format table: `converters.tf1_checkpoint`.
"""

import os
import re

import tensorflow as tf

from converters.errors import WeightsFileError

_PARAM_KEY = re.compile(r'(?:^|/)params/([^/]+)/([^/]+)/\.ATTRIBUTES/VARIABLE_VALUE$')
_OBJECT_GRAPH = '_CHECKPOINTABLE_OBJECT_GRAPH'


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
        '(expected .npy, .pth, a checkpoint directory or a checkpoint prefix)'
    )


def _keys(prefix):
    try:
        return tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError):
        return {}


def detect(path):
    """True for an object-based checkpoint (prefix or folder) of this project."""
    try:
        prefix = resolve_checkpoint(path)
    except WeightsFileError:
        return False
    return _OBJECT_GRAPH in _keys(prefix)


def read(path, key_map=None):
    """`({layer: {param: array}}, [])` of a checkpoint prefix or folder (`key_map` unused)."""
    del key_map
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
    return out, []


def read_weights_checkpoint(path):
    """`{layer: {param: array}}` of a checkpoint written by this project."""
    return read(path)[0]


def save_weights_checkpoint(net, out_dir):
    """Write the network's variables as a checkpoint in `out_dir`; returns the prefix."""
    os.makedirs(out_dir, exist_ok=True)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(net=net), out_dir, max_to_keep=1)
    return manager.save()
