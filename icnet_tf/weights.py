"""Reading weight sources into nested dicts and assigning them to a network, strictly.

A weight source is a caffe-tensorflow `.npy`, a TF checkpoint (a directory with a `checkpoint`
file, or a checkpoint prefix) written by icnet_tf, or an already-read nested dict
`{layer: {param: array}}`. `load_into()` compares the source with the network's variables and
produces a `LoadReport`: missing (in the network, not the source), unexpected (in the source,
not the network) and mismatched (different shape) keys. Strict mode raises on any of them and
assigns nothing; lenient mode (`ignore_missing=True`) assigns what fits and says what it skipped.
"""

import os
from dataclasses import dataclass, field

import numpy as np

from converters.errors import WeightsFileError, WeightsMismatchError

HEAD_LAYERS = ('conv6_cls', 'sub4_out', 'sub24_out', 'conv6', 'conv_seg')


TORCH_SUFFIXES = ('.pth', '.pth.tar', '.pt', '.tar', '.safetensors')


def read_weights(path, net=None):
    """Any supported weights file -> `{layer: {param: float32 ndarray}}`.

    PyTorch files need the key map of the network they are for: the method
    `net.torch_key_map(state_dict) -> {layer: {param: array}}` (None: not loadable from PyTorch).
    """
    path = os.fspath(path)
    if path.endswith('.npy'):
        from converters import caffe_npy

        return caffe_npy.convert(caffe_npy.load(path))
    if path.endswith(TORCH_SUFFIXES):
        key_map = getattr(net, 'torch_key_map', None)
        if key_map is None:
            raise WeightsFileError(
                f'{path}: {type(net).__name__} has no PyTorch key map '
                '(see python -m converters.torch_pth --help)'
            )
        from converters import torch_pth

        state_dict = torch_pth.state_dict_of(torch_pth.load(path), path)
        try:
            return key_map(state_dict)
        except WeightsMismatchError as e:  # pure key maps do not know the file name
            raise WeightsMismatchError(f'{path}: {e}') from None
    from icnet_tf.checkpoints import read_weights_checkpoint

    return read_weights_checkpoint(path)


@dataclass
class LoadReport:
    source: str
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # 'layer/param' in the net, not the source
    unexpected: list = field(default_factory=list)  # in the source, not the net
    mismatched: list = field(default_factory=list)  # (key, source shape, net shape)
    skipped: list = field(default_factory=list)  # keys of layers the caller chose to skip

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self, limit=6):
        """One-line summary of what does not fit."""
        parts = []
        if self.mismatched:
            shown = ', '.join(
                f'{k} file {tuple(a)} vs model {tuple(b)}' for k, a, b in self.mismatched[:limit]
            )
            parts.append(f'{len(self.mismatched)} wrong-shape ({shown})')
        if self.missing:
            parts.append(
                f'{len(self.missing)} missing ({", ".join(self.missing[:limit])}'
                f'{", ..." if len(self.missing) > limit else ""})'
            )
        if self.unexpected:
            parts.append(
                f'{len(self.unexpected)} unexpected ('
                f'{", ".join(self.unexpected[:limit])}'
                f'{", ..." if len(self.unexpected) > limit else ""})'
            )
        return '; '.join(parts)

    def hint(self):
        heads = sorted({k.split('/')[0] for k, _, _ in self.mismatched} & set(HEAD_LAYERS))
        if heads:
            return (
                f' -- the class heads differ (num_classes?); to fine-tune on other classes '
                f'skip them: skip={tuple(heads)} (CLI: --skip_layers {",".join(heads)}) '
                'or ignore_missing=True'
            )
        return ''

    def __str__(self):
        lines = [f'loaded {len(self.loaded)} arrays from {self.source}']
        if self.skipped:
            lines.append(f'  skipped on request: {", ".join(self.skipped)}')
        for key in self.missing:
            lines.append(f'  missing (left as initialised): {key}')
        for key in self.unexpected:
            lines.append(f'  unexpected (not used): {key}')
        for key, src, dst in self.mismatched:
            lines.append(
                f'  wrong shape (not loaded): {key} file {tuple(src)} vs model {tuple(dst)}'
            )
        return '\n'.join(lines)


def compare(expected_shapes, source, skip=()):
    """Match a source dict against `{'layer/param': shape}`; returns (report, assignments)."""
    skip = set(skip)
    flat = {
        f'{layer}/{param}': np.asarray(value)
        for layer, params in source.items()
        for param, value in params.items()
    }
    report = LoadReport(source='<dict>')
    assignments = {}
    for key, shape in expected_shapes.items():
        if key.split('/')[0] in skip:
            report.skipped.append(key)
        elif key not in flat:
            report.missing.append(key)
        elif tuple(flat[key].shape) != tuple(shape):
            report.mismatched.append((key, flat[key].shape, tuple(shape)))
        else:
            assignments[key] = flat[key]
    report.unexpected = [
        k for k in flat if k not in expected_shapes and k.split('/')[0] not in skip
    ]
    report.skipped += [k for k in flat if k not in expected_shapes and k.split('/')[0] in skip]
    report.loaded = sorted(assignments)
    return report, assignments


def load_into(net, source, ignore_missing=False, skip=(), verbose=True):
    """Assign `source` (path or nested dict) to `net`'s variables; see the module docstring."""
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else '<dict>'
    weights = read_weights(source, net) if name != '<dict>' else source
    net.build()
    variables = net.variables_by_key()
    report, assignments = compare({k: tuple(v.shape) for k, v in variables.items()}, weights, skip)
    report.source = name
    if not report.ok and not ignore_missing:
        raise WeightsMismatchError(
            f'{name}: does not fit {type(net).__name__}'
            f'{_describe(net)}: {report.problems()}{report.hint()}'
        )
    for key, value in assignments.items():
        variables[key].assign(value.astype(np.float32))
    if verbose and (not report.ok or report.skipped):
        print(report)
    return report


def _describe(net):
    config = getattr(net, 'get_config', lambda: {})()
    return '(' + ', '.join(f'{k}={v}' for k, v in config.items()) + ')' if config else ''
