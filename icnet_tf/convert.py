r"""`python -m icnet_tf.convert`: weights of another framework -> a TF2 checkpoint of a network.

    python -m icnet_tf.convert --npy icnet_cityscapes_train_30k_bnnomerge.npy --model ICNet_BN \
        --skip_layers sub4_out,sub24_out --out_dir weights/icnet_bn
    python -m icnet_tf.convert --pth flownets_EPE1.951.pth.tar --target flownets \
        --out_dir weights/flownets

`--weights` (alias `--npy`, `--pth`) is any file of the weights-format table
(`converters.formats`); `--model` names a network of the registry, `--target` the network a
PyTorch file holds (`flownets`, `flownets_bn`, `pspnet101_mmseg`, or `dff` for a whole DFF
model). The load is strict (every key must fit) unless `--ignore_missing`; the load report is
printed. `--out_dir` must be new or empty of checkpoints: a folder that already holds one (a
training snapshot, say) is refused unless `--overwrite`, so nothing is replaced by accident.
The old entry points `python -m converters.caffe_npy` and `python -m converters.torch_pth` run
this tool.
"""

import glob
import os

from absl import flags

from converters import dff_keys, torch_pth
from converters.errors import UserError, WeightsMismatchError
from converters.tf_checkpoint import save_weights_checkpoint
from dff_tf.flownet import FlowNetS
from dff_tf.model import CONFIG_NAME, DFF
from icnet_tf import build_model, cli
from icnet_tf.pspnet import PSPNet101

FLAGS = flags.FLAGS
TARGETS = ('flownets', 'flownets_bn', 'pspnet101_mmseg', 'dff')


def define_flags():
    flags.DEFINE_string('weights', None, 'weights file (.npy, .pth, .safetensors, checkpoint)')
    flags.DEFINE_alias('npy', 'weights')
    flags.DEFINE_alias('pth', 'weights')
    flags.DEFINE_enum('target', None, list(TARGETS), 'what a PyTorch file holds (not --model)')
    flags.DEFINE_string('model', 'ICNet_BN', 'network of the registry (when no --target)')
    flags.DEFINE_integer('num_classes', 19, 'number of classes', lower_bound=1)
    flags.DEFINE_integer('filter_scale', 1, 'ICNet width multiplier: 1 or 2', lower_bound=1)
    flags.DEFINE_string('out_dir', None, 'directory for the TF checkpoint')
    flags.DEFINE_bool('ignore_missing', False, 'skip keys that do not fit instead of failing')
    flags.DEFINE_string('skip_layers', '', 'comma-separated layers not to load (e.g. heads)')
    flags.DEFINE_bool('overwrite', False, 'write into a folder that already holds a checkpoint')
    flags.mark_flags_as_required(['weights', 'out_dir'])


def check_out_dir(out_dir, overwrite):
    """Refuse a folder holding checkpoints or a DFF configuration (or a file) unless
    `overwrite`: writing a checkpoint there would also make TF's checkpoint manager delete the
    folder's earlier checkpoints."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f'{out_dir}: exists and is not a directory')
    held = [
        p
        for pattern in ('*.index', 'checkpoint', CONFIG_NAME)
        for p in glob.glob(os.path.join(out_dir, pattern))
    ]
    if held and not overwrite:
        raise UserError(
            f'{out_dir}: already holds a checkpoint ({os.path.basename(sorted(held)[0])}); '
            'choose a new folder or pass --overwrite'
        )


def target_network(target, num_classes):
    if target in ('flownets', 'flownets_bn'):
        return FlowNetS(batch_norm=target == 'flownets_bn')
    return PSPNet101(num_classes=num_classes, layout='mmseg')


def convert_dff(path, num_classes, out_dir, ignore_missing, skip):
    """A whole PyTorch DFF (net_feat./flownet./net_task.) -> a dff_tf checkpoint + config."""
    import tensorflow as tf

    state_dict = torch_pth.state_dict_of(torch_pth.load(path), path)
    batch_norm = dff_keys.is_batch_norm_flownet(dff_keys.split(state_dict)['flownet'])
    dff = DFF(
        'pspnet101',
        num_classes,
        flownet='bn' if batch_norm else 'plain',
        feature_net_kwargs={'layout': 'mmseg'},
    ).build()
    try:
        reports, notes = dff_keys.load_into_dff(
            dff, state_dict, ignore_missing=ignore_missing, skip=skip, source_name=path
        )
    except WeightsMismatchError as e:  # a pure key map does not know the file name
        text = str(e)
        raise WeightsMismatchError(text if text.startswith(path) else f'{path}: {text}') from None
    for report in reports:
        print(report)
    for note in notes:
        print(f'note: {note}')
    os.makedirs(out_dir, exist_ok=True)
    prefix = tf.train.CheckpointManager(tf.train.Checkpoint(net=dff), out_dir, 1).save()
    cli.write_json(os.path.join(out_dir, CONFIG_NAME), dff.get_config())
    return prefix


def main(argv):
    del argv
    f = FLAGS
    check_out_dir(f.out_dir, f.overwrite)
    skip = cli.csv(f.skip_layers)
    if f.target == 'dff':
        print(f'wrote {convert_dff(f.weights, f.num_classes, f.out_dir, f.ignore_missing, skip)}')
        return
    if f.target:
        net = target_network(f.target, f.num_classes)
    else:
        try:
            net = build_model(f.model, num_classes=f.num_classes, filter_scale=f.filter_scale)
        except ValueError as e:
            raise UserError(f'--model {f.model}: {e}') from None
    report = net.load(f.weights, ignore_missing=f.ignore_missing, skip=skip, verbose=False)
    print(report)
    print(f'wrote {save_weights_checkpoint(net, f.out_dir)}')


def entry_point():
    define_flags()
    cli.run(main)


if __name__ == '__main__':
    entry_point()
