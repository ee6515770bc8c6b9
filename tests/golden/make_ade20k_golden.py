"""Extract the ADE20K reference tables from the SceneParsing files (run once, offline).

Sources (CSAILVision/sceneparsing; the original ICNet-tensorflow ships the same colour file as
`utils/color150.mat`, byte-identical):

* `visualizationCode/color150.mat`: MATLAB v5 file with one uint8 matrix `colors` [150, 3],
  the colour of class k (stored value k+1);
* `objectInfo150.txt`: tab-separated `Idx Ratio Train Val Name`, Name = comma-separated
  WordNet synonyms of class Idx (1..150).

Usage (from the repository root, with the two files at hand)::

    python tests/golden/make_ade20k_golden.py --color150 color150.mat \\
        --object_info objectInfo150.txt --out tests/data/ade20k_reference.json

Writes `{"colors": [[r, g, b] x 150], "synonyms": [[name, ...] x 150], "sources": {...}}`.
The MAT file is parsed here with the standard library (header, zlib-compressed miMATRIX,
small-data-element tags), so neither scipy nor this repository's code is involved.
"""

import argparse
import hashlib
import json
import struct
import zlib

MI_INT8, MI_UINT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 1, 2, 5, 6, 14, 15
DTYPES = {MI_UINT8: 'B', MI_INT8: 'b', MI_INT32: 'i', MI_UINT32: 'I'}


def _elements(buf, endian):
    """Yield (type, payload) of the data elements in `buf` (8-byte aligned)."""
    pos = 0
    while pos + 8 <= len(buf):
        word, nbytes = struct.unpack_from(endian + 'II', buf, pos)
        if word >> 16:  # small data element: 2-byte size, 2-byte type, 4 bytes of data
            yield word & 0xFFFF, buf[pos + 4 : pos + 4 + (word >> 16)]
            pos += 8
            continue
        yield word, buf[pos + 8 : pos + 8 + nbytes]
        pos += 8 + nbytes + (-nbytes % 8 if word != MI_COMPRESSED else 0)


def read_mat_v5(path):
    """{name: (dims, flat column-major values)} for the numeric matrices of a MAT v5 file."""
    data = open(path, 'rb').read()
    endian = '<' if data[126:128] == b'IM' else '>'
    out = {}
    for kind, payload in _elements(data[128:], endian):
        if kind == MI_COMPRESSED:
            kind, payload = next(_elements(zlib.decompress(payload), endian))
        if kind != MI_MATRIX:
            continue
        parts = list(_elements(payload, endian))
        dims = struct.unpack(endian + f'{len(parts[1][1]) // 4}i', parts[1][1])
        name = parts[2][1].decode('ascii')
        kind, raw = parts[3]
        code = DTYPES[kind]
        values = struct.unpack(endian + code * (len(raw) // struct.calcsize(code)), raw)
        out[name] = (dims, values)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--color150', required=True)
    parser.add_argument('--object_info', required=True)
    parser.add_argument('--out', default='tests/data/ade20k_reference.json')
    args = parser.parse_args()

    (rows, cols), flat = read_mat_v5(args.color150)['colors']
    assert (rows, cols) == (150, 3), (rows, cols)
    colors = [[flat[c * rows + r] for c in range(cols)] for r in range(rows)]  # column-major

    synonyms = []
    with open(args.object_info, encoding='utf-8') as f:
        header = f.readline().split('\t')
        assert [h.strip() for h in header] == ['Idx', 'Ratio', 'Train', 'Val', 'Name'], header
        for expected, line in enumerate(f, 1):
            fields = line.rstrip('\n').split('\t')
            assert int(fields[0]) == expected, fields
            synonyms.append([s.strip() for s in fields[4].split(',') if s.strip()])
    assert len(synonyms) == 150

    def sha1(path):
        return hashlib.sha1(open(path, 'rb').read()).hexdigest()

    reference = {
        'colors': colors,
        'synonyms': synonyms,
        'sources': {
            'color150.mat': sha1(args.color150),
            'objectInfo150.txt': sha1(args.object_info),
        },
    }
    with open(args.out, 'w', encoding='utf-8') as f:
        json.dump(reference, f, indent=None, separators=(',', ':'))
        f.write('\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
