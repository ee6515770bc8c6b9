"""converters.budget: the read budget and the pickle pre-scan (no false refusals, real refusals)."""

import collections
import pickle
import struct

import numpy as np
import pytest

from converters.budget import (
    MARGIN,
    MAX_HASHED_NODES,
    ReadBudget,
    ReadLimitError,
    flat_pairs,
    human,
    scan_pickle,
    short_repr,
)


def _objects():
    cyclic = [1]
    cyclic.append(cyclic)
    shared = [1, 2]
    return [
        None, True, 1, -5, 300, 70000, 2**70, -(2**70), 1.5, '', 'abc', 'é€😀', '\x80' * 300,
        b'', b'\x00\xff' * 200, bytearray(b'ab'), (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4),
        [], [1, [2, [3]]], list(range(2000)), {}, {'a': 1, (1, 2): [1, 2]}, {1, 2, 3},
        frozenset({4, (5, 6)}), collections.OrderedDict(a=1), np.arange(10, dtype=np.float32),
        np.array({'x': np.ones(3)}, dtype=object), cyclic, [shared, shared, (shared,)],
        {str(i): (i, float(i)) for i in range(500)},
    ]  # fmt: skip


@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
def test_scan_accepts_every_real_pickle_and_finds_its_end(protocol):
    objects = _objects()
    for obj in objects + [objects]:
        data = pickle.dumps(obj, protocol=protocol)
        assert scan_pickle(data, 0, len(data), ReadBudget(len(data))) == len(data), obj
        padded = b'xx' + data + b'trailing bytes'  # a pickle inside a bigger file
        assert (
            scan_pickle(bytearray(padded), 2, len(padded), ReadBudget(len(padded))) == len(data) + 2
        )


def test_scan_charges_about_what_unpickling_builds():
    arrays = {f'l{i}': np.zeros(1000, np.float32) for i in range(100)}
    data = pickle.dumps(np.array(arrays, dtype=object), protocol=3)
    budget = ReadBudget(len(data))
    scan_pickle(data, 0, len(data), budget)
    payload = 100 * 4000
    assert payload < budget.used < payload + 100_000  # the array bytes + per-op overheads
    floats = pickle.dumps([float(i) for i in range(10000)], protocol=2)
    budget = ReadBudget(len(floats))
    scan_pickle(floats, 0, len(floats), budget)
    assert 10000 * 32 <= budget.used <= 10000 * 48  # a float object + a list slot each


@pytest.mark.parametrize(
    'data, message',
    [
        (b'\x80\x04\x8e' + struct.pack('<Q', 2**40) + b'xx.', 'declares a 1.1 TB BINBYTES8 value'),
        (b'\x80\x03B' + struct.pack('<I', 1000) + b'x.', 'declares a 1.0 kB BINBYTES value'),
        (b'\x80\x04\x95' + struct.pack('<Q', 2**33) + b'N.', 'declares a 8.6 GB frame'),
        (b'\x80\x02Nr' + struct.pack('<I', 2**28) + b'.', 'memo entry 268435456'),
        (b'\x80\x02Nq\x05.', 'memo entry 5 at byte 3 after only 0 entries'),
        (b'Np99999999999\n.', 'memo entry 99999999999'),
    ],
)
def test_scan_refuses_lengths_and_memo_indices_the_data_cannot_back(data, message):
    with pytest.raises(ReadLimitError, match=message):
        scan_pickle(data, 0, len(data), ReadBudget(len(data)))


def _tuple_dag(depth, as_key):
    """memo 0 = 1, memo i + 1 = (memo i, memo i): 2**depth paths in 7 bytes per level."""
    ops = b'K\x01q\x000' + b''.join(b'h%ch%c\x86q%c0' % (i, i, i + 1) for i in range(depth))
    top = b'h%c' % depth
    return b'\x80\x02' + ops + (b'}' + top + b'K\x01s' if as_key else top) + b'.'


def test_scan_refuses_deep_shared_tuples_only_where_they_are_hashed():
    value = _tuple_dag(40, as_key=False)
    assert scan_pickle(value, 0, len(value), ReadBudget(len(value))) == len(value)
    loaded = pickle.loads(value)  # fast: a DAG that is never hashed is cheap
    assert loaded[0] is loaded[1] and loaded[0][0] is loaded[0][1]
    key = _tuple_dag(40, as_key=True)
    with pytest.raises(ReadLimitError, match=f'more than {MAX_HASHED_NODES} nodes'):
        scan_pickle(key, 0, len(key), ReadBudget(len(key)))
    small = _tuple_dag(10, as_key=True)  # 2**11 nodes: hashing it is cheap, so it is allowed
    assert scan_pickle(small, 0, len(small), ReadBudget(len(small))) == len(small)
    as_set = pickle.dumps({(1, 2)}, protocol=4)
    assert scan_pickle(as_set, 0, len(as_set), ReadBudget(len(as_set))) == len(as_set)


@pytest.mark.parametrize(
    'data', [b'', b'\x80\x02N', b'\x80\x02\xff.', b'\x80\x02a.', b'\x80\x02t.', b'\x80\x02X\x05']
)
def test_scan_rejects_malformed_pickles(data):
    with pytest.raises(ValueError):
        scan_pickle(data, 0, len(data), ReadBudget(len(data)))


def test_budget_refuses_what_the_file_cannot_back():
    budget = ReadBudget(312)
    assert budget.limit == 624 + MARGIN
    budget.charge(MARGIN, 'a first array')
    with pytest.raises(ReadLimitError, match='^a 4 GB tensor declares 4.0 GB but the file has 312'):
        budget.charge(4 * 10**9, 'a 4 GB tensor')
    with pytest.raises(ReadLimitError, match='after 16.0 MB already built.*2 x its size'):
        budget.charge(1000, 'another array')
    budget.charge(624, 'what still fits')
    assert budget.used == budget.limit


def test_human_and_short_repr_are_bounded():
    assert [human(n) for n in (0, 312, 999, 1000, 999_949, 999_950, 4 * 10**9)] == [
        '0 bytes', '312 bytes', '999 bytes', '1.0 kB', '999.9 kB', '1.0 MB', '4.0 GB',
    ]  # fmt: skip
    assert human(10**30) == 'about 2^99 bytes'
    node = 1
    for _ in range(60):  # 2**60 paths: a plain repr() would never finish
        node = (node, node)
    assert len(short_repr(node)) <= 80 and short_repr('x' * 10**6).startswith("'xxx")
    assert flat_pairs([('a', 1), (2, [3])]) and flat_pairs({'a': 1}) and flat_pairs([])
    assert not flat_pairs([(node, 1)]) and not flat_pairs([('a', 1, 2)]) and not flat_pairs('ab')
