"""converters.tf1_checkpoint: TF1 Saver checkpoints of the original ICNet-tensorflow.

Parity: tests/golden/make_tf1_checkpoint_golden.py ran the ORIGINAL code (90a85c4 under
tf.compat.v1), saved a checkpoint exactly as its train.py does and recorded every saved key's
shape, dtype and crc32 (Momentum slots included), the `checkpoint` state file it wrote and the
original graph's outputs. Here an equivalent checkpoint is rebuilt with tf.compat.v1 (graph mode,
variables with exactly the recorded names, `tf.compat.v1.train.Saver`), its values regenerated
from tests/golden/seeded.py and checked against the recorded crc32 of each key, so the
name -> value pairing is the original's, not this module's. It is read with
`tf1_checkpoint.read`, loaded strictly into our network and compared with the original's
outputs: max abs difference <= 1e-4 * max |reference|, argmax agreement >= 99.99%.
"""

import contextlib
import json
import os
import shutil
import struct
import warnings
import zlib

import numpy as np
import pytest
import tensorflow as tf

from converters import tf1_checkpoint
from converters.errors import Note, WeightsFileError
from icnet_tf import ICNet, ICNet_BN, PSPNet101
from icnet_tf.network import Network
from tests.golden.seeded import seeded_array, seeded_images, seeded_uniform

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
RTOL = 1e-4  # of max |reference|
ARGMAX_AGREEMENT = 0.9999
BN_CASE = 'icnet_bn_fs2_nc150_129x193'
MERGED_CASE = 'icnet_fs1_nc5_193x257'
# How the TF1 graphs of the golden cases map onto this port (see tests/test_icnet_parity.py):
# ICNet_BN pools h/1, h/2, h/3, h/4; ICNet outside Cityscapes evaluation pools h/n, n=1,2,3,6.
NETS = {
    BN_CASE: lambda: ICNet_BN(
        num_classes=150, filter_scale=2, psp_bins=(1, 2, 3, 4), psp_pooling='adaptive'
    ),
    MERGED_CASE: lambda: ICNet(num_classes=5, psp_pooling='adaptive'),
}
# The TF1 batch-norm variable names -> the caffe-tensorflow names seeded.py keys weights by
# (written here independently of the module; the crc32 check below confirms each pairing).
TF1_PARAMS = ('weights', 'biases', 'gamma', 'beta', 'moving_mean', 'moving_variance')
SEEDED_PARAM = dict(zip(TF1_PARAMS, ('weights', 'biases', 'scale', 'offset', 'mean', 'variance')))


@contextlib.contextmanager
def notes():
    """The `Note` warnings given inside the block, as message strings, each distinct one once
    per place (as the command-line tools show them)."""
    said = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('default', Note)
        yield said
    said += [str(w.message) for w in caught if issubclass(w.category, Note)]


def load_record(case):
    with open(os.path.join(DATA, f'tf1_checkpoint_{case}.json')) as f:
        record = json.load(f)
    with np.load(os.path.join(DATA, f'tf1_checkpoint_{case}.npz')) as z:
        outputs = {k: z[k] for k in z.files}
    return record, outputs


def golden_value(name, shape, meta):
    """The value the generator gave the variable `name` (network weight or Momentum slot)."""
    if name.endswith('/Momentum'):
        s = meta['slot_values']
        return seeded_uniform(shape, s['seed'], s['low'], s['high'], tag=name)
    layer, param = name.split('/')
    return seeded_array(f'{layer}/{SEEDED_PARAM[param]}', shape, seed=0)


def write_tf1_checkpoint(directory, values, step, state_file=True):
    """Save `values` ({variable name: array}) like train.py: tf.compat.v1 graph variables with
    exactly those names, `tf.compat.v1.train.Saver(var_list=global variables)`, prefix
    `model.ckpt-<step>`."""
    with tf.Graph().as_default():
        feed = {}
        for name, value in values.items():
            ph = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)
            var = tf.compat.v1.Variable(ph, name=name)
            assert var.op.name == name
            feed[ph] = value
        saver = tf.compat.v1.train.Saver(var_list=tf.compat.v1.global_variables(), max_to_keep=5)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer(), feed)
            prefix = saver.save(
                sess,
                os.path.join(directory, 'model.ckpt'),
                global_step=step,
                write_state=state_file,
                write_meta_graph=False,
            )
    return prefix


def rebuild_golden_checkpoint(directory, case):
    """The golden case's checkpoint, rebuilt from the recorded manifest (see module doc)."""
    record, _ = load_record(case)
    manifest, meta = record['manifest'], record['meta']

    values = {}
    for name in sorted(manifest):
        value = golden_value(name, manifest[name]['shape'], meta)
        assert value.dtype.name == manifest[name]['dtype']
        assert zlib.crc32(value.tobytes()) == manifest[name]['crc32'], (
            f'{name}: regenerated value differs from what the original saved'
        )
        values[name] = value
    os.makedirs(directory, exist_ok=True)
    prefix = write_tf1_checkpoint(directory, values, meta['step'])
    # The state file exactly as the original wrote it (train.py saves to './snapshots/').
    with open(os.path.join(directory, 'checkpoint'), 'w') as f:
        f.write(record['state_file'])
    saved = dict(tf.train.list_variables(prefix))
    assert saved == {k: v['shape'] for k, v in manifest.items()}
    return prefix


@pytest.fixture(scope='module')
def golden_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp('tf1')
    return {
        case: rebuild_golden_checkpoint(str(root / case), case) for case in (BN_CASE, MERGED_CASE)
    }


def assert_close(name, got, ref):
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    scale = np.abs(ref).max()
    diff = np.abs(got - ref).max()
    assert diff <= RTOL * scale, f'{name}: max diff {diff:.3g} > {RTOL} x {scale:.3g}'


# ------------------------------------------------------------------------------- parity
@pytest.mark.parametrize('case', [BN_CASE, MERGED_CASE])
def test_original_checkpoint_loads_and_matches_the_original_graph(golden_checkpoints, case):
    record, golden = load_record(case)
    folder = os.path.dirname(golden_checkpoints[case])
    assert tf1_checkpoint.detect(folder)
    weights, skipped = tf1_checkpoint.read(folder)  # via the original's state file
    slots = sorted(k for k in record['manifest'] if k.endswith('/Momentum'))
    assert skipped == slots and len(slots) == record['meta']['slot_variables']
    assert all(v.dtype == np.float32 for params in weights.values() for v in params.values())

    net = NETS[case]()
    report = net.load(weights, verbose=False)  # strict: every variable, nothing extra
    assert report.ok and len(report.loaded) == record['meta']['network_variables']
    images = seeded_images(record['meta']['input_shape'], seed=1)
    out = net(images, training=False, outputs=list(golden))
    for name, ref in golden.items():
        assert_close(name, out[name].numpy(), ref)
    agree = np.mean(np.argmax(out['conv6_cls'].numpy(), -1) == np.argmax(golden['conv6_cls'], -1))
    assert agree >= ARGMAX_AGREEMENT, agree


def test_the_networks_recognise_what_a_checkpoint_holds(golden_checkpoints):
    describe = Network.describe_weights
    bn, _ = tf1_checkpoint.read(golden_checkpoints[BN_CASE])
    assert describe(bn) == 'holds ICNet_BN (filter_scale=2, num_classes=150)'
    assert ICNet.recognise(bn) is None and PSPNet101.recognise(bn) is None
    merged, _ = tf1_checkpoint.read(golden_checkpoints[MERGED_CASE])
    assert describe(merged) == 'holds ICNet (filter_scale=1, num_classes=5)'
    assert ICNet_BN.recognise(merged) is None
    # A class derived later (as the export rewrites derive serving variants) does not take
    # the answer from the class it derives from.
    type('LaterICNet', (ICNet,), {})
    assert describe(merged) == 'holds ICNet (filter_scale=1, num_classes=5)'

    # PSPNet101: the real layer names (a reduced-depth, 1/8-width network), then a Caffe stem.
    shapes = (
        PSPNet101(num_classes=21, blocks=(1, 1, 1, 1), width_multiplier=1 / 8)
        .build()
        .param_shapes()
    )
    psp = {}
    for key, shape in shapes.items():
        layer, param = key.split('/')
        psp.setdefault(layer, {})[param] = np.zeros(shape, np.float32)
    assert describe(psp) == 'holds PSPNet101 (num_classes=21)'
    psp['conv1_1_3x3_s2']['weights'] = np.zeros((3, 3, 3, 64), np.float32)
    assert describe(psp) == 'holds PSPNet101 (layout=caffe, num_classes=21)'
    psp['conv1_1_3x3_s2']['weights'] = np.zeros((3, 3, 3, 32), np.float32)
    assert PSPNet101.recognise(psp) == {'layout': 'mmseg', 'num_classes': 21}

    # ICNet_BN at filter_scale 1 (conv1_1_3x3_s2 has 32 channels), and something else.
    bn['conv1_1_3x3_s2']['weights'] = np.zeros((3, 3, 3, 32), np.float32)
    assert describe(bn) == 'holds ICNet_BN (filter_scale=1, num_classes=150)'
    other = {'fc1': {'weights': np.zeros((4, 3))}, 'fc2': {'weights': np.zeros((3, 2))}}
    assert describe(other) == 'holds 2 arrays in 2 layers, of no network known here'


# ------------------------------------------------------------------------- small checkpoints
def tiny_values(extra=()):
    """A few variables in the original's naming, plus `extra` names."""
    shapes = {
        'conv1/weights': (3, 3, 3, 4),
        'conv1_bn/gamma': (4,),
        'conv1_bn/beta': (4,),
        'conv1_bn/moving_mean': (4,),
        'conv1_bn/moving_variance': (4,),
        'conv6_cls/weights': (1, 1, 4, 2),
        'conv6_cls/biases': (2,),
        'conv1/weights/Momentum': (3, 3, 3, 4),
    }
    values = {
        name: np.random.default_rng(zlib.crc32(name.encode())).normal(size=shape).astype('f4')
        for name, shape in shapes.items()
    }
    for name in extra:
        values[name] = np.array(7, np.int64)
    return values


def tiny_checkpoint(directory, step, values=None, state_file=True):
    values = values or tiny_values()
    os.makedirs(directory, exist_ok=True)
    return write_tf1_checkpoint(str(directory), values, step, state_file)


def test_read_maps_names_and_lists_everything_else(tmp_path):
    values = tiny_values(extra=('global_step',))
    prefix = tiny_checkpoint(tmp_path, 3, values)
    weights, skipped = tf1_checkpoint.read(prefix)
    assert skipped == ['conv1/weights/Momentum', 'global_step']
    assert {k: sorted(v) for k, v in weights.items()} == {
        'conv1': ['weights'],
        'conv1_bn': ['mean', 'offset', 'scale', 'variance'],
        'conv6_cls': ['biases', 'weights'],
    }
    np.testing.assert_array_equal(weights['conv1_bn']['scale'], values['conv1_bn/gamma'])
    np.testing.assert_array_equal(weights['conv1_bn']['offset'], values['conv1_bn/beta'])
    np.testing.assert_array_equal(weights['conv1_bn']['mean'], values['conv1_bn/moving_mean'])
    np.testing.assert_array_equal(
        weights['conv1_bn']['variance'], values['conv1_bn/moving_variance']
    )
    np.testing.assert_array_equal(weights['conv1']['weights'], values['conv1/weights'])

    def strip_momentum(name):  # a custom key map: read the slots instead
        parts = name.split('/')
        return (parts[0], parts[1]) if parts[2:] == ['Momentum'] else None

    slots, skipped = tf1_checkpoint.read(prefix, key_map=strip_momentum)
    np.testing.assert_array_equal(slots['conv1']['weights'], values['conv1/weights/Momentum'])
    assert len(skipped) == len(values) - 1


def test_resolve_state_files_and_file_paths(tmp_path):
    prefix5 = tiny_checkpoint(tmp_path, 5)
    prefix100 = tiny_checkpoint(tmp_path, 100)  # the state file now names model.ckpt-100
    d = str(tmp_path)
    assert tf1_checkpoint.resolve(d) == prefix100
    assert tf1_checkpoint.resolve(prefix5) == prefix5
    for suffix in ('.index', '.data-00000-of-00001'):
        assert tf1_checkpoint.resolve(prefix5 + suffix) == prefix5
    assert tf1_checkpoint.resolve(prefix5 + '.meta') == prefix5  # by name; .meta not needed
    assert tf1_checkpoint.resolve(os.path.join(d, 'checkpoint')) == prefix100

    # The state file renamed checkpoint.txt (as shipped with the ADE20K model); its text is
    # what the original's train.py wrote; it wins over a higher step in the folder.
    record, _ = load_record(BN_CASE)
    os.remove(os.path.join(d, 'checkpoint'))
    with open(os.path.join(d, 'checkpoint.txt'), 'w') as f:
        f.write(
            record['state_file'].replace(f'model.ckpt-{record["meta"]["step"]}', 'model.ckpt-5')
        )
    assert tf1_checkpoint.resolve(d) == prefix5
    assert tf1_checkpoint.detect(d)

    # Paths written elsewhere: absolute on another machine, relative to train.py's cwd.
    for named in ('/home/someone/ICNet/snapshots/model.ckpt-5', './snapshots/model.ckpt-5'):
        with open(os.path.join(d, 'checkpoint.txt'), 'w') as f:
            f.write(f'model_checkpoint_path: "{named}"\n')
        assert tf1_checkpoint.resolve(d) == prefix5
    with open(os.path.join(d, 'checkpoint.txt'), 'w') as f:
        f.write('model_checkpoint_path: "model.ckpt-7"\n')
    with pytest.raises(  # a state file given by name: no fallback
        WeightsFileError, match=r'checkpoint\.txt: names checkpoint .*model\.ckpt-7'
    ):
        tf1_checkpoint.resolve(os.path.join(d, 'checkpoint.txt'))
    # the folder: the newest intact checkpoint instead, said once (a Note)
    with notes() as said:
        assert tf1_checkpoint.resolve(d) == prefix100
        assert tf1_checkpoint.resolve(d) == prefix100
    assert said == [
        f"{d}/checkpoint.txt: names checkpoint 'model.ckpt-7', which is not in {d}: "
        f'using {prefix100}, the newest intact checkpoint'
    ]

    for bad in (os.path.join(d, 'nothing'), os.path.join(d, 'model.ckpt-6.index')):
        with pytest.raises(WeightsFileError, match=f'^{bad}: no such file'):
            tf1_checkpoint.resolve(bad)
    stray = os.path.join(d, 'notes.txt')
    open(stray, 'w').close()
    with pytest.raises(WeightsFileError, match=f'^{stray}: not a TF checkpoint'):
        tf1_checkpoint.resolve(stray)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(WeightsFileError, match=f'^{empty}: folder holds no TF checkpoint'):
        tf1_checkpoint.resolve(empty)


def test_folder_without_state_file_takes_the_highest_step_then_the_newest(tmp_path):
    prefixes = {s: tiny_checkpoint(tmp_path, s, state_file=False) for s in (20, 100, 5)}
    assert not os.path.exists(tmp_path / 'checkpoint')
    os.utime(prefixes[20] + '.index', (2e9, 2e9))  # the newest file, but not the highest step
    assert tf1_checkpoint.resolve(tmp_path) == prefixes[100]
    assert tf1_checkpoint.detect(tmp_path)

    other = tmp_path / 'unnumbered'
    other.mkdir()
    for i, name in enumerate(('b', 'a', 'c')):  # no step numbers: the newest .index
        for suffix in ('.index', '.data-00000-of-00001'):
            shutil.copy(prefixes[5] + suffix, other / (name + suffix))
        os.utime(other / (name + '.index'), (1e9 + i, 1e9 + i))
    os.utime(other / 'a.index', (3e9, 3e9))
    assert tf1_checkpoint.resolve(other) == str(other / 'a')


def test_tf2_checkpoint_of_this_project_is_not_detected(tmp_path, golden_checkpoints):
    from converters.tf_checkpoint import save_weights_checkpoint

    net = ICNet(num_classes=5, psp_pooling='adaptive')
    net.load(tf1_checkpoint.read(golden_checkpoints[MERGED_CASE])[0], verbose=False)
    prefix = save_weights_checkpoint(net, str(tmp_path / 'tf2'))
    keys = dict(tf.train.list_variables(prefix))
    assert 'net/params/conv6_cls/weights/.ATTRIBUTES/VARIABLE_VALUE' in keys
    assert not tf1_checkpoint.detect(prefix)
    assert not tf1_checkpoint.detect(tmp_path / 'tf2')
    with pytest.raises(WeightsFileError, match=f'^{prefix}: a TF2 object-based checkpoint'):
        tf1_checkpoint.read(prefix)
    npy = tmp_path / 'w.npy'
    np.save(npy, np.zeros(3))
    assert not tf1_checkpoint.detect(npy)
    assert not tf1_checkpoint.detect(tmp_path / 'missing')


# ----------------------------------------------------------------------- damaged and hostile
def test_corrupt_or_truncated_files_give_one_line_naming_the_file(tmp_path):
    prefix = tiny_checkpoint(tmp_path / 'ok', 1)
    index, data = prefix + '.index', prefix + '.data-00000-of-00001'
    raw_index, raw_data = open(index, 'rb').read(), open(data, 'rb').read()
    at = tf1_checkpoint._read_index(prefix)[1]['conv1_bn/gamma'].offset  # a tensor read() reads

    def flip(raw, i):
        return raw[:i] + bytes([raw[i] ^ 0x10]) + raw[i + 1 :]

    def damaged(name, index_bytes=raw_index, data_bytes=raw_data):
        d = tmp_path / name
        d.mkdir()
        p = str(d / 'model.ckpt-1')
        open(p + '.index', 'wb').write(index_bytes)
        open(p + '.data-00000-of-00001', 'wb').write(data_bytes)
        return p

    cases = {
        'truncated_index': damaged('ti', index_bytes=raw_index[: len(raw_index) // 2]),
        'garbage_index': damaged('gi', index_bytes=os.urandom(len(raw_index))),
        'flipped_index': damaged('fi', index_bytes=flip(raw_index, 20)),
        'empty_index': damaged('ei', index_bytes=b''),
        'truncated_data': damaged('td', data_bytes=raw_data[:-8]),
        'flipped_data': damaged('fd', data_bytes=flip(raw_data, at)),
    }
    for what, p in cases.items():
        with pytest.raises(WeightsFileError) as e:
            tf1_checkpoint.read(p)
        msg = str(e.value)
        assert msg.startswith(p) and '\n' not in msg, (what, msg)
        if what in ('truncated_index', 'garbage_index', 'empty_index'):
            assert not tf1_checkpoint.detect(p), what
    os.remove(data)
    with pytest.raises(WeightsFileError, match=f'^{data}: checkpoint data file is missing'):
        tf1_checkpoint.read(prefix)


def _crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def write_index(path, header, entries):
    """A TF table (lib/io/table layout, uncompressed, valid checksums) mapping keys to protos."""
    out = bytearray()

    def block(pairs):
        body = bytearray()
        for key, value in pairs:  # no prefix sharing: shared=0, one restart point
            body += bytes([0]) + _varint(len(key)) + _varint(len(value)) + key + value
        body += struct.pack('<II', 0, 1)
        offset = len(out)
        crc = _crc32c(bytes(body) + b'\0')
        masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
        out.extend(body + b'\0' + struct.pack('<I', masked))
        return _varint(offset) + _varint(len(body))

    pairs = [(b'', header.SerializeToString())]
    pairs += [(k.encode(), e.SerializeToString()) for k, e in sorted(entries.items())]
    data_handle = block(pairs)
    meta_handle = block([])
    index_handle = block([(pairs[-1][0] + b'\0', data_handle)])
    footer = (meta_handle + index_handle).ljust(40, b'\0')
    out += footer + struct.pack('<II', 0x8B80FB57, 0xDB477524)
    with open(path, 'wb') as f:
        f.write(out)


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_hostile_declared_shapes_are_refused_before_anything_is_allocated(tmp_path):
    from tensorflow.core.protobuf import tensor_bundle_pb2

    values = {'conv1/weights': np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)}
    prefix = tiny_checkpoint(tmp_path / 'ok', 1, values)
    header, entries = tf1_checkpoint._read_index(prefix)  # the real entries, to re-declare
    d = tmp_path / 'hostile'
    d.mkdir()
    p = str(d / 'model.ckpt-1')
    shutil.copy(prefix + '.data-00000-of-00001', p + '.data-00000-of-00001')

    def declare(dims, size=None):
        entry = tensor_bundle_pb2.BundleEntryProto()
        entry.CopyFrom(entries['conv1/weights'])
        del entry.shape.dim[:]
        for n in dims:
            entry.shape.dim.add().size = n
        if size is not None:
            entry.size = size
        write_index(p + '.index', header, {'conv1/weights': entry})

    declare([1, 1, 2, 3])  # the crafted index itself is a valid checkpoint
    w, _ = tf1_checkpoint.read(p)
    np.testing.assert_array_equal(w['conv1']['weights'], values['conv1/weights'])

    hostile = {
        # 40 GB declared consistently (size = elements * 4), 24 bytes on disk
        'beyond the data file': ([100_000, 100_000], 40_000_000_000),
        # element count overflows int64: TensorFlow's own reader aborts the process on this
        'overflow': ([2**40, 2**40, 2**40], None),
        'negative dim': ([-1, 6], None),
        'size mismatch': ([1000, 1000], None),
    }
    for what, (dims, size) in hostile.items():
        declare(dims, size)
        assert tf1_checkpoint.detect(p)  # still a TF1 checkpoint by its names ...
        with pytest.raises(WeightsFileError) as e:  # ... that read() refuses
            tf1_checkpoint.read(p)
        msg = str(e.value)
        assert msg.startswith(p) and 'conv1/weights' in msg and '\n' not in msg, (what, msg)


def test_a_folder_gives_its_newest_intact_checkpoint_and_changes_nothing(tmp_path):
    """The original's snapshot folder with its newest checkpoint damaged, or a corrupt state
    file: the newest intact checkpoint, one note on stderr, every file byte-identical."""
    prefixes = {s: tiny_checkpoint(tmp_path, s) for s in (5, 20, 100)}  # state: model.ckpt-100
    d = str(tmp_path)

    def files():
        return {n: (tmp_path / n).read_bytes() for n in sorted(os.listdir(d))}

    index = prefixes[100] + '.index'
    with open(index, 'r+b') as f:
        f.truncate(os.path.getsize(index) - 7)
    before = files()
    with notes() as said:
        assert tf1_checkpoint.resolve(d) == prefixes[20]
        weights, _ = tf1_checkpoint.read(d)
    assert 'conv1' in weights
    assert len(said) == 1 and said[0].startswith(f'{index}: not a readable TF checkpoint')
    assert said[0].endswith(f'using {prefixes[20]}, the newest intact checkpoint')
    assert files() == before

    found = tf1_checkpoint.newest_intact(d)
    assert (found.prefix, [p for p, _ in found.damaged]) == (prefixes[20], [prefixes[100]])
    os.remove(prefixes[20] + '.index')  # only its data file left: listed, and damaged
    with notes() as said:
        assert tf1_checkpoint.resolve(d) == prefixes[5]
    assert f'{prefixes[20]}.index: missing' in said[0]

    with open(os.path.join(d, 'checkpoint'), 'wb') as f:
        f.write(b'\xff\xfe garbage')
    with notes() as said:
        assert tf1_checkpoint.resolve(d) == prefixes[5]
    assert f'{d}/checkpoint: corrupt checkpoint state file' in said[0]

    with open(prefixes[5] + '.data-00000-of-00001', 'r+b') as f:
        f.truncate(10)
    before = files()
    with pytest.raises(WeightsFileError, match=f'^{d}: no intact checkpoint: .*and 2 more'):
        tf1_checkpoint.resolve(d)
    assert files() == before
