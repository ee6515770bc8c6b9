"""Assigning weights to a network, strictly, with a report.

A weight source is any file of the weights-format table (`converters.formats`: caffe-tensorflow
`.npy`, PyTorch `.pth`/`.safetensors` through the network's key map, TF checkpoints) or an
already-read nested dict `{layer: {param: array}}`. `load_into()` compares the source with the
network's variables and produces a `LoadReport`: missing (in the network, not the source),
unexpected (in the source, not the network) and mismatched (different shape) keys, plus the
source keys the reader left out on purpose (optimizer slots, step counters). Strict mode raises
on any problem and assigns nothing; lenient mode (`ignore_missing=True`) assigns what fits and
says what it skipped.
"""

import os
from dataclasses import dataclass, field

import numpy as np

from converters.errors import WeightsMismatchError
from converters.formats import read_weights


def read_network_weights(path, net=None):
    """`(weights, not_parameters)` of a weights file, read for `net` (its PyTorch key map)."""
    return read_weights(path, getattr(net, 'torch_key_map', None))


@dataclass
class LoadReport:
    source: str
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # 'layer/param' in the net, not the source
    unexpected: list = field(default_factory=list)  # in the source, not the net
    mismatched: list = field(default_factory=list)  # (key, source shape, net shape)
    skipped: list = field(default_factory=list)  # keys of layers the caller chose to skip
    not_parameters: list = field(default_factory=list)  # source keys the reader left out

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

    def hint(self, class_heads=()):
        """When only class heads differ in shape (another number of classes): how to use the
        file anyway. Nothing when more differs (another model or filter_scale: the error says
        what the file holds)."""
        layers = {k.split('/')[0] for k, _, _ in self.mismatched}
        heads = sorted(layers & set(class_heads))
        if heads and layers <= set(class_heads) and not (self.missing or self.unexpected):
            return (
                ' -- only the class heads differ: give the number of classes (or --dataset) '
                f'the file was trained with; to fine-tune on other classes skip them: '
                f'skip={tuple(heads)} (icnet_tf.train skips them by itself; icnet_tf.convert: '
                f'--skip_layers {",".join(heads)})'
            )
        return ''

    def __str__(self):
        lines = [f'loaded {len(self.loaded)} arrays from {self.source}']
        if self.not_parameters:
            more = ', ...' if len(self.not_parameters) > 3 else ''
            shown = ', '.join(self.not_parameters[:3])
            lines.append(
                f'  not network parameters (not used): {len(self.not_parameters)} ({shown}{more})'
            )
        if self.skipped:  # --skip_layers, or heads the tool does not use (auxiliary heads)
            more = ', ...' if len(self.skipped) > 3 else ''
            shown = ', '.join(self.skipped[:3])
            lines.append(f'  skipped (not used here): {len(self.skipped)} ({shown}{more})')
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


def load_into(net, source, ignore_missing=False, skip=(), verbose=True, source_name=None):
    """Assign `source` (path or nested dict) to `net`'s variables; see the module docstring.

    `source_name` names an already-read dict in reports and errors (the file it came from)."""
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        weights, not_parameters = read_network_weights(source, net)
    else:
        name, weights, not_parameters = source_name or '<dict>', source, []
    net.build()
    variables = net.variables_by_key()
    report, assignments = compare({k: tuple(v.shape) for k, v in variables.items()}, weights, skip)
    report.source = name
    report.not_parameters = list(not_parameters)
    if not report.ok and not ignore_missing:
        raise WeightsMismatchError(
            f'{name}: does not fit {type(net).__name__}{_describe(net)}: the file '
            f'{net.describe_weights(weights)}; {report.problems()}{report.hint(net.class_heads)}'
            f'{_other_network_hint(net, weights)}'
        )
    for key, value in assignments.items():
        variables[key].assign(value.astype(np.float32))
    if verbose and (not report.ok or report.skipped):
        print(report)
    return report


def _other_network_hint(net, weights):
    """When the file holds another kind of network: how to ask for that one."""
    cls, _ = net.recognising_class(weights)
    if cls is None or isinstance(net, cls):
        return ''
    return (
        f' -- to use it, ask for {cls.__name__} (--model {cls.__name__}; DFF: --feature_net '
        f'{cls.__name__.lower()})'
    )


def _describe(net):
    config = getattr(net, 'get_config', lambda: {})()
    return '(' + ', '.join(f'{k}={v}' for k, v in config.items()) + ')' if config else ''


def load_skipping_class_heads(net, restore_from, log=print):
    """Load `restore_from` for training: class heads (`net.class_heads`) that are absent from
    the file or do not fit (another num_classes, the Caffe files' missing auxiliary heads) keep
    their fresh initialisation, with a message; anything else that does not fit is an error."""
    if not restore_from:
        log('no --restore_from: training from a fresh (He-normal) initialisation')
        return
    weights, not_parameters = read_network_weights(restore_from, net)
    net.build()
    report, _ = compare(net.param_shapes(), weights)
    bad = {k.split('/')[0] for k in report.missing + [m[0] for m in report.mismatched]}
    heads = sorted(bad & set(net.class_heads))
    if bad - set(net.class_heads) or report.unexpected:
        net.load(weights, source_name=restore_from)  # raises the full strict report
    if heads:
        log(
            f'{restore_from}: class heads {", ".join(heads)} not loaded (absent from the '
            'file or another num_classes): they start from a fresh initialisation'
        )
    report = net.load(weights, skip=heads, verbose=False, source_name=restore_from)
    report.not_parameters = list(not_parameters)
    log(report)
