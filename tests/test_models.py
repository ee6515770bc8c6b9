"""The model registry and the network contract, shown with a network defined only here.

`TinyNet` (two strided convolutions, a 1x1 classifier and one auxiliary head, its own input
convention) is registered with one call and then trains, evaluates, exports, serves and works
as a DFF feature network through the contract alone: no tool knows it.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from converters.errors import UserError
from icnet_tf import ICNet_BN, PSPNet101, build_model, model_class, register_model
from icnet_tf.data import read_list, train_dataset
from icnet_tf.losses import PolyLR, TF1Momentum
from icnet_tf.metrics import evaluate
from icnet_tf.network import Network, resize_bilinear_align_corners
from icnet_tf.predict import Segmenter
from icnet_tf.training import Trainer, make_loss_fn, trained_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 3


class TinyNet(Network):
    """conv1 (s2) -> conv2 (s2, the features) -> 1x1 `logits`; aux head `aux` on conv1."""

    output_name = 'logits'
    output_stride = 4
    feature_layer = 'conv2'
    aux_heads = {'aux': 0.4}

    def __init__(self, num_classes=NUM_CLASSES, *, seed=0, name=None):
        super().__init__(seed=seed, name=name or 'TinyNet')
        self.num_classes = int(num_classes)

    def get_config(self):
        return {'num_classes': self.num_classes}

    def build_input_shape(self):
        return (1, 16, 16, 3)

    def preprocess(self, rgb):
        return tf.cast(rgb, tf.float32) / 255.0 - 0.5

    def setup(self, n):
        (
            n.feed('data')
            .conv(3, 3, 8, 2, 2, padding='SAME', name='conv1')
            .conv(3, 3, 16, 2, 2, padding='SAME', name='conv2')
        )
        self.classifier(n.feed(self.feature_layer))
        n.feed('conv1').conv(1, 1, self.num_classes, 1, 1, relu=False, name='aux')

    def classifier(self, n):
        return n.conv(1, 1, self.num_classes, 1, 1, relu=False, name='logits')


register_model('TinyNet', TinyNet)


def scene(rng, h=32, w=32):
    """A photo whose left half is dark and right half bright, labels 0 / 1, class 2 a square."""
    rgb = np.zeros((h, w, 3), np.uint8)
    label = np.zeros((h, w), np.uint8)
    split = int(rng.integers(w // 4, 3 * w // 4))
    rgb[:, :split] = 40
    rgb[:, split:] = 220
    label[:, split:] = 1
    y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
    rgb[y : y + 8, x : x + 8] = (220, 30, 30)
    label[y : y + 8, x : x + 8] = 2
    rgb = np.clip(rgb + rng.integers(-10, 10, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, label


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny')
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        rgb, label = scene(rng)
        Image.fromarray(rgb).save(root / f'img{i}.png')
        Image.fromarray(label).save(root / f'lab{i}.png')
        lines.append(f'img{i}.png lab{i}.png')
    (root / 'list.txt').write_text('\n'.join(lines) + '\n')
    return root


def test_registry_finds_names_and_module_paths():
    assert model_class('tinynet') is TinyNet
    assert model_class('icnet_bn') is ICNet_BN
    assert model_class('tests.test_models:TinyNet').__qualname__ == 'TinyNet'
    assert isinstance(build_model('TinyNet', num_classes=4, filter_scale=1), TinyNet)
    with pytest.raises(UserError, match='filter_scale does not apply to TinyNet'):
        build_model('TinyNet', filter_scale=2)
    with pytest.raises(UserError, match='unknown model'):
        model_class('NoSuchNet')
    with pytest.raises(ValueError, match='already registered'):
        register_model('tinynet', ICNet_BN)


def test_contract_of_the_built_in_networks():
    bn = ICNet_BN(num_classes=5)
    assert bn.loss_weights == {'sub4_out': 0.16, 'sub24_out': 0.4, 'conv6_cls': 1.0}
    assert set(bn.class_heads) == {'sub4_out', 'sub24_out', 'conv6_cls'}
    assert (bn.feature_layer, bn.feature_channels, bn.output_stride) == ('sub12_sum_interp', 128, 4)
    psp = PSPNet101(num_classes=3, blocks=(1, 1, 1, 1), width_multiplier=1 / 8)
    assert psp.loss_weights == {'conv6': 1.0} and psp.class_heads == ('conv6',)
    assert (psp.feature_layer, psp.feature_channels, psp.output_stride) == ('conv5_4_bn', 64, 8)
    tiny = TinyNet()
    assert tiny.loss_weights == {'aux': 0.4, 'logits': 1.0}
    assert tiny.feature_channels == 16
    assert [sorted(p) for p in tiny.classifier_layers()] == [['biases', 'weights']]


def test_tiny_net_trains_and_evaluates_through_the_contract(tiny_data, tmp_path):
    pairs = read_list(str(tiny_data / 'list.txt'), str(tiny_data))
    net = TinyNet(seed=1).build()
    loss_fn = make_loss_fn(net, ignore_label=255, weight_decay=0.0, update_mean_var=False)
    dataset = train_dataset(pairs, preprocess=net.preprocess, batch_size=3, crop_size=(32, 32))
    images, labels = next(iter(dataset))
    # The pipeline applied the network's own convention (RGB / 255 - 0.5), not Caffe's.
    assert float(tf.reduce_min(images)) >= -0.5 and float(tf.reduce_max(images)) <= 0.5
    total, parts = loss_fn((images, labels))
    assert set(parts) == {'aux', 'logits', 'weight_decay'}
    np.testing.assert_allclose(float(total), 0.4 * parts['aux'] + parts['logits'], rtol=1e-6)

    strategy = tf.distribute.get_strategy()
    schedule = PolyLR(0.5, 150, 0.9)
    trainer = Trainer(
        strategy=strategy,
        model=net,
        optimizer=TF1Momentum(schedule, momentum=0.9),
        variables=trained_variables(net, True),
        loss_fn=loss_fn,
        snapshot_dir=str(tmp_path / 'snap'),
        save_every=150,
    )
    cm_before = evaluate(net, pairs, num_classes=NUM_CLASSES, progress=False)
    trainer.fit(dataset, 150, learning_rate=schedule)
    assert trainer.step == 150 and os.path.isfile(tmp_path / 'snap' / 'checkpoint')
    cm = evaluate(net, pairs, num_classes=NUM_CLASSES, progress=False)
    assert cm.sum() == cm_before.sum() == 6 * 32 * 32
    assert np.trace(cm) / cm.sum() > max(0.75, np.trace(cm_before) / cm.sum() + 0.2)


def test_tiny_net_exports_and_serves_its_own_pre_and_postprocessing(tmp_path):
    from icnet_tf.serving import export_saved_model, load_signature

    net = TinyNet(seed=2).build()
    rgb = scene(np.random.default_rng(5), 40, 52)[0]
    export_saved_model(net, str(tmp_path / 'saved'))
    serve, _keep = load_signature(str(tmp_path / 'saved'))
    got = serve(images=tf.constant(rgb[None]))['labels'][0].numpy()
    # Independently: the original's padding (both sides to the next multiple of 32: 64x64),
    # TinyNet's preprocessing, its logits resized align_corners to the padded size, cropped.
    x = np.zeros((1, 64, 64, 3), np.float32)
    x[0, :40, :52] = rgb / 255.0 - 0.5
    logits = resize_bilinear_align_corners(net(x), (64, 64))[0, :40, :52]
    np.testing.assert_array_equal(got, np.argmax(logits.numpy(), -1))
    np.testing.assert_array_equal(got, Segmenter(net)(rgb))


def test_tiny_net_is_a_dff_feature_network():
    from dff_tf import DFF

    dff = DFF('TinyNet', num_classes=NUM_CLASSES, flow_scale=0.5).build()
    assert (dff.feature_layer, dff.task_layer, dff.feature_channels) == ('conv2', 'logits', 16)
    rng = np.random.default_rng(3)
    key = np.stack([scene(rng, 128, 128)[0] for _ in range(2)])
    current = np.roll(key, 2, axis=2)
    # A key frame's logits are the network's own (the classifier reads its features).
    own = dff.feature_net(dff.feature_net.preprocess(key))
    np.testing.assert_allclose(dff(key, key).numpy(), own.numpy(), atol=1e-6)
    features = dff.key_features(key)
    logits = dff.propagate(features, key, current)
    assert logits.shape == own.shape
    assert dff.labels(logits, (128, 128)).shape == (2, 128, 128)
    # N_task's variables are the classifier's: what DFF training updates besides FlowNetS.
    assert [v.name for v in dff.task_variables()] == ['logits/weights:0', 'logits/biases:0']


def test_command_line_tools_take_a_network_by_module_path(tiny_data, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    common = ['--model', 'tests.test_models:TinyNet', '--num_classes', str(NUM_CLASSES)]
    train = subprocess.run(
        [sys.executable, '-m', 'icnet_tf.train', '--data_list', str(tiny_data / 'list.txt')]
        + ['--data_dir', str(tiny_data), '--snapshot_dir', str(tmp_path / 'snap')]
        + ['--batch_size', '2', '--input_size', '32,32', '--num_steps', '3']
        + ['--save_pred_every', '3', *common],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    evaluated = subprocess.run(
        [sys.executable, '-m', 'icnet_tf.evaluate', '--data_list', str(tiny_data / 'list.txt')]
        + ['--data_dir', str(tiny_data), '--restore_from', str(tmp_path / 'snap')]
        + ['--save_dir', str(tmp_path / 'eval'), *common],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert 'mIoU' in evaluated.stdout
