"""Shared command-line plumbing: flag groups and the one-line error contract.

Every CLI runs `cli.run(main)`. Errors the user can fix (bad files, bad flags, weights that do
not fit, bad list lines) are printed as ONE line, `error: <what and where>`, with exit status 1;
nothing else escapes as a traceback.

Flag groups (each defined once here, used by every tool that takes it; `dff_tf/cli.py` adds the
DFF model's): the dataset (`--dataset`, `--num_classes`, `--ignore_label`,
`--class_names_json`), the model (`--model`, `--filter_scale`), where labelled data comes from
(`--data_list` or `--data_dir ROOT --split S`, `--label_encoding`), training (`--batch_size`
... `--strategy`, `--precision`), the evaluation protocol (`--input_size`, `--protocol`) and
written predictions (`--save_dir`, `--output_format`, `--overwrite`).
"""

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings

from absl import app, flags

from converters.errors import Note, UserError
from icnet_tf import datasets
from icnet_tf.labels import FORMATS

FLAGS = flags.FLAGS


def run(main):
    """`absl.app.run(main)`, turning user errors into one line on stderr and exit status 1."""

    def guarded(argv):
        with warnings.catch_warnings():
            warnings.simplefilter('default', Note)  # each distinct note once
            show_others = warnings.showwarning

            def show(message, category, *args, **kwargs):
                if issubclass(category, Note):
                    print(f'note: {message}', file=sys.stderr, flush=True)
                else:
                    show_others(message, category, *args, **kwargs)

            warnings.showwarning = show
            return checked(argv)

    def checked(argv):
        if not FLAGS.verbose:
            # TF's Python-side warnings (e.g. about a checkpoint that did not fit, right before
            # our own one-line error) would break the one-line contract; errors still show.
            logging.getLogger('tensorflow').setLevel(logging.ERROR)
        try:
            if 'max_image_megapixels' in flags.FLAGS:
                from icnet_tf.predict import set_max_pixels

                set_max_pixels(flags.FLAGS.max_image_megapixels * 1e6)
            return main(argv)
        except UserError as e:
            print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
            sys.exit(1)
        except OSError as e:  # a file or folder the system refused: name it, one line
            where = f'{e.filename}: ' if e.filename else ''
            print(f'error: {where}{e.strerror or e}', file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt as e:  # a tool may say where it stopped and how to go on
            print(f'interrupted{": " if str(e) else ""}{e}', file=sys.stderr)
            sys.exit(130)

    if 'verbose' not in flags.FLAGS:
        flags.DEFINE_bool(
            'verbose', False, "show TensorFlow's start-up log (read before TF is imported)"
        )
    if 'max_image_megapixels' not in flags.FLAGS:
        flags.DEFINE_float(
            'max_image_megapixels',
            40,
            'images larger than this (from their header) are refused before decoding, one '
            'line each (a small file can declare a huge image)',
            lower_bound=0.001,
        )
    # --help lists the tool's own flags: the shared groups defined here and in dff_tf.cli
    # (data, training, model, dataset, output flags) count as the tool's, not only --helpfull.
    for module in ('icnet_tf.cli', 'dff_tf.cli'):
        for flag in FLAGS.get_flags_for_module(module):
            FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(guarded, flags_parser=_parse_flags)


def _parse_flags(argv):
    """absl's flag parsing, with a bad flag as one `error:` line and exit status 1."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f'error: {" ".join(str(e).split())} (--help lists the flags)', file=sys.stderr)
        sys.exit(1)


def tool_command(module, *args, **flags):
    """The command line `python -m module --flag value ... args` of one of the project's tools.

    A flag's value True gives `--flag`, False `--noflag` (absl's boolean forms), anything else
    `--flag str(value)`; flags keep the order given; `args` (already `--flag`-formed) follow."""
    cmd = [sys.executable, '-m', module]
    for name, value in flags.items():
        if isinstance(value, bool):
            cmd.append(f'--{name}' if value else f'--no{name}')
        else:
            cmd += [f'--{name}', str(value)]
    return cmd + list(args)


def csv(value):
    return tuple(s.strip() for s in (value or '').split(',') if s.strip())


def parse_size(text, name):
    """`--name H,W` -> (h, w), positive ints, or a one-line UserError."""
    try:
        h, w = (int(v) for v in csv(text))
    except ValueError:
        raise UserError(f'--{name} must be "height,width", got {text!r}') from None
    if h < 1 or w < 1:
        raise UserError(f'--{name} must be positive, got {text!r}')
    return h, w


# ---------------------------------------------------------------------------------- dataset
def define_dataset_flags(flag_values=FLAGS):
    """--dataset, --num_classes, --ignore_label, --class_names_json (the original's --dataset)."""
    flags.DEFINE_enum(
        'dataset',
        'cityscapes',
        [*datasets.DATASETS, 'others'],
        'dataset preset: class names, colours, label encodings, ignore label, evaluation '
        'protocol, folder layout (others: your own, with --num_classes or --class_names_json)',
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        'num_classes',
        None,
        "number of classes (default: the --dataset preset's, or what the model file holds)",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        'ignore_label',
        None,
        "label ignored by the loss and the metric, in the network's label space (default: the "
        "preset's, 255; ADE20K's stored 0 is read as 255)",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        'class_names_json',
        None,
        '--dataset others: {"classes": [{"name": ..., "color": [r, g, b]}, ...]}',
        flag_values=flag_values,
    )


def dataset_spec(
    held_classes=None, record=None, holder='the model', restore_from=None, flag_values=FLAGS
):
    """The `DatasetSpec` of the dataset flags.

    `held_classes`: the class count the model file already holds (an exported SavedModel, a
    DFF snapshot), used when --num_classes is not given; `record`: the dataset it was trained
    on (`datasets.to_record`; or the dataset.json next to the checkpoint `restore_from`), used
    when --dataset is not given. A preset named with --dataset
    must agree with --num_classes / --ignore_label and with the model (one-line error
    otherwise); the *default* preset (cityscapes) gives way to `others` when the class count
    or ignore label given differ from it, or with --class_names_json.
    """
    fv = flag_values
    if record is None and restore_from:
        record, path = saved_dataset(restore_from)
        holder = path or holder
    explicit = fv['dataset'].present
    n_flag, ignore, names_json = fv.num_classes, fv.ignore_label, fv.class_names_json
    n = n_flag if n_flag is not None else held_classes
    if not explicit and record:
        recorded = datasets.from_record(record, holder)
        same_classes = n is None or n == recorded.num_classes
        same_ignore = ignore is None or ignore == recorded.ignore_label
        if same_classes and same_ignore and not names_json:
            return recorded
    name = fv.dataset
    if not explicit:
        preset = datasets.DATASETS[name]
        differs = (n is not None and n != preset.num_classes) or (
            ignore is not None and ignore != preset.ignore_label
        )
        if differs or names_json:
            name = 'others'
    if name in datasets.DATASETS and n_flag is None and held_classes is not None:
        preset = datasets.DATASETS[name]
        if held_classes != preset.num_classes:
            raise UserError(
                f'--dataset {name} has {preset.num_classes} classes but {holder} holds '
                f'{held_classes} (pass the --dataset it was trained on, or --dataset others)'
            )
    return datasets.get_dataset(name, n, ignore, names_json)


DATASET_FILE = 'dataset.json'  # written by the training CLIs next to their checkpoints


def saved_dataset(restore_from):
    """`(record, path)` of the dataset.json next to a checkpoint (a folder or a prefix), or
    `(None, None)`."""
    if not restore_from:
        return None, None
    if os.path.isdir(restore_from):
        path = os.path.join(restore_from, DATASET_FILE)
    elif os.path.exists(restore_from + '.index'):
        path = os.path.join(os.path.dirname(restore_from), DATASET_FILE)
    else:
        return None, None
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f), path
    except (OSError, ValueError) as e:
        raise UserError(f'{path}: unreadable dataset record ({e})') from None


def save_dataset(snapshot_dir, spec):
    """Record the dataset next to the checkpoints (`saved_dataset` reads it back). A record of
    another dataset already there (a resumed run given other dataset flags) is a UserError:
    the checkpoints were trained on it, and the other tools read it."""
    record_json(os.path.join(snapshot_dir, DATASET_FILE), datasets.to_record(spec), 'dataset')


def record_json(path, data, what):
    """Write a training run's record (its dataset, its model configuration) next to its
    checkpoints: written when absent, left alone when equal; another record there is a
    UserError naming it (a resumed run given other flags: the checkpoints were made with the
    first, and the other tools read the record)."""
    data = json.loads(json.dumps(data))
    if os.path.exists(path):
        try:
            with open(path, encoding='utf-8') as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f'{path}: unreadable {what} record ({e})') from None
        if old != data:
            changed = sorted(
                (k for k in set(old) | set(data) if old.get(k) != data.get(k)),
                key=lambda k: (k != 'name', k),
            )

            def short(value):
                text = repr(value)
                return text if len(text) <= 40 else text[:36] + ' ...'

            raise UserError(
                f'{path}: the checkpoints here were trained with another {what} ('
                + ', '.join(
                    f'{k} {short(old.get(k))}, now {short(data.get(k))}' for k in changed[:2]
                )
                + '): use another --snapshot_dir, or the flags of the first run'
            )
        return
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    write_json(path, data)


# ------------------------------------------------------------------------------------ model
def define_model_flags(default_model='ICNet_BN'):
    """--model, --filter_scale (names of the original's flags), ICNet's pyramid (--psp_bins,
    --psp_pooling: the TF1 ICNet_BN, e.g. the original's ADE20K model, used 1,2,3,4 and floor
    pooling) and the dataset group. Build the network with `build_model(FLAGS.model,
    **model_options())`."""
    from icnet_tf import MODELS

    flags.DEFINE_string(
        'model',
        default_model,
        f'network: {", ".join(MODELS)}, or package.module:Class of your own Network',
    )
    flags.DEFINE_integer(
        'filter_scale',
        1,
        'width multiplier: 1 (released weights) or 2',
        lower_bound=1,
        upper_bound=2,
    )
    flags.DEFINE_string(
        'psp_bins', None, "ICNet's pyramid bins (default 1,2,3,6; the TF1 ICNet_BN used 1,2,3,4)"
    )
    flags.DEFINE_enum(
        'psp_pooling',
        None,
        ['caffe', 'floor', 'adaptive'],
        "ICNet's pyramid kernels (default caffe: the prototxt table at conv5_3 33x65; floor: "
        "the TF1 rule; 'adaptive' is floor's old name)",
    )
    define_dataset_flags()


def model_options(flag_values=FLAGS):
    """The model flags as `build_model` options (None where not given, so a network that has
    no such option is not bothered: `models.build_model` drops them)."""
    bins = None
    if flag_values.psp_bins:
        try:
            bins = tuple(int(b) for b in csv(flag_values.psp_bins))
        except ValueError:
            raise UserError(
                f'--psp_bins: expected integers like 1,2,3,6, got {flag_values.psp_bins!r}'
            ) from None
    return dict(
        filter_scale=flag_values.filter_scale,
        psp_bins=bins,
        psp_pooling=flag_values.psp_pooling,
    )


def load_or_warn(net, restore_from, warning):
    """`net.load(restore_from)` (training-only heads skipped) with its report, or (no
    --restore_from) the built network with `warning` about its random weights on stderr."""
    if restore_from:
        print(net.load(restore_from, skip=tuple(net.aux_heads), verbose=False))
    else:
        net.build()
        print(f'warning: no --restore_from given: {warning}', file=sys.stderr)


# ------------------------------------------------------------------------- labelled data
def define_data_flags(list_help, split=True):
    """--data_list, --data_dir, --label_encoding, and (split=True) --split."""
    flags.DEFINE_string('data_list', None, list_help)
    flags.DEFINE_string(
        'data_dir', '', 'directory the list paths are relative to (the dataset root for --split)'
    )
    if split:
        flags.DEFINE_enum(
            'split',
            None,
            ['train', 'val', 'test'],
            'without --data_list: the pairs of this split of the official tree in --data_dir '
            '(cityscapes: leftImg8bit + gtFine; ade20k: images + annotations)',
        )
    flags.DEFINE_string(
        'label_encoding',
        None,
        'what the label files store (default: told by their names, else by their values): '
        'cityscapes labelIds|trainIds, ade20k ade|trainIds, others trainIds, or color (RGB)',
    )


def read_pairs(spec, list_flag='data_list'):
    """(image, label) pairs of --data_list, or of --data_dir ROOT --split S (no list)."""
    from icnet_tf.data import read_list

    list_path = getattr(FLAGS, list_flag)
    if list_path:
        return read_list(list_path, FLAGS.data_dir), list_path
    split = getattr(FLAGS, 'split', None)
    if not split:
        raise UserError(f'pass --{list_flag} FILE, or --data_dir ROOT --split train|val')
    if not FLAGS.data_dir:
        raise UserError(f'--split {split} needs --data_dir (the {spec.name} root)')
    layout = spec.layout
    if layout is not None and split in layout.unlabelled:
        raise UserError(f'--split {split}: the {spec.name} {split} labels are not public')
    encoding = FLAGS.label_encoding if FLAGS.label_encoding != datasets.COLOR else None
    return datasets.read_tree(spec, FLAGS.data_dir, split, encoding), None


def check_labels(pairs, spec, where, protocol=None):
    """The validation pass (`data.check_labels`) with --label_encoding."""
    from icnet_tf.data import check_labels as check

    return check(pairs, spec, where, FLAGS.label_encoding, protocol=protocol)


# --------------------------------------------------------------------------------- training
def define_training_flags(
    *,
    batch_size,
    input_size,
    learning_rate,
    num_steps,
    weight_decay,
    snapshot_dir,
    save_pred_every,
    momentum=True,
    input_size_help='crop size h,w',
    learning_rate_help='base learning rate of the poly schedule',
    weight_decay_help='L2 factor on conv kernels',
):
    """The training loop's flags (the original's names); defaults per tool."""
    flags.DEFINE_integer(
        'batch_size', batch_size, 'global batch size (split across replicas)', lower_bound=1
    )
    flags.DEFINE_string('input_size', input_size, input_size_help)
    flags.DEFINE_float('learning_rate', learning_rate, learning_rate_help)
    if momentum:
        flags.DEFINE_float('momentum', 0.9, 'momentum (TF1 MomentumOptimizer semantics)')
    flags.DEFINE_float('power', 0.9, 'power of the poly schedule')
    flags.DEFINE_integer('num_steps', num_steps, 'number of optimizer steps', lower_bound=1)
    flags.DEFINE_float('weight_decay', weight_decay, weight_decay_help)
    flags.DEFINE_string(
        'snapshot_dir',
        snapshot_dir,
        'checkpoints and TensorBoard logs; training resumes from its newest intact checkpoint',
    )
    flags.DEFINE_bool(
        'skip_bad_files',
        False,
        'a training file that cannot be decoded (found when the input pipeline fails): leave '
        'its samples out and go on, listing them (default: stop with one line naming it)',
    )
    flags.DEFINE_bool(
        'restart_over_damaged',
        False,
        'when --snapshot_dir holds checkpoints and none is intact: rename them aside '
        '(*.damaged, bytes kept) and train from step 0 (default: refuse)',
    )
    flags.DEFINE_integer(
        'save_pred_every', save_pred_every, 'checkpoint every N steps', lower_bound=1
    )
    flags.DEFINE_integer('seed', 1234, 'seed of initialisation, shuffling and augmentation')
    flags.DEFINE_enum(
        'strategy', 'default', ['default', 'mirrored', 'multi_worker'], 'tf.distribute strategy'
    )
    flags.DEFINE_enum(
        'precision',
        'float32',
        ['float32', 'mixed_float16', 'mixed_bfloat16'],
        'mixed_*: the network computes in float16 (with dynamic loss scaling; GPUs with tensor '
        'cores, Volta/T4 and later) or bfloat16 (Ampere and later, TPUs, CPUs with AVX512-BF16/'
        'AMX), from float32 master weights; the loss and the logits it reads stay float32',
    )


def stream_options(input_context):
    """What the training flags give a training input pipeline's sample stream
    (`icnet_tf.data.sample_stream`): `batch_size`, `seed`, and this worker's `input_context`."""
    return dict(batch_size=FLAGS.batch_size, seed=FLAGS.seed, input_context=input_context)


def make_trainer(**options):
    """A `training.Trainer` with the training flags: --snapshot_dir, --save_pred_every,
    --precision; `options`: strategy, model, optimizer, variables, loss_fn."""
    from icnet_tf.training import Trainer

    return Trainer(
        snapshot_dir=FLAGS.snapshot_dir,
        save_every=FLAGS.save_pred_every,
        precision=FLAGS.precision,
        **options,
    )


def resume(trainer):
    """`trainer.restore()` with --restart_over_damaged, saying where it resumed; returns the
    checkpoint it resumed from, or None."""
    resumed = trainer.restore(restart_over_damaged=FLAGS.restart_over_damaged)
    if resumed:
        print(f'resumed from {resumed} at step {trainer.step}')
    return resumed


def fit(trainer, dataset, samples, **options):
    """`trainer.fit` to --num_steps with --skip_bad_files (`samples`: the `SampleFiles` that
    name a bad file), then the closing line; `options`: hooks, hook_every, learning_rate."""
    trainer.fit(
        dataset,
        FLAGS.num_steps,
        samples=samples,
        skip_bad_files=FLAGS.skip_bad_files,
        **options,
    )
    print(f'done: step {trainer.step}, checkpoint {trainer.latest_checkpoint}')


def strategy():
    """The --strategy, checked against --batch_size; returns (strategy, replicas)."""
    from icnet_tf.training import make_strategy

    chosen = make_strategy(FLAGS.strategy)
    replicas = chosen.num_replicas_in_sync
    if FLAGS.batch_size % replicas:
        raise UserError(
            f'--batch_size {FLAGS.batch_size} is not divisible by the {replicas} replicas'
        )
    return chosen, replicas


# ------------------------------------------------------------------------ evaluation protocol
def define_protocol_flags(default):
    """--input_size (pad to H,W) and --protocol dataset|whole."""
    flags.DEFINE_string(
        'input_size',
        None,
        'H,W: zero-pad every image to this size (an image larger than it is an error); '
        'overrides --protocol',
    )
    flags.DEFINE_enum(
        'protocol',
        default,
        ['dataset', 'whole'],
        "dataset: the --dataset preset's evaluation protocol (cityscapes: zero-pad to "
        '1025x2049, ade20k: resize to 480x480, as the original; others: whole); whole: each '
        'image at its own size, padded to multiples of 32',
    )


def protocol(spec):
    """The `predict.Protocol` of --input_size / --protocol for `spec`."""
    from icnet_tf.predict import Protocol

    if FLAGS.input_size:
        return Protocol(pad_to=parse_size(FLAGS.input_size, 'input_size'), source='--input_size')
    return Protocol.of_dataset(spec) if FLAGS.protocol == 'dataset' else Protocol()


# -------------------------------------------------------------------------- written outputs
def define_output_flags(save_dir, formats, save_dir_help):
    """--save_dir, --output_format (comma list of labels.FORMATS), --overwrite."""
    flags.DEFINE_string('save_dir', save_dir, save_dir_help)
    flags.DEFINE_string(
        'output_format',
        formats,
        f'comma list of {", ".join(FORMATS)}: <stem>_<format>.png each (labelIds: the '
        "dataset's official ids, e.g. for the Cityscapes benchmark; color: the dataset's "
        'colours; overlay: colours over the photo)',
    )
    flags.DEFINE_bool('overwrite', False, 'replace files in --save_dir that this run did not write')


def output_formats():
    formats = csv(FLAGS.output_format)
    if not formats:
        raise UserError('--output_format is empty')
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserError(
            f'--output_format: unknown format {unknown[0]!r} (choose from {", ".join(FORMATS)})'
        )
    return tuple(dict.fromkeys(formats))


def check_save_dir(save_dir, inputs):
    """Refuse a --save_dir that is a file, or the folder of an input file (images or labels)."""
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise UserError(f'--save_dir {save_dir}: exists and is a file, not a directory')
    target = os.path.realpath(save_dir)
    for path in inputs:
        if os.path.realpath(os.path.dirname(os.path.abspath(path))) == target:
            raise UserError(
                f'{save_dir}: is the folder of the input {path}: choose another --save_dir'
            )


def refuse_existing(paths, overwrite):
    """Before the work starts: an existing file among `paths` is a one-line error unless
    --overwrite (nothing the user had is replaced silently)."""
    existing = [p for p in paths if os.path.lexists(p)]
    if existing and not overwrite:
        more = f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''
        raise UserError(f'{existing[0]}: exists{more}: pass --overwrite or choose --save_dir')


def write_json(path, data):
    """Write JSON to a temporary name in the same folder, then rename it into place."""
    tmp = os.path.join(os.path.dirname(path) or '.', f'.{os.path.basename(path)}.{os.getpid()}')
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_output_dir(path, flag, overwrite):
    """A folder a tool will write as a whole (a SavedModel): refuse a file, or a folder that
    already holds something, unless `overwrite`; one line naming the flag."""
    if not path:
        raise UserError(f'--{flag} is required: the directory to write to')
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f'--{flag} {path}: exists and is a file, not a directory')
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise UserError(f'--{flag} {path}: exists and is not empty (pass --overwrite)')


@contextlib.contextmanager
def replacing_dir(path):
    """Write a folder under a temporary name next to `path`, then put it in place: a run that
    fails leaves `path` as it was (the temporary folder is removed)."""
    parent = os.path.dirname(os.path.abspath(path)) or '.'
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.path.abspath(path))}.', dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.isdir(path):  # only reached with --overwrite (check_output_dir)
        shutil.rmtree(path)
    os.replace(tmp, path)
