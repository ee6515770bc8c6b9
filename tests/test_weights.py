"""Strict loading (`icnet_tf.weights`): a file that does not fit says what it holds."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from converters.errors import WeightsMismatchError
from icnet_tf import ICNet, ICNet_BN

TF1_NAMES = {
    'scale': 'gamma',
    'offset': 'beta',
    'mean': 'moving_mean',
    'variance': 'moving_variance',
}


def write_tf1_checkpoint(net, folder, step=27150):
    """The network's values saved the way the original train.py does (tf.compat.v1 Saver over
    `<layer>/weights|biases|gamma|beta|moving_mean|moving_variance`, Momentum slots included),
    without the `checkpoint` state file (as downloads often come)."""
    values = {k: v.numpy() for k, v in net.build().variables_by_key().items()}
    with tf.Graph().as_default():
        variables = []
        for key, value in values.items():
            layer, param = key.split('/')
            variables.append(
                tf.compat.v1.Variable(value, name=f'{layer}/{TF1_NAMES.get(param, param)}')
            )
        for v in variables[:3]:
            tf.compat.v1.Variable(np.zeros(v.shape, np.float32), name=f'{v.op.name}/Momentum')
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, os.path.join(folder, 'model.ckpt'), step)
    os.remove(os.path.join(folder, 'checkpoint'))
    return values


def test_tf1_checkpoint_folder_loads_and_a_wrong_model_says_what_the_file_holds(tmp_path):
    source = ICNet_BN(num_classes=7, filter_scale=2, seed=3)
    values = write_tf1_checkpoint(source, str(tmp_path))
    net = ICNet_BN(num_classes=7, filter_scale=2)
    report = net.load(str(tmp_path), verbose=False)
    assert len(report.loaded) == len(values) and len(report.not_parameters) == 3
    for key, var in net.variables_by_key().items():
        np.testing.assert_array_equal(var.numpy(), values[key])
    holds = re.escape('the file holds ICNet_BN (filter_scale=2, num_classes=7)')
    with pytest.raises(WeightsMismatchError, match=holds) as e:
        ICNet(num_classes=7, filter_scale=2).load(str(tmp_path))
    assert str(e.value).endswith(
        ' -- to use it, ask for ICNet_BN (--model ICNet_BN; DFF: --feature_net icnet_bn)'
    )
    with pytest.raises(WeightsMismatchError, match=holds) as e:
        ICNet_BN(num_classes=19, filter_scale=1).load(str(tmp_path))
    assert 'to use it, ask for' not in str(e.value)  # the same network: its options differ


def test_the_class_head_hint_only_when_only_the_class_heads_differ():
    """Another number of classes: the hint says how to use the file (its class count, or skip
    the heads in training / conversion: inference has no --skip_layers). Another filter_scale
    (every layer differs, heads too): no class-head hint, the file's description says it."""
    weights = {}
    for key, var in ICNet_BN(num_classes=7, seed=3).build().variables_by_key().items():
        layer, param = key.split('/')
        weights.setdefault(layer, {})[param] = var.numpy()
    with pytest.raises(WeightsMismatchError) as e:
        ICNet_BN(num_classes=5).load(weights)
    assert 'the file holds ICNet_BN (filter_scale=1, num_classes=7)' in str(e.value)
    assert str(e.value).endswith(
        ' -- only the class heads differ: give the number of classes (or --dataset) the file '
        "was trained with; to fine-tune on other classes skip them: skip=('conv6_cls', "
        "'sub24_out', 'sub4_out') (icnet_tf.train skips them by itself; icnet_tf.convert: "
        '--skip_layers conv6_cls,sub24_out,sub4_out)'
    )
    with pytest.raises(WeightsMismatchError) as e:
        ICNet_BN(num_classes=5, filter_scale=2).load(weights)
    assert 'the file holds ICNet_BN (filter_scale=1, num_classes=7)' in str(e.value)
    assert 'class heads' not in str(e.value) and 'skip' not in str(e.value)
