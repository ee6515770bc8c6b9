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
from converters.tf1_checkpoint import checked_index, index_keys, resolve_folder

# `<root>/params/<layer>/<param>/.ATTRIBUTES/VARIABLE_VALUE`; root is the object path of the
# network ('net', 'net/flownet' in a DFF checkpoint, ...).
_PARAM_KEY = re.compile(r'^(?:(.*)/)?params/([^/]+)/([^/]+)/\.ATTRIBUTES/VARIABLE_VALUE$')
_OBJECT_GRAPH = '_CHECKPOINTABLE_OBJECT_GRAPH'


def resolve_checkpoint(path):
    """A checkpoint prefix from a directory or a prefix. A directory gives its latest intact
    checkpoint: the one its `checkpoint` state file names, or when that one is damaged, or the
    state file is missing or corrupt, the newest intact one, said as a `Note` warning
    (`tf1_checkpoint.newest_intact`; nothing in the folder is changed)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return resolve_folder(path)
    if os.path.exists(path + '.index'):
        return path
    raise WeightsFileError(
        f'{path}: no such weights file or TF checkpoint '
        '(expected .npy, .pth, a checkpoint directory or a checkpoint prefix)'
    )


def detect(path):
    """True for an object-based checkpoint (prefix or folder) of this project. Reads the index
    in Python only; a damaged checkpoint with this project's keys is detected, and `read` says
    what is wrong with it."""
    try:
        return _OBJECT_GRAPH in index_keys(resolve_checkpoint(path))
    except WeightsFileError:
        return False


def read(path, key_map=None, root=None):
    """`({layer: {param: array}}, [])` of a checkpoint prefix or folder (`key_map` unused).

    `root`: the object path of the network to read (e.g. 'net/flownet' in a DFF checkpoint);
    by default the checkpoint must hold one network's parameters (a checkpoint of several, such
    as DFF's, is refused naming them rather than merged)."""
    del key_map
    prefix = resolve_checkpoint(path)
    matches = {}
    for key in checked_index(prefix):  # checked against the data file before TF reads it
        m = _PARAM_KEY.match(key)
        if m:
            matches.setdefault(m.group(1) or '', []).append((key, m.group(2), m.group(3)))
    if root is not None:
        matches = {root: matches.get(root, [])}
    elif len(matches) > 1:
        raise WeightsFileError(
            f'{prefix}: TF checkpoint holds several networks ({", ".join(sorted(matches))}): '
            'a DFF checkpoint? (load it with the dff_tf tools)'
        )
    entries = next(iter(matches.values()), [])
    if not entries:
        raise WeightsFileError(f'{prefix}: TF checkpoint holds no network parameters')
    try:
        reader = tf.train.load_checkpoint(prefix)
        out = {}
        for key, layer, param in entries:
            out.setdefault(layer, {})[param] = reader.get_tensor(key)
    except (tf.errors.OpError, ValueError) as e:
        raise WeightsFileError(
            f'{prefix}: unreadable TF checkpoint ({str(e).splitlines()[0]})'
        ) from None
    return out, []


def read_weights_checkpoint(path):
    """`{layer: {param: array}}` of a checkpoint written by this project."""
    return read(path)[0]


def save_weights_checkpoint(net, out_dir):
    """Write the network's variables as a checkpoint in `out_dir`; returns the prefix."""
    os.makedirs(out_dir, exist_ok=True)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(net=net), out_dir, max_to_keep=1)
    return manager.save()
