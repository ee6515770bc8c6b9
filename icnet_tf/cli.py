"""Shared command-line plumbing: flag groups and the one-line error contract.

Every CLI runs `cli.run(main)`. Errors the user can fix (bad files, bad flags, weights that do
not fit, bad list lines) are printed as ONE line, `error: <what and where>`, with exit status 1;
nothing else escapes as a traceback.
"""

import sys

from absl import app, flags

from converters.errors import UserError


def run(main):
    """`absl.app.run(main)`, turning user errors into one line on stderr and exit status 1."""

    def guarded(argv):
        try:
            return main(argv)
        except UserError as e:
            print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print('interrupted', file=sys.stderr)
            sys.exit(130)

    if 'verbose' not in flags.FLAGS:
        flags.DEFINE_bool(
            'verbose', False, "show TensorFlow's start-up log (read before TF is imported)"
        )
    app.run(guarded)


def csv(value):
    return tuple(s.strip() for s in (value or '').split(',') if s.strip())


def define_model_flags(default_model='ICNet_BN'):
    """--model, --num_classes, --filter_scale (names of the original's flags)."""
    from icnet_tf import MODELS

    flags.DEFINE_string(
        'model',
        default_model,
        f'network: {", ".join(MODELS)}, or package.module:Class of your own Network',
    )
    flags.DEFINE_integer('num_classes', 19, 'number of classes', lower_bound=1)
    flags.DEFINE_integer(
        'filter_scale',
        1,
        'width multiplier: 1 (released weights) or 2',
        lower_bound=1,
        upper_bound=2,
    )


def parse_size(text, name):
    """`--name H,W` -> (h, w), positive ints, or a one-line UserError."""
    try:
        h, w = (int(v) for v in csv(text))
    except ValueError:
        raise UserError(f'--{name} must be "height,width", got {text!r}') from None
    if h < 1 or w < 1:
        raise UserError(f'--{name} must be positive, got {text!r}')
    return h, w
