"""converters.torch_pth: torch-free reading of zip, legacy and safetensors checkpoints."""

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections import OrderedDict

import numpy as np
import pytest

from converters import torch_pth
from converters.errors import WeightsFileError
from tests.memcap import (
    MAX_RSS_MB,
    Call,
    Global,
    PersId,
    Raw,
    assert_refused_in_one_line,
    dumps,
    read_capped,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------- helpers
def _flownet_checkpoint():
    """A FlowNetPytorch-like checkpoint exercising every dtype and storage layout.

    Returns (ckpt, tensors)."""
    import torch

    torch.manual_seed(0)
    base = torch.arange(12, dtype=torch.float32)
    mat = torch.randn(3, 4)
    bn = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    bn.train()(torch.randn(2, 2, 5, 5))  # num_batches_tracked = 1, running stats move
    tensors = OrderedDict(
        f32=torch.randn(2, 3),
        f16=torch.randn(4).half(),
        bf16=torch.randn(3, 2).bfloat16(),
        f64=torch.randn(2, 2, dtype=torch.float64),
        i64=torch.tensor([-(2**40), 0, 7]),
        u8=torch.tensor([0, 200, 255], dtype=torch.uint8),
        flag=torch.tensor([True, False, True]),
        transposed=mat.t(),
        strided=mat[:, ::2],
        bf16_t=torch.randn(2, 3).bfloat16().t(),
        shared_slice=base[2:5],
        shared_view=base.view(3, 4),
        shared_tail=base.view(3, 4)[1:, 1:],
        empty=torch.zeros(0, 3),
        scalar=torch.tensor(2.5),
    )
    tensors.update(('module.' + k, v) for k, v in bn.state_dict().items())  # DataParallel naming
    ckpt = {
        'epoch': 3,
        'arch': 'flownets',
        'div_flow': 20,
        'best_EPE': 1.95,
        'state_dict': tensors,
        'history': [1, 2.5, 'x', None, (True, b'raw')],
        'shape': torch.Size([1, 2]),
        'np_scalars': {'f64': np.float64(0.125), 'i64': np.int64(-4), 'f32': np.float32(2.5)},
    }
    return ckpt, tensors


def _assert_tensor_equal(array, tensor):
    import torch

    expected = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    assert isinstance(array, np.ndarray)
    assert array.dtype == expected.dtype and array.dtype.isnative
    assert array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)


def _rewrite_zip(src, dst, edit):
    """Copy a zip, passing each (name, data) through ``edit`` (new data, or None to drop)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def _write_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        blob = np.ascontiguousarray(array).astype(array.dtype.newbyteorder('<')).tobytes()
        header[name] = {
            'dtype': dtype,
            'shape': list(array.shape),
            'data_offsets': [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    if metadata is not None:
        header['__metadata__'] = metadata
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack('<Q', len(raw)) + raw + b''.join(blobs))


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f'echo PWNED > {self.target}',)


def _assert_error_starts_with_path(path, match=None):
    with pytest.raises(WeightsFileError) as info:
        torch_pth.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and '\n' not in message, message
    if match:
        assert match in message, message
    return message


# ------------------------------------------------------------------------------------ round trips
@pytest.mark.torch
@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_flownet_checkpoint_round_trip(tmp_path, zip_format):
    import torch

    ckpt, tensors = _flownet_checkpoint()
    path = tmp_path / 'flownets_EPE1.950.pth.tar'
    torch.save(ckpt, path, _use_new_zipfile_serialization=zip_format)
    obj = torch_pth.load(path)

    assert type(obj) is dict and type(obj['state_dict']) is dict
    assert list(obj['state_dict']) == list(tensors)
    for name, tensor in tensors.items():
        _assert_tensor_equal(obj['state_dict'][name], tensor)
    assert obj['state_dict']['module.1.num_batches_tracked'].shape == ()
    assert (obj['epoch'], obj['arch'], obj['div_flow'], obj['best_EPE']) == (
        3,
        'flownets',
        20,
        1.95,
    )
    assert obj['history'] == [1, 2.5, 'x', None, (True, b'raw')]
    assert obj['shape'] == (1, 2) and type(obj['shape']) is tuple
    assert obj['np_scalars'] == {'f64': 0.125, 'i64': -4, 'f32': 2.5}
    assert type(obj['np_scalars']['i64']) is int

    state, meta = torch_pth.split_metadata(obj, str(path))
    assert '1.running_mean' in state and not any(k.startswith('module.') for k in state)
    assert state['1.num_batches_tracked'] == 1
    assert meta['div_flow'] == 20 and meta['arch'] == 'flownets' and 'state_dict' not in meta


@pytest.mark.torch
def test_parameters_module_state_dict_and_v3_dtypes(tmp_path):
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    u16 = torch.tensor([1, 65535, 7], dtype=torch.int32).to(torch.uint16)[1:]  # _rebuild_tensor_v3
    extra = {'param': torch.nn.Parameter(torch.randn(3)), 'u16': u16}
    torch.save({'model': net.state_dict(), 'extra': extra}, tmp_path / 'm.pth')
    obj = torch_pth.load(tmp_path / 'm.pth')
    for name, tensor in net.state_dict().items():
        _assert_tensor_equal(obj['model'][name], tensor)
    _assert_tensor_equal(obj['extra']['param'], extra['param'].detach())
    np.testing.assert_array_equal(obj['extra']['u16'], np.array([65535, 7], np.uint16))
    assert obj['extra']['u16'].dtype == np.uint16
    assert set(torch_pth.state_dict_of(obj)) == set(net.state_dict())


@pytest.mark.torch
def test_big_endian_zip_byteorder_record(tmp_path):
    import torch

    tensors = {
        'f': torch.randn(2, 3),
        'i': torch.arange(4),
        'h': torch.randn(3).half(),
        'b': torch.randn(2).bfloat16(),
    }
    torch.save(tensors, tmp_path / 'le.pth')
    sizes = {'0': 4, '1': 8, '2': 2, '3': 2}  # storage keys in pickling order

    def swap(name, data):
        if name.endswith('/byteorder'):
            return b'big'
        key = name.rsplit('/data/', 1)[-1] if '/data/' in name else None
        return np.frombuffer(data, f'<u{sizes[key]}').byteswap().tobytes() if key in sizes else data

    _rewrite_zip(tmp_path / 'le.pth', tmp_path / 'be.pth', swap)
    obj = torch_pth.load(tmp_path / 'be.pth')
    for name, tensor in tensors.items():
        _assert_tensor_equal(obj[name], tensor)


@pytest.mark.torch
def test_legacy_storage_views_match_torch(tmp_path):
    """Pre-1.0 legacy files carry view_metadata (view_key, offset, numel): hand-build one and
    check it against torch."""
    import torch

    class View:
        def __init__(self, key, offset, numel):
            self.pid = ('storage', torch.FloatStorage, 'root', 'cpu', 10, (key, offset, numel))

    class Tensor:
        def __init__(self, storage, offset, size, stride):
            self.args = (storage, offset, size, stride, False, OrderedDict())

        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, View) else None

    obj = {
        'a': Tensor(View('v1', 4, 6), 1, (2, 2), (1, 2)),
        'b': Tensor(View('v0', 0, 10), 0, (10,), (1,)),
    }
    stream = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {'protocol_version': 1001, 'little_endian': True}):
        pickle.dump(header, stream, protocol=2)
    Pickler(stream, protocol=2).dump(obj)
    pickle.dump(['root'], stream, protocol=2)
    stream.write(struct.pack('<q', 10) + np.arange(10, dtype='<f4').tobytes())
    (tmp_path / 'views.pth').write_bytes(stream.getvalue())

    expected = torch.load(tmp_path / 'views.pth', weights_only=False)
    got = torch_pth.load(tmp_path / 'views.pth')
    for name in ('a', 'b'):
        _assert_tensor_equal(got[name], expected[name])
    np.testing.assert_array_equal(got['a'], [[5, 7], [6, 8]])


def test_safetensors_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((2, 3)).astype(np.float32)
    bf16_values = np.array(
        [[1.0, -2.5], [0.15625, 2.0**100], [-np.inf, -0.0]], np.float32
    )  # all exact in bf16
    tensors = {
        'f32': ('F32', f32),
        'f16': ('F16', f32.astype(np.float16)),
        'f64': ('F64', f32.astype(np.float64)),
        'bf16': ('BF16', (bf16_values.view(np.uint32) >> 16).astype(np.uint16)),
        'i64': ('I64', np.array([-(2**40), 3], np.int64)),
        'i32': ('I32', np.array([-7], np.int32)),
        'i16': ('I16', np.array([[1, -2]], np.int16)),
        'i8': ('I8', np.array([-128, 127], np.int8)),
        'u8': ('U8', np.arange(5, dtype=np.uint8)),
        'bool': ('BOOL', np.array([True, False])),
        'scalar': ('F32', np.array(1.5, np.float32)),
        'empty': ('F32', np.zeros((0, 4), np.float32)),
    }
    _write_safetensors(tmp_path / 'w.safetensors', tensors, metadata={'format': 'pt'})
    obj = torch_pth.load(tmp_path / 'w.safetensors')
    assert obj.pop('__metadata__') == {'format': 'pt'}
    assert list(obj) == list(tensors)
    for name, (_dtype, array) in tensors.items():
        expected = bf16_values if name == 'bf16' else array
        assert obj[name].dtype == expected.dtype and obj[name].shape == expected.shape, name
        np.testing.assert_array_equal(obj[name], expected)
    assert set(torch_pth.state_dict_of(obj)) == set(tensors)


def test_safetensors_with_bad_offsets_is_refused(tmp_path):
    _write_safetensors(tmp_path / 'ok.safetensors', {'w': ('F32', np.ones(4, np.float32))})
    data = (tmp_path / 'ok.safetensors').read_bytes()
    (tmp_path / 'short.safetensors').write_bytes(data[:-4])
    _assert_error_starts_with_path(tmp_path / 'short.safetensors', 'data_offsets')
    (tmp_path / 'header.safetensors').write_bytes(struct.pack('<Q', 10**6) + data[8:])
    _assert_error_starts_with_path(tmp_path / 'header.safetensors', 'header')


def test_state_dict_of_descends_and_strips_module_prefix():
    w, b = np.ones(2, np.float32), np.zeros(1, np.float32)
    ckpt = {
        'epoch': 1,
        'model': {'state_dict': {'module.conv.weight': w, 'module.conv.bias': b, 'note': 'x'}},
    }
    state = torch_pth.state_dict_of(ckpt)
    assert state == {'conv.weight': w, 'conv.bias': b}
    assert torch_pth.state_dict_of({'a.w': w, 'n': 3}) == {'a.w': w}
    with pytest.raises(WeightsFileError, match=r'^ck\.pth: no tensors'):
        torch_pth.state_dict_of({'epoch': 1}, 'ck.pth')
    with pytest.raises(WeightsFileError, match=r'^ck\.pth: .*list'):
        torch_pth.state_dict_of([w], 'ck.pth')


# -------------------------------------------------------------------------------------- refusals
@pytest.mark.torch
@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_malicious_global_is_refused_and_never_run(tmp_path, zip_format):
    import torch

    target = tmp_path / 'pwned.txt'
    path = tmp_path / 'evil.pth'
    torch.save(
        {'state_dict': {'w': torch.ones(2)}, 'payload': _Evil(target)},
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    message = _assert_error_starts_with_path(path, f"'{os.system.__module__}.system'")
    assert 'disallowed global' in message
    assert not target.exists()


@pytest.mark.parametrize(
    'module, name', [('builtins', 'eval'), ('subprocess', 'Popen'), ('os', 'system')]
)
def test_hand_built_zip_with_unsafe_global_is_refused(tmp_path, module, name):
    target = tmp_path / 'pwned.txt'
    payload = (
        f"c{module}\n{name}\n(V__import__('pathlib').Path({str(target)!r}).touch()\ntR.".encode()
    )
    with zipfile.ZipFile(tmp_path / 'evil.pth', 'w') as archive:
        archive.writestr('evil/data.pkl', payload)
    _assert_error_starts_with_path(tmp_path / 'evil.pth', f"'{module}.{name}'")
    assert not target.exists()


def test_whole_module_legacy_pickle_is_refused(tmp_path):
    stream = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {'little_endian': True}):
        pickle.dump(header, stream, protocol=2)
    stream.write(b'\x80\x02(X\x06\x00\x00\x00moduleN}tQ.')  # persistent id ('module', None, {})
    (tmp_path / 'module.pth').write_bytes(stream.getvalue())
    _assert_error_starts_with_path(tmp_path / 'module.pth', 'state_dict()')


# ------------------------------------------------------------------------------ corrupt and absent
@pytest.mark.torch
@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_truncated_checkpoint(tmp_path, zip_format):
    import torch

    torch.save(
        {'state_dict': {'w': torch.randn(64, 64)}, 'epoch': 1},
        tmp_path / 'full.pth',
        _use_new_zipfile_serialization=zip_format,
    )
    data = (tmp_path / 'full.pth').read_bytes()
    for cut in (len(data) // 2, len(data) - 3, 40):
        (tmp_path / 'cut.pth').write_bytes(data[:cut])
        _assert_error_starts_with_path(tmp_path / 'cut.pth')


@pytest.mark.torch
def test_storage_record_too_short(tmp_path):
    import torch

    torch.save({'w': torch.randn(10)}, tmp_path / 'full.pth')
    _rewrite_zip(
        tmp_path / 'full.pth',
        tmp_path / 'short.pth',
        lambda name, data: data[:-8] if name.endswith('/data/0') else data,
    )
    _assert_error_starts_with_path(tmp_path / 'short.pth', 'holds 32 bytes but declares 10 float32')
    _rewrite_zip(
        tmp_path / 'full.pth',
        tmp_path / 'missing.pth',
        lambda name, data: None if name.endswith('/data/0') else data,
    )
    _assert_error_starts_with_path(tmp_path / 'missing.pth', 'lacks the storage record')


def test_unreadable_files(tmp_path):
    _assert_error_starts_with_path(tmp_path / 'nope.pth', 'No such file')
    (tmp_path / 'empty.pth').write_bytes(b'')
    _assert_error_starts_with_path(tmp_path / 'empty.pth', 'empty')
    (tmp_path / 'garbage.pth').write_bytes(np.random.default_rng(1).bytes(4096))
    _assert_error_starts_with_path(tmp_path / 'garbage.pth')
    (tmp_path / 'plain.pkl').write_bytes(pickle.dumps({'w': [1.0]}, protocol=2))
    _assert_error_starts_with_path(tmp_path / 'plain.pkl', 'magic number')
    with zipfile.ZipFile(tmp_path / 'nodata.pth', 'w') as archive:
        archive.writestr('ckpt/version', '3\n')
    _assert_error_starts_with_path(tmp_path / 'nodata.pth', 'data.pkl')


def test_pre_0_4_tar_format_is_detected(tmp_path):
    with tarfile.open(tmp_path / 'old.pth', 'w') as archive:
        for member in ('sys_info', 'pickle', 'tensors', 'storages'):
            info = tarfile.TarInfo(member)
            info.size = 4
            archive.addfile(info, io.BytesIO(b'\x80\x02N.'))
    _assert_error_starts_with_path(tmp_path / 'old.pth', 'tar checkpoint format is unsupported')


# ----------------------------------------------------------------------------------------- no torch
def test_runtime_never_imports_torch(tmp_path):
    """Import and use the reader where `import torch` fails, on a zip checkpoint built by hand."""
    pkl = (
        b'\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage'
        b'ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x02K\x02\x86'
        b'K\x01K\x02\x86\x89ccollections\nOrderedDict\n)RtRu.'
    )
    with zipfile.ZipFile(tmp_path / 'hand.pth', 'w') as archive:
        archive.writestr('hand/data.pkl', pkl)
        archive.writestr('hand/byteorder', 'little')
        archive.writestr('hand/data/0', np.arange(4, dtype='<f4').tobytes())
    code = (
        "import sys; sys.modules['torch'] = None\n"
        f'sys.path.insert(0, {ROOT!r})\n'
        'from converters import torch_pth\n'
        f"w = torch_pth.load({str(tmp_path / 'hand.pth')!r})['w']\n"
        'assert w.tolist() == [[0.0, 2.0], [1.0, 3.0]], w\n'
        # every runtime module, CLIs included, imports with torch unavailable
        'import importlib\n'
        "for m in ('converters.caffe_npy', 'converters.flownet_keys', 'converters.mmseg_keys',\n"
        "          'converters.dff_keys', 'icnet_tf.train', 'icnet_tf.evaluate',\n"
        "          'icnet_tf.inference', 'icnet_tf.export', 'icnet_tf.pspnet', 'dff_tf.model',\n"
        "          'dff_tf.train', 'dff_tf.evaluate', 'dff_tf.inference', 'dff_tf.export'):\n"
        '    importlib.import_module(m)\n'
        "assert 'torch' in sys.modules and sys.modules['torch'] is None\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr


# ----------------------------------------------------------------------------- the CLI
@pytest.mark.torch
def test_cli_converts_a_flownet_checkpoint_and_reports_errors_in_one_line(tmp_path):
    import subprocess
    import sys

    import torch

    from dff_tf.flownet import FlowNetS
    from tests.golden.seeded import seeded_torch_state_dict

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=root)
    net = FlowNetS(batch_norm=False).build()
    sd = seeded_torch_state_dict(net.torch_state_dict_shapes(), 11)
    path = tmp_path / 'flownets_EPE1.951.pth.tar'
    torch.save(
        {
            'epoch': 1,
            'arch': 'flownets',
            'div_flow': 20,
            'state_dict': {k: torch.from_numpy(v) for k, v in sd.items()},
        },
        str(path),
    )

    def cli(*args):
        return subprocess.run(
            [sys.executable, '-m', 'converters.torch_pth', *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    r = cli('--pth', str(path), '--target', 'flownets', '--out_dir', str(tmp_path / 'ckpt'))
    assert r.returncode == 0, r.stderr
    assert f'loaded {len(sd)} arrays from {path}' in r.stdout
    net.load(str(tmp_path / 'ckpt'))
    np.testing.assert_array_equal(
        net.params['conv3_1']['weights'].numpy(), sd['conv3_1.0.weight'].transpose(2, 3, 1, 0)
    )

    cut = tmp_path / 'cut.pth'
    cut.write_bytes(path.read_bytes()[:5000])
    for pth, target, expect in [
        (path, 'flownets_bn', 'plain FlowNetS'),
        (cut, 'flownets', 'truncated'),
    ]:
        r = cli('--pth', str(pth), '--target', target, '--out_dir', str(tmp_path / 'bad'))
        path = pth
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        assert lines[0].startswith(f'error: {path}: ') and expect in lines[0], lines[0]


# ------------------------------------------------------------------ hostile files, memory-capped
# Small files that declare far more than they hold, each read in a child process whose address
# space is capped at 2 GB (tests/memcap.py): the reader must refuse with one line, quickly, at a
# small peak RSS, without a MemoryError or a kill. All are built here by hand, without torch.
def _storage(key, numel, cls='FloatStorage'):
    return PersId(('storage', Global('torch', cls), key, 'cpu', numel))


def _tensor(storage, offset, size, stride):
    hooks = Call(Global('collections', 'OrderedDict'), ())
    rebuild = Global('torch._utils', '_rebuild_tensor_v2')
    return Call(rebuild, (storage, offset, tuple(size), tuple(stride), False, hooks))


def _write_zip(path, records):
    """A zip archive written field by field, so headers can lie: `records` holds (name, payload,
    method, crc, size in the central directory, size in the local header)."""
    out, central = bytearray(), bytearray()
    for name, payload, method, crc, size, local_size in records:
        offset, raw = len(out), name.encode()
        out += struct.pack(
            '<4s5H3I2H', b'PK\x03\x04', 20, 0, method, 0, 0x21, crc, len(payload), local_size,
            len(raw), 0,
        )  # fmt: skip
        out += raw + payload
        central += struct.pack(
            '<4s6H3I5H2I', b'PK\x01\x02', 20, 20, 0, method, 0, 0x21, crc, len(payload), size,
            len(raw), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += raw
    end = struct.pack('<4s4H2IH', b'PK\x05\x06', 0, 0, len(records), len(records), len(central),
                      len(out), 0)  # fmt: skip
    path.write_bytes(bytes(out + central + end))


def _stored(name, data):
    return (name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data), len(data))


def _checkpoint_zip(path, obj, storage_record):
    _write_zip(
        path, [_stored('ckpt/data.pkl', dumps(obj)), _stored('ckpt/byteorder', b'little'),
               storage_record],
    )  # fmt: skip


@pytest.fixture(scope='module')
def deflated_zeros():
    """A raw deflate stream of 256 MiB of zeros (about 260 kB) and its CRC-32."""
    compressor, block, parts, crc = zlib.compressobj(9, zlib.DEFLATED, -15), bytes(2**20), [], 0
    for _ in range(256):
        parts.append(compressor.compress(block))
        crc = zlib.crc32(block, crc)
    return b''.join(parts) + compressor.flush(), crc, 256 * 2**20


def test_hand_built_zip_writer_makes_a_readable_checkpoint(tmp_path):
    """The control for the hostile zips below: the same writer, honest headers, loads."""
    data = np.arange(4, dtype='<f4').tobytes()
    obj = {'w': _tensor(_storage('0', 4), 0, (2, 2), (1, 2))}
    _checkpoint_zip(tmp_path / 'ok.pth', obj, _stored('ckpt/data/0', data))
    np.testing.assert_array_equal(torch_pth.load(tmp_path / 'ok.pth')['w'], [[0, 2], [1, 3]])
    deflated = zlib.compress(data)[2:-4]  # raw deflate
    record = ('ckpt/data/0', deflated, zipfile.ZIP_DEFLATED, zlib.crc32(data), 16, 16)
    _checkpoint_zip(tmp_path / 'deflated.pth', obj, record)
    np.testing.assert_array_equal(torch_pth.load(tmp_path / 'deflated.pth')['w'], [[0, 2], [1, 3]])


HOSTILE_ZIPS = {
    # a storage declaring 10**10 elements backed by a 16-byte record
    'storage_numel': (
        lambda z: ({'w': _tensor(_storage('0', 10**10), 0, (10**10,), (1,))}, None),
        'holds 16 bytes but declares 10000000000 float32 elements (40.0 GB)',
    ),
    # a tensor whose size and strides reach far beyond its 4-element storage
    'size_stride': (
        lambda z: ({'w': _tensor(_storage('0', 4), 0, (10**5, 10**5), (10**5, 1))}, None),
        'needs 10000000000 elements of storage',
    ),
    # a stride-0 view: every element is the same stored float, the copy would be 40 GB
    'stride_zero': (
        lambda z: ({'w': _tensor(_storage('0', 4), 0, (10**5, 10**5), (0, 0))}, None),
        'a tensor of size [100000, 100000] float32 declares 40.0 GB but the file has',
    ),
    # a deflated record whose headers declare 4 GB from a few hundred bytes
    'deflate_lying_size': (
        lambda z: (
            {'w': _tensor(_storage('0', 2**30 - 4), 0, (2**30 - 4,), (1,))},
            (
                'ckpt/data/0',
                zlib.compress(bytes(2**20))[2:-4],
                zipfile.ZIP_DEFLATED,
                0,
                0xFFFFFFF0,
                0xFFFFFFF0,
            ),
        ),
        'declares 4.3 GB uncompressed from',
    ),
    # an honest zip bomb: 256 MiB of zeros in 260 kB, all of it needed by a tensor
    'deflate_bomb': (
        lambda z: (
            {'w': _tensor(_storage('0', z[2] // 4), 0, (z[2] // 4,), (1,))},
            ('ckpt/data/0', z[0], zipfile.ZIP_DEFLATED, z[1], z[2], z[2]),
        ),
        "deflated zip record 'ckpt/data/0' declares 268.2 MB but the file has",
    ),
    # the local header of a stored record declares 4 GB, the central directory 16 bytes
    'local_header_lies': (
        lambda z: (
            {'w': _tensor(_storage('0', 4), 0, (4,), (1,))},
            ('ckpt/data/0', bytes(16), zipfile.ZIP_STORED, zlib.crc32(bytes(16)), 16, 0xF0000000),
        ),
        'its local header declares 4.0 GB but the central directory says 16 bytes',
    ),
    # headers declare 4 kB but the deflate stream runs on to 256 MiB: reading stops at 4 kB
    'stream_longer_than_header': (
        lambda z: (
            {'w': _tensor(_storage('0', 1024), 0, (1024,), (1,))},
            ('ckpt/data/0', z[0], zipfile.ZIP_DEFLATED, z[1], 4096, 4096),
        ),
        'Bad CRC-32',
    ),
}


@pytest.mark.parametrize('case', list(HOSTILE_ZIPS))
def test_hostile_zip_is_refused_under_a_memory_cap(tmp_path, deflated_zeros, case):
    make, expect = HOSTILE_ZIPS[case]
    obj, record = make(deflated_zeros)
    path = tmp_path / f'{case}.pth'
    _checkpoint_zip(path, obj, record or _stored('ckpt/data/0', bytes(16)))
    assert_refused_in_one_line('torch_pth', path, expect)


def _legacy_bytes(obj, counts_and_data):
    header = b''.join(dumps(v) for v in (0x1950A86A20F9469CFC6C, 1001, {'little_endian': True}))
    return header + dumps(obj) + dumps(['0']) + counts_and_data


def test_hostile_legacy_files_are_refused_under_a_memory_cap(tmp_path):
    obj = {'w': _tensor(_storage('0', 4), 0, (4,), (1,))}
    good = tmp_path / 'good.pth'  # the control: the same layout with an honest count loads
    good.write_bytes(_legacy_bytes(obj, struct.pack('<q', 4) + np.arange(4, dtype='<f4').tobytes()))
    np.testing.assert_array_equal(torch_pth.load(good)['w'], [0, 1, 2, 3])
    huge = tmp_path / 'huge_count.pth'  # the storage's element count claims 40 GB
    huge.write_bytes(_legacy_bytes(obj, struct.pack('<q', 10**10) + bytes(16)))
    assert_refused_in_one_line(
        'torch_pth', huge, "storage '0' declares 10000000000 float32 elements (40.0 GB)"
    )
    memo = tmp_path / 'memo.pth'  # 11 bytes: a memo index that makes the unpickler fill 4 GB
    memo.write_bytes(b'\x80\x02Nr' + struct.pack('<I', 2**28) + b'.')
    assert_refused_in_one_line('torch_pth', memo, 'memo entry 268435456')


def test_hostile_safetensors_are_refused_under_a_memory_cap(tmp_path):
    header_len = tmp_path / 'header_len.safetensors'
    header_len.write_bytes(struct.pack('<Q', 2**40) + b'{"w": {}}')
    assert_refused_in_one_line(
        'torch_pth', header_len, 'the safetensors header declares 1.1 TB but the file has 17 bytes'
    )

    def write(path, entries, data):
        raw = json.dumps(entries).encode()
        path.write_bytes(struct.pack('<Q', len(raw)) + raw + data)

    shape = tmp_path / 'shape.safetensors'
    write(
        shape, {'w': {'dtype': 'F32', 'shape': [10**5, 10**5], 'data_offsets': [0, 16]}}, bytes(16)
    )
    assert_refused_in_one_line('torch_pth', shape, 'data_offsets [0, 16] do not fit shape')
    # 4000 tensors over the same 1 MB: 4 GB of arrays from a 1.3 MB file
    entry = {'dtype': 'F32', 'shape': [2**18], 'data_offsets': [0, 2**20]}
    overlap = tmp_path / 'overlap.safetensors'
    write(overlap, {f't{i}': entry for i in range(4000)}, bytes(2**20))
    assert_refused_in_one_line('torch_pth', overlap, 'overlap in the data')


def _dag(depth):
    """Raw ops pushing a tuple DAG: memo 0 = 1, memo i+1 = (memo i, memo i); 2**depth leaves
    (paths) from 7 bytes per level."""
    levels = b''.join(b'h%cH%c\x86q%c0' % (i, i, i + 1) for i in range(depth))
    return Raw(b'K\x01q\x000' + levels.replace(b'H', b'h') + b'h%c' % depth)


def test_shared_pickle_structure_is_read_once(tmp_path):
    """A DAG of memo references loads as shared objects instead of being copied (or walked by
    split_metadata) path by path."""
    obj = {'w': _tensor(_storage('0', 4), 0, (4,), (1,)), 'history': _dag(40)}
    path = tmp_path / 'dag.pth'
    _checkpoint_zip(path, obj, _stored('ckpt/data/0', bytes(16)))
    result, outcome, seconds, _ = read_capped('torch_pth', path)
    assert outcome == 'loaded', result  # a hang is killed at run_capped's timeout
    assert result.peak_rss_mb < MAX_RSS_MB, result
    node = torch_pth.load(path)['history']
    for _ in range(40):
        assert node[0] is node[1]
        node = node[0]
    assert node == 1


def test_deep_tuple_as_dict_key_is_refused(tmp_path):
    """Hashing that DAG (CPython does not cache tuple hashes) would take 2**40 steps."""
    obj = {'w': _tensor(_storage('0', 4), 0, (4,), (1,)), 'history': {_dag(40): 1}}
    path = tmp_path / 'hash.pth'
    _checkpoint_zip(path, obj, _stored('ckpt/data/0', bytes(16)))
    assert_refused_in_one_line('torch_pth', path, 'as a dict key or set element')


@pytest.mark.torch
def test_views_of_one_storage_may_need_more_than_twice_the_file(tmp_path):
    """A weight, its transpose and a strided slice of it: the copies take 2.5 x the 48 MB file,
    which the torch budget (4 x + 16 MB) allows; the same tensor twice is one array."""
    import torch

    base = torch.randn(3072, 4096)
    saved = {'w': base, 'w_t': base.t(), 'half': base[::2], 'tied': base}
    torch.save(saved, tmp_path / 'views.pth')
    got = torch_pth.load(tmp_path / 'views.pth')
    for name, tensor in saved.items():
        _assert_tensor_equal(got[name], tensor)
    assert got['tied'] is got['w']
