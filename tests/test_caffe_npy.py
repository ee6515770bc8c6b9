"""caffe-tensorflow `.npy` weights: reading, strict loading into ICNet, and the converter CLI."""

import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from converters import caffe_npy
from converters.errors import WeightsFileError, WeightsMismatchError
from icnet_tf import ICNet, ICNet_BN
from tests.golden.seeded import seeded_weights
from tests.memcap import Build, Call, Global, assert_refused_in_one_line, dumps

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
    assert f'loaded {n_arrays} arrays' in r.stdout and 'skipped (not used here)' in r.stdout
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


# ------------------------------------------------------------------ hostile files, memory-capped
# Small .npy files that declare far more than they hold, each read in a child process whose
# address space is capped at 2 GB (tests/memcap.py): the reader must refuse with one line,
# quickly, at a small peak RSS, without a MemoryError or a kill. The pickles are assembled by
# hand from the globals the reader allows (NumPy's array, dtype and dict rebuilders).
_MULTIARRAY = 'numpy.core.multiarray'


def _dtype(code, order):
    dtype = Call(Global('numpy', 'dtype'), (code, False, True))
    return Build(dtype, (3, order, None, None, None, -1, -1, 0))


def _array(shape, dtype, data):
    empty = Call(Global(_MULTIARRAY, '_reconstruct'), (Global('numpy', 'ndarray'), (0,), b'b'))
    return Build(empty, (1, tuple(shape), dtype, False, data))


def _npy(path, payload, shape=(), descr='|O'):
    """A .npy file: a version 1.0 header for `shape`/`descr`, then `payload` as it is."""
    with open(path, 'wb') as f:
        np.lib.format.write_array_header_1_0(
            f, {'descr': descr, 'fortran_order': False, 'shape': shape}
        )
        f.write(payload)
    return path


def _weights_npy(path, param):
    """np.save's layout: a 0-d object array wrapping {'conv': {'weights': param}}."""
    return _npy(path, dumps(_array((), _dtype('O8', '|'), [{'conv': {'weights': param}}])))


def test_hand_built_npy_is_read_like_np_save(tmp_path):
    """The control for the hostile files below: the same assembler, honest sizes, loads."""
    data = np.arange(6, dtype='<f4')
    got = caffe_npy.load(
        _weights_npy(tmp_path / 'ok.npy', _array((2, 3), _dtype('f4', '<'), data.tobytes()))
    )
    np.testing.assert_array_equal(got['conv']['weights'], data.reshape(2, 3))
    assert type(got['conv']['weights']) is np.ndarray
    big_endian = _array((3,), _dtype('f8', '>'), np.arange(3, dtype='>f8').tobytes())
    got = caffe_npy.load(_weights_npy(tmp_path / 'be.npy', big_endian))
    np.testing.assert_array_equal(got['conv']['weights'], [0, 1, 2])


def _dict_copies(pairs, calls):
    """A pickle that builds one list of `pairs` (key, value) pairs, then passes it to dict()
    `calls` times through memo references: 6 bytes per call, `pairs` dict entries each."""
    items = b''.join(b'J' + struct.pack('<i', i) + b'N\x86' for i in range(pairs))
    build = b'](' + items + b'eq\x000cbuiltins\ndict\nq\x010'  # memo 0: the list, 1: dict
    return b'\x80\x02' + build + b'](' + b'h\x01h\x00\x85R' * calls + b'e.'


HOSTILE_NPY = {
    # the .npy header itself declares a 10**10-element object array
    'header_shape': (
        lambda p: _npy(p, b'', shape=(10**10,)),
        'found an array of shape (10000000000,) and dtype object (80.0 GB declared',
    ),
    # a version 2.0 header whose length field claims 4 GB (NumPy would read that many bytes)
    'header_length': (
        lambda p: p.write_bytes(b'\x93NUMPY\x02\x00' + struct.pack('<I', 0xFFFFFFF0) + b'{}') and p,
        'the .npy header declares 4.3 GB but the file has 14 bytes',
    ),
    # a float32 parameter declaring 10**5 x 10**5 elements, with 16 bytes of data
    'array_shape': (
        lambda p: _weights_npy(p, _array((10**5, 10**5), _dtype('f4', '<'), bytes(16))),
        'an array of shape (100000, 100000) and dtype float32 declares 40.0 GB but the file has',
    ),
    # an object array (allowed globals only) declaring 10**10 elements, holding one
    'object_array': (
        lambda p: _weights_npy(p, _array((10**10,), _dtype('O8', '|'), [None])),
        'declares 10000000000 elements but the pickle holds 1',
    ),
    # numpy's _reconstruct asked for 10**10 elements directly (it allocates them)
    'reconstruct_shape': (
        lambda p: _weights_npy(
            p,
            Call(
                Global(_MULTIARRAY, '_reconstruct'), (Global('numpy', 'ndarray'), (10**10,), b'b')
            ),
        ),
        'unexpected numpy _reconstruct call',
    ),
    # a BINBYTES8 op declaring 4 GB (the unpickler allocates it before reading)
    'bytes_length': (
        lambda p: _npy(p, b'\x80\x04\x8e' + struct.pack('<Q', 2**32) + b'x.'),
        'declares a 4.3 GB BINBYTES8 value',
    ),
    # 11 bytes: a memo index that makes the unpickler allocate and clear 4 GB
    'memo_index': (
        lambda p: _npy(p, b'\x80\x02Nr' + struct.pack('<I', 2**28) + b'.'),
        'memo entry 268435456',
    ),
    # one 6000-pair list passed to dict() 6000 times: 36 million dict entries from 70 kB
    'dict_copies': (
        lambda p: _npy(p, _dict_copies(6000, 6000)),
        'a dict declares 432.0 kB after',
    ),
}


@pytest.mark.parametrize('case', list(HOSTILE_NPY))
def test_hostile_npy_is_refused_under_a_memory_cap(tmp_path, case):
    make, expect = HOSTILE_NPY[case]
    path = make(tmp_path / f'{case}.npy')
    assert_refused_in_one_line('caffe_npy', path, expect)
