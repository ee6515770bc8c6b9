"""Flags and helpers shared by the DFF command-line tools (train, evaluate, inference, export).

The dataset group (`--dataset`, `--num_classes`, `--ignore_label`, `--class_names_json`) is
`icnet_tf.cli`'s. Command-line layer: only the `dff_tf` CLIs import this module.
"""

import inspect

from absl import flags

from converters.errors import UserError
from dff_tf.flownet import FLOWNET_VARIANTS
from dff_tf.model import CONFIG_NAME, FEATURE_NETS, saved_config, saved_flownet_config
from icnet_tf import cli
from icnet_tf.models import applicable_options, model_class
from icnet_tf.pspnet import LAYOUTS as PSP_LAYOUTS

FLAGS = flags.FLAGS


def define_model_flags():
    """Flags that define the DFF model (shared by train, evaluate, inference, export)."""
    flags.DEFINE_string(
        'feature_net',
        'pspnet101',
        f'feature network N_feat: {", ".join(FEATURE_NETS)} or any registered model',
    )
    flags.DEFINE_integer(
        'filter_scale', 1, 'ICNet width multiplier (1 or 2)', lower_bound=1, upper_bound=2
    )
    flags.DEFINE_enum(
        'psp_layout',
        'caffe',
        list(PSP_LAYOUTS),
        'PSPNet101 layout: caffe (the Caffe prototxt), caffe_tf1 (as the TF1 port runs the '
        'same weights) or mmseg',
    )
    flags.DEFINE_float('flow_scale', 0.5, 'FlowNetS runs at this fraction of the frame size')
    flags.DEFINE_bool('scale_field', False, 'use the scale field S (1x1 conv, weights 0, bias 1)')
    define_flownet_flag()


def define_flownet_flag():
    flags.DEFINE_enum(
        'flownet',
        'plain',
        list(FLOWNET_VARIANTS),
        "flow network: FlowNetS 'plain' (FlowNetPytorch flownets) or 'bn' (flownets_bn), or "
        "the light 'half' / 'quarter' (every layer 1/2 or 1/4 as wide; no published weights: "
        'pretrain with dff_tf.train_flownet)',
    )
    cli.define_dataset_flags()


def define_video_data_flags():
    """--data_list (a video list), --data_dir, --label_encoding, --videos_json."""
    cli.define_data_flags('video list: "<image> <label>" per labelled frame', split=False)
    flags.DEFINE_string(
        'videos_json',
        None,
        'videos.json placing frames in sequences (default: from Cityscapes file names)',
    )


def define_weights_flags():
    """--restore_from and --flownet_weights of a trained DFF (evaluate, inference, export)."""
    flags.DEFINE_string(
        'restore_from',
        None,
        'DFF checkpoint (directory or prefix), or '
        'feature-network weights (then FlowNetS from --flownet_weights)',
    )
    flags.DEFINE_string('flownet_weights', None, 'FlowNetS weights (.pth or checkpoint)')
    flags.mark_flags_as_required(['restore_from'])


_MODEL_FLAGS = (
    'feature_net',
    'num_classes',
    'filter_scale',
    'psp_layout',
    'flow_scale',
    'scale_field',
    'flownet',
)


def model_and_dataset(
    restore_from=None, train_feature_net=False, snapshot_dir=None, flownet_weights=None
):
    """(DFF constructor arguments, `DatasetSpec`): `model_config`, whose class count comes from
    --num_classes, else the saved dff_config.json, else the dataset (`icnet_tf.cli.
    dataset_spec`). The dataset recorded next to the checkpoints (dataset.json) is the default
    of --dataset: of `snapshot_dir` when training (a resumed run), else of `restore_from`."""
    config = model_config(restore_from, train_feature_net, snapshot_dir, flownet_weights)
    source = snapshot_dir if snapshot_dir is not None else restore_from
    record, holder = cli.saved_dataset(source)
    spec = cli.dataset_spec(
        held_classes=config['num_classes'],
        record=record,
        holder=holder or f'{source} ({CONFIG_NAME})',
    )
    return dict(config, num_classes=spec.num_classes), spec


def model_config(
    restore_from=None, train_feature_net=False, snapshot_dir=None, flownet_weights=None
):
    """DFF constructor arguments: flags given on the command line win, then the
    dff_config.json of the checkpoint training resumes from (`snapshot_dir`) or of
    --restore_from when it is a DFF checkpoint, then (for --flownet and --flow_scale) the
    flownet_config.json that `dff_tf.train_flownet` wrote next to --flownet_weights, then the
    flag defaults (`num_classes` None when neither flag nor file gives it: `model_and_dataset`
    fills it in)."""
    saved = (
        (saved_config(snapshot_dir) if snapshot_dir else None) or saved_config(restore_from) or {}
    )
    flow_saved = saved_flownet_config(flownet_weights) or {}
    for name in ('flownet', 'flow_scale'):
        if name in flow_saved and name not in saved:
            saved = dict(saved, **{name: flow_saved[name]})
    kwargs_saved = saved.get('feature_net_kwargs', {})
    value = {}
    for name in _MODEL_FLAGS:
        value[name] = getattr(FLAGS, name)
    if saved:
        for name in ('feature_net', 'num_classes', 'flow_scale', 'scale_field', 'flownet'):
            if not FLAGS[name].present and name in saved:
                value[name] = saved[name]
        if not FLAGS['filter_scale'].present and 'filter_scale' in kwargs_saved:
            value['filter_scale'] = kwargs_saved['filter_scale']
        if not FLAGS['psp_layout'].present and isinstance(kwargs_saved.get('layout'), str):
            value['psp_layout'] = kwargs_saved['layout']
    try:
        cls = model_class(value['feature_net'])
    except ValueError as e:
        raise UserError(f'--feature_net: {e}') from None
    feature_kwargs = applicable_options(cls, {'filter_scale': value['filter_scale']})
    if 'layout' in inspect.signature(cls.__init__).parameters and not (
        isinstance(kwargs_saved.get('layout'), dict) and not FLAGS['psp_layout'].present
    ):
        feature_kwargs['layout'] = value['psp_layout']
    if str(value['feature_net']).lower() == str(saved.get('feature_net', '')).lower():
        feature_kwargs = dict(kwargs_saved, **feature_kwargs)
    if not value['flow_scale'] > 0:
        raise UserError(f'--flow_scale must be positive, got {value["flow_scale"]}')
    return dict(
        feature_net=value['feature_net'],
        num_classes=value['num_classes'],
        flow_scale=value['flow_scale'],
        scale_field=value['scale_field'],
        flownet=value['flownet'],
        train_feature_net=train_feature_net,
        feature_net_kwargs=feature_kwargs,
    )


# ----------------------------------------------------------------------------- training
