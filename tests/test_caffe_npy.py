"""caffe-tensorflow `.npy` weights: reading, strict loading into ICNet, and the converter CLI."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from converters import caffe_npy
from converters.errors import WeightsFileError, WeightsMismatchError
from icnet_tf import ICNet, ICNet_BN
from tests.golden.seeded import seeded_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def caffe_style_file(path, net, drop=(), reshape_bn=True, seed=0):
    """Write weights for `net` as caffe-tensorflow does (BN vectors as (1, 1, 1, C))."""
    shapes = net.build().param_shapes()
    weights = seeded_weights(shapes, seed)
    for layer in drop:
        weights.pop(layer)
    if reshape_bn:
        for params in weights.values():
            for k in ('mean', 'variance', 'scale', 'offset'):
                if k in params:
                    params[k] = params[k].reshape(1, 1, 1, -1)
    np.save(path, weights, allow_pickle=True)
    return weights


@pytest.fixture(scope='module')
def bn_net():
    return ICNet_BN(num_classes=19).build()


def test_load_returns_the_dict_and_convert_squeezes_bn(tmp_path, bn_net):
    path = str(tmp_path / 'w.npy')
    written = caffe_style_file(path, bn_net)
    raw = caffe_npy.load(path)
    assert raw.keys() == written.keys()
    assert raw['conv1_1_3x3_s2_bn']['mean'].shape == (1, 1, 1, 32)
    conv = caffe_npy.convert(raw)
    assert conv['conv1_1_3x3_s2_bn']['mean'].shape == (32,)
    assert conv['conv1_1_3x3_s2']['weights'].shape == (3, 3, 3, 32)


def test_net_load_assigns_every_variable(tmp_path, bn_net):
    path = str(tmp_path / 'w.npy')
    written = caffe_style_file(path, bn_net, seed=5)
    report = bn_net.load(path)
    assert report.ok and len(report.loaded) == len(bn_net.variables_by_key())
    for key, var in bn_net.variables_by_key().items():
        layer, param = key.split('/')
        np.testing.assert_array_equal(var.numpy(), written[layer][param].reshape(var.shape))


def test_caffe_files_lack_the_aux_heads_strict_then_skip(tmp_path, bn_net):
    # The Caffe deploy graph has no sub4_out/sub24_out: strict loading names them...
    path = str(tmp_path / 'w.npy')
    caffe_style_file(path, bn_net, drop=('sub4_out', 'sub24_out'))
    with pytest.raises(WeightsMismatchError, match='sub4_out/weights') as e:
        bn_net.load(path)
    assert str(e.value).startswith(path)
    report = bn_net.load(path, skip=('sub4_out', 'sub24_out'))  # ...and skipping works
    assert report.ok and len(report.skipped) == 4


def test_num_classes_mismatch_is_explained(tmp_path, bn_net):
    path = str(tmp_path / 'w.npy')
    caffe_style_file(path, bn_net)
    net5 = ICNet_BN(num_classes=5)
    with pytest.raises(WeightsMismatchError) as e:
        net5.load(path)
    msg = str(e.value)
    assert 'conv6_cls/weights file (1, 1, 128, 19) vs model (1, 1, 128, 5)' in msg
    assert 'num_classes' in msg and '--skip_layers' in msg
    report = net5.load(path, ignore_missing=True, verbose=False)
    assert {k for k, _, _ in report.mismatched} == {
        f'{h}/{p}' for h in ('conv6_cls', 'sub4_out', 'sub24_out') for p in ('weights', 'biases')
    }
    np.testing.assert_array_equal(
        net5.params['conv1_1_3x3_s2']['weights'].numpy(),
        bn_net.params['conv1_1_3x3_s2']['weights'].numpy(),
    )


def test_wrong_model_is_reported(tmp_path, bn_net):
    path = str(tmp_path / 'bn.npy')
    caffe_style_file(path, bn_net)
    with pytest.raises(WeightsMismatchError, match='missing.*conv1_1_3x3_s2/biases'):
        ICNet(num_classes=19).load(path)


def test_wrong_shape_is_reported(tmp_path, bn_net):
    path = str(tmp_path / 'w.npy')
    weights = seeded_weights(bn_net.param_shapes(), 0)
    weights['conv3_sub1']['weights'] = weights['conv3_sub1']['weights'][:, :, :, :10]
    np.save(path, weights, allow_pickle=True)
    with pytest.raises(WeightsMismatchError, match=r'conv3_sub1/weights file \(3, 3, 32, 10\)'):
        bn_net.load(path)


@pytest.mark.parametrize(
    'make', ['missing', 'empty', 'garbage', 'truncated', 'plain_array', 'not_dict', 'malicious']
)
def test_bad_files_raise_one_clear_error(tmp_path, make):
    path = str(tmp_path / 'bad.npy')
    if make == 'empty':
        open(path, 'wb').close()
    elif make == 'garbage':
        open(path, 'wb').write(os.urandom(300))
    elif make == 'truncated':
        np.save(path, {'a': {'weights': np.ones((50, 50), np.float32)}}, allow_pickle=True)
        data = open(path, 'rb').read()
        open(path, 'wb').write(data[: len(data) // 2])
    elif make == 'plain_array':
        np.save(path, np.ones(3))
    elif make == 'not_dict':
        np.save(path, np.array([1, 'a'], dtype=object), allow_pickle=True)
    elif make == 'malicious':

        class Evil:
            def __reduce__(self):
                return (os.system, (f'touch {tmp_path}/pwned',))

        arr = np.empty((), dtype=object)
        arr[()] = {'conv': {'weights': Evil()}}
        with open(path, 'wb') as f:
            np.lib.format.write_array(f, arr, allow_pickle=True)
    with pytest.raises(WeightsFileError) as e:
        caffe_npy.load(path)
    assert str(e.value).startswith(path) and '\n' not in str(e.value)
    assert not os.path.exists(tmp_path / 'pwned')


def test_python2_latin1_pickle_is_read(tmp_path):
    # caffe-tensorflow wrote with Python 2: keys are byte strings decoded as latin1.
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    obj = np.empty((), dtype=object)
    obj[()] = {'conv\xe9': {'weights': arr}}
    payload = pickle.dumps(obj, protocol=2)
    path = str(tmp_path / 'py2.npy')
    with open(path, 'wb') as f:
        np.lib.format.write_array_header_1_0(
            f, {'descr': '|O', 'fortran_order': False, 'shape': ()}
        )
        f.write(payload)
    got = caffe_npy.load(path)
    np.testing.assert_array_equal(got['conv\xe9']['weights'], arr)


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    return subprocess.run(
        [sys.executable, '-m', 'converters.caffe_npy', *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_converts_and_reports(tmp_path, bn_net):
    path = str(tmp_path / 'w.npy')
    caffe_style_file(path, bn_net, drop=('sub4_out', 'sub24_out'), seed=9)
    out = tmp_path / 'ckpt'
    r = _cli(
        '--npy',
        path,
        '--model',
        'ICNet_BN',
        '--out_dir',
        str(out),
        '--skip_layers',
        'sub4_out,sub24_out',
    )
    assert r.returncode == 0, r.stderr
    n_arrays = len(bn_net.variables_by_key()) - 4
    assert f'loaded {n_arrays} arrays' in r.stdout and 'skipped on request' in r.stdout
    net = ICNet_BN(num_classes=19)
    net.load(str(out), skip=('sub4_out', 'sub24_out'))
    want = np.load(path, allow_pickle=True).item()['conv5_4_k1']['weights']
    np.testing.assert_array_equal(net.params['conv5_4_k1']['weights'].numpy(), want)


@pytest.mark.parametrize('case', ['corrupt', 'missing_layer', 'num_classes'])
def test_cli_errors_are_one_line(tmp_path, bn_net, case):
    path = str(tmp_path / 'w.npy')
    args = ['--npy', path, '--out_dir', str(tmp_path / 'o')]
    if case == 'corrupt':
        open(path, 'wb').write(b'\x93NUMPY garbage')
        expect = path
    elif case == 'missing_layer':
        caffe_style_file(path, bn_net, drop=('conv3_sub1',))
        expect = 'conv3_sub1/weights'
    else:
        caffe_style_file(path, bn_net)
        args += ['--num_classes', '7']
        expect = 'conv6_cls/weights'
    r = _cli(*args)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and expect in lines[0], r.stderr
    assert 'Traceback' not in r.stderr
