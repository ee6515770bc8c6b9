"""Summarise the Caffe PSPNet-101 deploy prototxt as JSON (run once, offline; no Caffe needed).

The reference is hszhao/PSPNet at 798bdc9, `evaluation/prototxt/pspnet101_cityscapes_713.prototxt`
(the network the released Cityscapes weights were trained and evaluated as). The file is read as
plain protobuf text (a small tokenizer below, no caffe/protobuf import), checked against its git
blob id, and every layer is written with the parameters that fix its geometry. Nothing of the
prototxt itself is kept in this repository, only this summary.

Usage (from the repository root; the prototxt from a checkout or `git show`)::

    git -C /path/to/PSPNet show HEAD:evaluation/prototxt/pspnet101_cityscapes_713.prototxt \
        > /tmp/pspnet101_cityscapes_713.prototxt
    python tests/golden/make_pspnet_prototxt_golden.py \
        --prototxt /tmp/pspnet101_cityscapes_713.prototxt --out tests/data/pspnet101_prototxt.json

Output (`--out`), JSON with
* `source`: repository, commit, path and git blob id of the prototxt;
* `input`: the input blob name and its N, C, H, W (`input_dim`);
* `layers`: one entry per layer, in prototxt order: `name`, `type`, `bottom`, `top` and
  - Convolution: `kernel`, `stride`, `pad`, `dilation`, `num_output`, `bias` (Caffe defaults:
    stride 1, pad 0, dilation 1, bias_term true);
  - BN (PSPNet's Caffe fork): `frozen`, `eps` (default 1e-5), `momentum`;
  - Pooling: `pool` (MAX/AVE), `kernel`, `stride`, `pad`;
  - Interp: `height`, `width` or `zoom_factor` / `shrink_factor` (only those given);
  - Dropout: `ratio`; Eltwise: `operation` (default SUM); Concat: `axis` (default 1);
  - every layer: `top_shape` [C, H, W] of its top blob for the prototxt's input size, computed
    here with Caffe's own shape rules (see `caffe_shapes`), independently of the port;
* `valid_input_sides`: the input sides (per axis, 300..1200) at which the prototxt network is
  shape-consistent at all: its Interp layers have fixed outputs 90x90 that must match conv5_3
  for the Concat (Caffe CHECKs the shapes), so the network runs only where conv5_3 is 90;
* `pool_cells`: for those pyramid pools, `{side: [cells, ...]}` of Caffe's ceil-mode pooling with
  the prototxt's fixed kernels for a few conv5_3 sides (what the Pooling layers alone would give
  at other sizes, before the Concat refuses them).

Caffe shape rules used (caffe/src/caffe/layers/*.cpp of the PSPNet fork):
* Convolution: `out = (in + 2*pad - (dilation*(kernel-1)+1)) // stride + 1`;
* Pooling: `out = ceil((in + 2*pad - kernel) / stride) + 1`, then, if pad > 0, minus 1 when the
  last window would start at or beyond `in + pad`;
* Interp: `height`/`width` as given; zoom `in + (in-1)*(zoom-1)`; shrink `(in-1)//shrink + 1`;
* BN, ReLU, Dropout: in place, shape kept; Eltwise: all bottoms equal; Concat (axis 1): other
  axes equal, channels summed.
"""

import argparse
import hashlib
import json
import math
import os
import re
import sys

REPO = 'hszhao/PSPNet'
COMMIT = '798bdc907c8630e8c3997ebfdd0d7cae0c5ab03b'
PATH = 'evaluation/prototxt/pspnet101_cityscapes_713.prototxt'
BLOB = 'f43b4f2f08de3a40c3d51bd6b272862eab1a2557'
SIDES = range(300, 1201)
POOL_SIDES = (13, 64, 90, 91, 128, 129)


# ------------------------------------------------------------------------ protobuf text
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"#]+|#[^\n]*')


def tokenize(text):
    return [t for t in _TOKEN.findall(text) if not t.startswith('#')]


def parse(tokens, pos=0, depth=0):
    """Protobuf text -> `{field: [values]}` (every field a list: fields may repeat)."""
    out = {}
    while pos < len(tokens):
        key = tokens[pos]
        if key == '}':
            if depth == 0:
                raise ValueError('unbalanced "}"')
            return out, pos + 1
        pos += 1
        if tokens[pos] == ':':
            pos += 1
        if tokens[pos] == '{':
            value, pos = parse(tokens, pos + 1, depth + 1)
        else:
            value, pos = scalar(tokens[pos]), pos + 1
        out.setdefault(key, []).append(value)
    if depth:
        raise ValueError('missing "}"')
    return out, pos


def scalar(token):
    if token.startswith('"'):
        return token[1:-1]
    if token in ('true', 'false'):
        return token == 'true'
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        return token  # an enum name (MAX, AVE, SUM, ...)


def one(msg, field, default=None):
    values = msg.get(field, [])
    if len(values) > 1:
        raise ValueError(f'{field} repeats ({values}): expected one value')
    return values[0] if values else default


# --------------------------------------------------------------------------- summary
def summarise(net):
    layers = []
    for msg in net['layer']:
        entry = {
            'name': one(msg, 'name'),
            'type': one(msg, 'type'),
            'bottom': msg.get('bottom', []),
            'top': msg.get('top', []),
        }
        kind = entry['type']
        if kind == 'Convolution':
            p = one(msg, 'convolution_param')
            for f in ('kernel_h', 'kernel_w', 'pad_h', 'pad_w', 'stride_h', 'stride_w', 'group'):
                if f in p:
                    raise ValueError(f'{entry["name"]}: {f} is not handled')
            entry.update(
                kernel=one(p, 'kernel_size'),
                stride=one(p, 'stride', 1),
                pad=one(p, 'pad', 0),
                dilation=one(p, 'dilation', 1),
                num_output=one(p, 'num_output'),
                bias=one(p, 'bias_term', True),
            )
        elif kind == 'BN':
            p = one(msg, 'bn_param', {})
            entry.update(
                frozen=one(p, 'frozen', False),
                eps=one(p, 'eps', 1e-5),
                momentum=one(p, 'momentum', 0.9),
            )
        elif kind == 'Pooling':
            p = one(msg, 'pooling_param')
            for f in ('kernel_h', 'kernel_w', 'pad_h', 'pad_w', 'stride_h', 'global_pooling'):
                if f in p:
                    raise ValueError(f'{entry["name"]}: {f} is not handled')
            entry.update(
                pool=one(p, 'pool', 'MAX'),
                kernel=one(p, 'kernel_size'),
                stride=one(p, 'stride', 1),
                pad=one(p, 'pad', 0),
            )
        elif kind == 'Interp':
            p = one(msg, 'interp_param')
            for f in ('pad_beg', 'pad_end'):
                if one(p, f, 0):
                    raise ValueError(f'{entry["name"]}: {f} is not handled')
            entry.update(
                {
                    f: one(p, f)
                    for f in ('height', 'width', 'zoom_factor', 'shrink_factor')
                    if f in p
                }
            )
        elif kind == 'Dropout':
            entry['ratio'] = one(one(msg, 'dropout_param', {}), 'dropout_ratio', 0.5)
        elif kind == 'Eltwise':
            entry['operation'] = one(one(msg, 'eltwise_param', {}), 'operation', 'SUM')
        elif kind == 'Concat':
            entry['axis'] = one(one(msg, 'concat_param', {}), 'axis', 1)
        elif kind != 'ReLU':
            raise ValueError(f'{entry["name"]}: layer type {kind} is not handled')
        layers.append(entry)
    return layers


# ----------------------------------------------------------------------- Caffe shapes
def pool_out(size, kernel, stride, pad):
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def caffe_shapes(layers, data, input_chw):
    """`{layer: [C, H, W]}` of each layer's top; raises ValueError where Caffe would CHECK-fail."""
    blobs = {data: list(input_chw)}
    tops = {}
    for e in layers:
        ins = [blobs[b] for b in e['bottom']]
        kind = e['type']
        if kind == 'Convolution':
            c, h, w = ins[0]
            k = e['dilation'] * (e['kernel'] - 1) + 1
            h, w = ((s + 2 * e['pad'] - k) // e['stride'] + 1 for s in (h, w))
            shape = [e['num_output'], h, w]
        elif kind == 'Pooling':
            c, h, w = ins[0]
            shape = [c, *(pool_out(s, e['kernel'], e['stride'], e['pad']) for s in (h, w))]
        elif kind == 'Interp':
            c, h, w = ins[0]
            if 'height' in e:
                h, w = e['height'], e['width']
            else:
                if 'shrink_factor' in e:
                    h, w = ((s - 1) // e['shrink_factor'] + 1 for s in (h, w))
                if 'zoom_factor' in e:
                    h, w = (s + (s - 1) * (e['zoom_factor'] - 1) for s in (h, w))
            shape = [c, h, w]
        elif kind == 'Eltwise':
            if any(s != ins[0] for s in ins):
                raise ValueError(f'{e["name"]}: bottom shapes differ {ins}')
            shape = list(ins[0])
        elif kind == 'Concat':
            if e['axis'] != 1 or any(s[1:] != ins[0][1:] for s in ins):
                raise ValueError(f'{e["name"]}: bottom shapes differ {ins}')
            shape = [sum(s[0] for s in ins), *ins[0][1:]]
        else:  # BN, ReLU, Dropout: in place
            shape = list(ins[0])
        if min(shape) < 1:
            raise ValueError(f'{e["name"]}: empty output {shape}')
        tops[e['name']] = shape
        for t in e['top']:
            blobs[t] = shape
    return tops


def git_blob_id(data):
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--prototxt', required=True, help=f'{REPO} {PATH} at {COMMIT[:7]}')
    parser.add_argument('--out', required=True, help='JSON file to write')
    args = parser.parse_args(argv)
    with open(args.prototxt, 'rb') as f:
        raw = f.read()
    if git_blob_id(raw) != BLOB:
        sys.exit(f'{args.prototxt}: not {PATH} of {REPO} at {COMMIT[:7]} (git blob differs)')
    net, _ = parse(tokenize(raw.decode('utf-8')))
    data = one(net, 'input')
    dims = net['input_dim']
    layers = summarise(net)
    tops = caffe_shapes(layers, data, dims[1:])
    for e in layers:
        e['top_shape'] = tops[e['name']]
    valid = []
    for side in SIDES:
        try:
            caffe_shapes(layers, data, (dims[1], side, side))
        except ValueError:
            continue
        valid.append(side)
    ppm = [e for e in layers if e['type'] == 'Pooling' and e['pool'] == 'AVE']
    cells = {
        str(side): [pool_out(side, e['kernel'], e['stride'], e['pad']) for e in ppm]
        for side in POOL_SIDES
    }
    summary = {
        'source': {'repo': REPO, 'commit': COMMIT, 'path': PATH, 'blob': BLOB},
        'input': {'name': data, 'dims': dims},
        'valid_input_sides': valid,
        'pool_cells': {'layers': [e['name'] for e in ppm], 'conv5_3_side': cells},
        'layers': layers,
    }
    # One layer per line: small diffs when the generator changes.
    body = ',\n'.join('    ' + json.dumps(e, sort_keys=True) for e in layers)
    head = json.dumps({k: v for k, v in summary.items() if k != 'layers'}, sort_keys=True)
    text = head[:-1] + ', "layers": [\n' + body + '\n]}\n'
    if json.loads(text) != json.loads(json.dumps(summary)):
        raise AssertionError('JSON layout changed the content')
    tmp = args.out + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, args.out)
    print(f'{args.out}: {len(layers)} layers, input sides {valid[0]}..{valid[-1]} run in Caffe')


if __name__ == '__main__':
    main()
