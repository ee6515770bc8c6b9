"""The weights-format table: every file a network can load from is one row (detect, read).

A row is a `Format(name, detect, read)`:

* `detect(path) -> bool` is cheap and looks at the file's suffix and, where the suffix is not
  telling, at its content (a checkpoint prefix has no suffix of its own);
* `read(path, key_map) -> (weights, skipped)` returns `{layer: {param: ndarray}}` in this
  project's names and the sorted source keys it left out on purpose (optimizer slots, step
  counters), which the load report counts. `key_map(state_dict) -> weights` is the network's own
  map for formats whose names are another framework's (PyTorch); other rows ignore it.

`read_weights(path, key_map=None)` tries the rows in order and reads with the first that
detects the file. Adding a format (say ONNX initialisers) is one module with `detect` and
`read` in `converters/` and one row here.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass

from converters import caffe_npy, tf1_checkpoint, tf_checkpoint, torch_pth
from converters.errors import WeightsFileError, WeightsMismatchError


@dataclass(frozen=True)
class Format:
    name: str
    detect: Callable
    read: Callable


def _read_torch(path, key_map):
    if key_map is None:
        raise WeightsFileError(
            f'{path}: a PyTorch file, and this network has no PyTorch key map '
            '(see python -m icnet_tf.convert --help)'
        )
    state_dict = torch_pth.state_dict_of(torch_pth.load(path), path)
    try:
        return key_map(state_dict), []
    except WeightsMismatchError as e:  # pure key maps do not know the file name
        raise WeightsMismatchError(f'{path}: {e}') from None


FORMATS = (
    Format('caffe-tensorflow .npy', caffe_npy.detect, lambda path, key_map: caffe_npy.read(path)),
    Format('PyTorch .pth / .safetensors', torch_pth.detect, _read_torch),
    Format('TF2 checkpoint', tf_checkpoint.detect, tf_checkpoint.read),
    # TF1 names are already ours but for batch norm; the network's PyTorch key map is not used.
    Format(
        'TF1 checkpoint', tf1_checkpoint.detect, lambda path, key_map: tf1_checkpoint.read(path)
    ),
)


def detect_format(path):
    """The first row of `FORMATS` that detects `path`, or a one-line `WeightsFileError`."""
    path = os.fspath(path)
    if not os.path.exists(path) and not os.path.exists(path + '.index'):
        raise WeightsFileError(f'{path}: no such weights file or checkpoint')
    for row in FORMATS:
        if row.detect(path):
            return row
    names = ', '.join(row.name for row in FORMATS)
    raise WeightsFileError(f'{path}: not a weights file of a known format ({names})')


def read_weights(path, key_map=None):
    """`(weights, skipped)` of any supported weights file; see the module docstring."""
    path = os.fspath(path)
    return detect_format(path).read(path, key_map)
