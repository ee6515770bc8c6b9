"""The one model registry of all tools: a name -> a `Network` class.

`register_model('BiSeNet', BiSeNet)` is the one line a new network adds (see BUILD.md, "Adding
a network"). Names are matched case-insensitively, so DFF's saved configurations that say
'icnet_bn' or 'pspnet101' find 'ICNet_BN' and 'PSPNet101'. A name of the form
`package.module:ClassName` imports that module and takes the class, so a network defined
outside this package works with every command-line tool (`--model mypkg.nets:TinyNet`).
"""

import importlib
import inspect

from converters.errors import UserError
from icnet_tf.icnet import ICNet, ICNet_BN
from icnet_tf.network import Network
from icnet_tf.pspnet import PSPNet101

MODELS = {}


def register_model(name, cls):
    """Make `cls` (a `Network` subclass) available to every tool as `name`; returns `cls`."""
    if not (inspect.isclass(cls) and issubclass(cls, Network)):
        raise TypeError(f'register_model({name!r}, ...): expected a Network subclass, got {cls!r}')
    taken = {k.lower(): k for k in MODELS}
    if name.lower() in taken:
        if not _same_class(MODELS[taken[name.lower()]], cls):
            raise ValueError(f'a different model is already registered as {taken[name.lower()]!r}')
        return MODELS[taken[name.lower()]]
    MODELS[name] = cls
    return cls


def _same_class(a, b):
    """`a is b`, or the same class of a module imported a second time under another name."""
    return a is b or (
        a.__qualname__ == b.__qualname__
        and a.__module__.rsplit('.', 1)[-1] == b.__module__.rsplit('.', 1)[-1]
    )


def model_class(name):
    """The class registered as `name` (any case), or of `module:Class`; UserError otherwise."""
    if isinstance(name, str) and ':' in name:
        module_name, _, attr = name.partition(':')
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise UserError(f'cannot import model {name!r}: {e}') from None
        if not (inspect.isclass(cls) and issubclass(cls, Network)):
            raise UserError(f'{name!r} is not a Network subclass')
        return cls
    for key, cls in MODELS.items():
        if key.lower() == str(name).lower():
            return cls
    raise UserError(f'unknown model {name!r}; choose one of {", ".join(MODELS)}')


def model_name(net_or_cls):
    """The registered name of a network (or class), else `module:Class`."""
    cls = net_or_cls if inspect.isclass(net_or_cls) else type(net_or_cls)
    for key, value in MODELS.items():
        if value is cls:
            return key
    return f'{cls.__module__}:{cls.__qualname__}'


def applicable_options(cls, options):
    """The `options` a network class takes, without those that are None (the class default).

    Options the class does not take are dropped if they have their neutral value
    (`filter_scale=1` for a network without a width multiplier; None for any option) and
    refused with a UserError otherwise, so one set of command-line flags serves every network.
    """
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    taken = {}
    for key, value in options.items():
        if key in accepted or takes_any:
            if value is not None:
                taken[key] = value
        elif value is not None and not (key == 'filter_scale' and value == 1):
            note = ' (filter_scale applies to ICNet models only)' if key == 'filter_scale' else ''
            raise UserError(f'{key} does not apply to {cls.__name__}{note}')
    return taken


def build_model(name, **kwargs):
    """A network by its registered name, e.g. `build_model('ICNet_BN', num_classes=19)`;
    options as `applicable_options` lets them through."""
    cls = model_class(name)
    return cls(**applicable_options(cls, kwargs))


register_model('ICNet_BN', ICNet_BN)
register_model('ICNet', ICNet)
register_model('PSPNet101', PSPNet101)
