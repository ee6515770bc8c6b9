"""How much of DFF's accuracy loss is the flow network's? Learned flow vs no flow vs the exact
camera flow.

    python bench/dff_oracle.py --restore_from runs/dff_bench/dff [--videos runs/dff_bench/videos]
    python bench/dff_oracle.py --restore_from FEATURE_WEIGHTS --feature_net icnet_bn \
        --flownet_weights FLOWNET [--max_samples 21]

On the toy city's validation videos the camera pans by a known whole number of pixels per
frame, so the flow of all static content is known exactly (`dff_tf.data.flow_pairs`). For each
labelled frame t (t >= 9) and distance d this scores DFF twice with the same key features and
N_task: with FlowNetS' flow (what DFF does) and with the camera flow in its place
(`DFF.propagate(..., raw_flow=...)`: (camera_x[t] - camera_x[t-d]) frame pixels, converted to
FlowNetS' raw units). The camera flow is still wrong on moving objects and cannot fill what
entered the frame since the key, so the oracle row is the accuracy DFF keeps with a perfect
FlowNetS on the static world; the zero-flow row (key features used unwarped) is what the flow
network is there to beat. Key interval 5 = summed confusion matrices of per-frame and d = 1..4
(the DFF paper's protocol, as `dff_tf.evaluate`). A flow network pretrained by
`dff_tf.train_flownet` is rebuilt from the flownet_config.json next to --flownet_weights.
"""

import argparse
import json
import os
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.common import report  # noqa: E402

DISTANCES = (1, 2, 3, 4, 5, 9)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--restore_from', required=True, help='DFF checkpoint or feature weights')
    p.add_argument('--feature_net', default='icnet_bn', choices=['icnet_bn', 'pspnet101'])
    p.add_argument('--flownet_weights', default=None)
    p.add_argument('--videos', default=os.path.join(ROOT, 'runs', 'dff_bench', 'videos'))
    p.add_argument('--max_samples', type=int, default=0)
    p.add_argument('--no_append', action='store_true')
    args = p.parse_args()

    from dff_tf.data import json_sequence_name, read_video_list
    from dff_tf.evaluate import spread
    from dff_tf.flownet import DIV_FLOW
    from dff_tf.model import (
        CONFIG_NAME,
        DFF,
        dff_checkpoint_prefix,
        load_weights,
        saved_flownet_config,
    )
    from icnet_tf.metrics import confusion_matrix, scores
    from icnet_tf.predict import read_image

    vjson = os.path.join(args.videos, 'videos.json')
    videos = read_video_list(os.path.join(args.videos, 'list', 'video_val.txt'), args.videos, vjson)
    with open(vjson) as f:
        camera = {
            json_sequence_name(i, s): s['camera_x'] for i, s in enumerate(json.load(f)['sequences'])
        }
    prefix = dff_checkpoint_prefix(args.restore_from)
    if prefix:
        with open(os.path.join(os.path.dirname(prefix), CONFIG_NAME)) as f:
            config = json.load(f)
        config.pop('train_feature_net', None)
        dff = DFF(**config)
    else:
        flow = saved_flownet_config(args.flownet_weights) or {}
        dff = DFF(
            args.feature_net,
            19,
            flownet=flow.get('flownet', 'plain'),
            flow_scale=flow.get('flow_scale', 0.5),
        )
    load_weights(dff, args.restore_from, args.flownet_weights, log=lambda *a: None)
    samples = spread([s for s in videos.samples if s.frame >= max(DISTANCES)], args.max_samples)
    kinds = ('flow', 'zero', 'oracle')
    keys = ['per-frame'] + [(kind, d) for kind in kinds for d in DISTANCES]
    cms = {k: np.zeros((dff.num_classes,) * 2, np.int64) for k in keys}
    for n, s in enumerate(samples):
        cur = read_image(s.image)[None]
        label = np.asarray(Image.open(s.label))
        size = cur.shape[1:3]
        pred = dff.labels(dff.task(dff.key_features(cur)), size)[0].numpy()
        cms['per-frame'] += confusion_matrix(pred, label, dff.num_classes)
        fh, fw = dff.flow_input_size(*size)
        for d in DISTANCES:
            key = read_image(videos.exact_key(s, d))[None]
            features = dff.key_features(key)
            dx = camera[s.sequence][s.frame] - camera[s.sequence][s.frame - d]
            zero = tf.zeros([1, -(-fh // 4), -(-fw // 4), 2])
            oracle = zero + tf.constant([dx * fw / size[1] / DIV_FLOW, 0.0])
            for kind, raw in (('flow', None), ('zero', zero), ('oracle', oracle)):
                logits = dff.propagate(features, key, cur, raw_flow=raw)
                pred = dff.labels(logits, size)[0].numpy()
                cms[kind, d] += confusion_matrix(pred, label, dff.num_classes)
        print(f'\r{n + 1}/{len(samples)} frames', end='', file=sys.stderr, flush=True)
    print(file=sys.stderr)

    def miou(cm):
        return 100 * scores(cm)[1]

    base = miou(cms['per-frame'])
    lines = [
        '| flow | '
        + ' | '.join(f'd={d}' for d in DISTANCES)
        + ' | key interval 5 | l=5 minus per-frame |',
        '|---|' + '---|' * (len(DISTANCES) + 2),
    ]
    flownet = dff.get_config()['flownet']
    for kind, name in (
        ('flow', f'{flownet} FlowNetS at {dff.flow_scale:g} (learned)'),
        ('zero', 'zero flow (key features unwarped)'),
        ('oracle', 'camera flow (exact on static content)'),
    ):
        interval = miou(cms['per-frame'] + sum(cms[kind, d] for d in (1, 2, 3, 4)))
        lines.append(
            f'| {name} | '
            + ' | '.join(f'{miou(cms[kind, d]):.1f}' for d in DISTANCES)
            + f' | {interval:.1f} | {interval - base:+.1f} |'
        )
    lines += [
        '',
        f'Per-frame: {base:.1f} mIoU on {len(samples)} labelled validation frames; '
        f'DFF({dff.feature_net_name}) from {args.restore_from}'
        + (f', FlowNetS from {args.flownet_weights}' if args.flownet_weights else '')
        + '.',
    ]
    table = '\n'.join(lines)
    report(
        f'DFF with learned vs exact camera flow, {dff.feature_net_name} features '
        '(bench/dff_oracle.py)',
        table,
        'bench/dff_oracle.py',
        not args.no_append,
    )


if __name__ == '__main__':
    main()
