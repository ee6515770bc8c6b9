"""Golden files for TF1 `tf.train.Saver` checkpoints of the original ICNet-tensorflow (run offline).

Runs the original code (hellochick/ICNet-tensorflow at 90a85c4, loaded and checked exactly as in
``make_icnet_golden.py``, whose machinery this script imports) under ``tf.compat.v1`` and writes
a checkpoint the way its ``train.py`` does, then records what the checkpoint holds and what the
original graph computes with those weights. The checkpoints themselves are not kept (filter_scale
2 with Momentum slots is about 215 MB); ``tests/test_tf1_checkpoint.py`` rebuilds an equivalent
one from the recorded manifest.

Usage (from the repository root, with a checkout or export of the reference at /path/to/ref)::

    python tests/golden/make_tf1_checkpoint_golden.py --reference_dir /path/to/ref \
        --out_dir tests/data [--keep_checkpoints /tmp/tf1_ckpts]

Per case (``CASES``):

1. The original ``model.py`` graph (mode 'train', the image reader replaced by placeholders,
   ``cfg.is_training=False`` so the recorded outputs use the moving statistics; the set of
   variables does not depend on it). Weights: ``seeded_weights(param shapes, seed=0)`` loaded
   through the original's own ``Network.load_npy`` (``make_icnet_golden.load_seeded_weights``).
2. A ``tf.train.MomentumOptimizer(learning_rate, 0.9)`` train op over the variables ``train.py``
   trains (``'beta'``/``'gamma'`` excluded unless ``--train-beta-gamma``; the case says which),
   so the ``<variable>/Momentum`` slots exist; the loss is any scalar that reaches every trained
   variable (the sum of the heads' means). The slots are set to
   ``seeded_uniform(shape, SLOT_SEED, -0.01, 0.01, tag=<slot name>)`` so they are not all zero.
3. Saving exactly as ``train.py``: ``tf.train.Saver(var_list=tf.global_variables(),
   max_to_keep=5)`` and the original ``Network.save(saver, './snapshots/', step)`` run from a
   temporary working directory (``SNAPSHOT_DIR = './snapshots/'``), which writes
   ``model.ckpt-<step>.{index,data-00000-of-00001,meta}`` and the ``checkpoint`` state file.
4. The checkpoint is restored into a fresh graph with the original ``Network.restore`` (what its
   evaluate/inference scripts do) and the outputs are recomputed; they must equal the outputs of
   step 1 bit for bit.

Outputs (``--out_dir``):
* ``tf1_checkpoint_<case>.json``: ``meta``, ``state_file`` (the state file's text, verbatim),
  ``files`` (names written) and ``manifest``: every saved key -> ``shape``, ``dtype`` and
  ``crc32`` (``zlib.crc32`` of the tensor's C-order bytes as TF reads it back), slots included.
* ``tf1_checkpoint_<case>.npz``: the original graph's outputs on ``seeded_images(input_shape,
  seed=1)`` (``conv6_cls``; ``sub4_out``, ``sub24_out`` for ICNet_BN), float32.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import zlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.golden import make_icnet_golden as mig  # noqa: E402
from tests.golden.seeded import seeded_images, seeded_uniform  # noqa: E402

tf = mig.tf  # tensorflow.compat.v1

SLOT_SEED = 2
SLOT_RANGE = (-0.01, 0.01)
MOMENTUM = 0.9  # utils/config.py Config.MOMENTUM
STEP = 27150  # the step of the published ADE20K checkpoint's name (model.ckpt-27150)
SNAPSHOT_DIR = './snapshots/'  # utils/config.py Config.SNAPSHOT_DIR

CASES = {
    'icnet_bn_fs2_nc150_129x193': dict(
        doc='ICNet_BN, filter_scale 2, 150 classes: the configuration of the published ADE20K '
        'model; trained with --train-beta-gamma, so every trainable variable has a slot.',
        model='ICNet_BN',
        dataset='ade20k',
        filter_scale=2,
        num_classes=150,
        train_beta_gamma=True,
        input_shape=(1, 129, 193, 3),
        outputs=('conv6_cls', 'sub4_out', 'sub24_out'),
    ),
    'icnet_fs1_nc5_193x257': dict(
        doc='ICNet (BN merged: biased convs, no BN), filter_scale 1, 5 classes, adaptive '
        'pyramid pooling (mode train, dataset others).',
        model='ICNet',
        dataset='others',
        filter_scale=1,
        num_classes=5,
        train_beta_gamma=False,
        input_shape=(1, 193, 257, 3),
        outputs=('conv6_cls',),
    ),
}


def build(model_module, spec):
    return mig.build_graph(
        model_module,
        spec['model'],
        'train',
        spec['dataset'],
        spec['num_classes'],
        spec['filter_scale'],
        False,
        spec['input_shape'],
    )


def add_train_op(graph, net, spec):
    """train.py's optimizer over train.py's variable selection; returns the slot variables."""
    with graph.as_default():
        before = set(tf.global_variables())
        loss = tf.add_n([tf.reduce_mean(net.layers[name]) for name in spec['outputs']])
        trained = [
            v
            for v in tf.trainable_variables()
            if ('beta' not in v.name and 'gamma' not in v.name) or spec['train_beta_gamma']
        ]
        learning_rate = tf.placeholder(tf.float32, shape=(), name='learning_rate')
        opt = tf.train.MomentumOptimizer(learning_rate, MOMENTUM)
        grads = tf.gradients(loss, trained)
        if any(g is None for g in grads):
            raise AssertionError('the loss does not reach every trained variable')
        opt.apply_gradients(zip(grads, trained))
        slots = [v for v in tf.global_variables() if v not in before]
    if len(slots) != len(trained):
        raise AssertionError(f'{len(slots)} slots for {len(trained)} trained variables')
    return slots


def seed_slots(graph, sess, slots):
    with graph.as_default():
        sess.run(tf.variables_initializer(slots))
        for var in slots:
            value = seeded_uniform(var.shape.as_list(), SLOT_SEED, *SLOT_RANGE, tag=var.op.name)
            var.load(value, sess)


def manifest_of(prefix):
    """Every saved key -> shape, dtype, crc32 of its bytes, read back with TF itself."""
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    out = {}
    for key, shape in sorted(reader.get_variable_to_shape_map().items()):
        value = np.ascontiguousarray(reader.get_tensor(key))
        out[key] = {
            'shape': [int(d) for d in shape],
            'dtype': dtypes[key].name,
            'crc32': zlib.crc32(value.tobytes()),
        }
    return out


def run_case(model_module, name, spec, keep_dir=None):
    t0 = time.time()
    images = seeded_images(spec['input_shape'], seed=mig.INPUT_SEED)
    graph, net, reader = build(model_module, spec)
    shapes = mig.param_shapes(graph)  # the network's variables (before the optimizer's slots)
    with tf.Session(graph=graph) as sess:
        mig.load_seeded_weights(graph, net, sess, shapes)
        slots = add_train_op(graph, net, spec)
        seed_slots(graph, sess, slots)
        outputs = sess.run({k: net.layers[k] for k in spec['outputs']}, {reader.next_image: images})
        work = tempfile.mkdtemp() if keep_dir is None else os.path.join(keep_dir, name)
        os.makedirs(work, exist_ok=True)
        cwd = os.getcwd()
        os.chdir(work)
        try:
            with graph.as_default():
                saver = tf.train.Saver(var_list=tf.global_variables(), max_to_keep=5)
            net.sess = sess
            net.save(saver, SNAPSHOT_DIR, STEP)  # the original Network.save
        finally:
            os.chdir(cwd)
    snap = os.path.join(work, SNAPSHOT_DIR)
    prefix = os.path.join(snap, f'model.ckpt-{STEP}')
    files = sorted(os.listdir(snap))
    with open(os.path.join(snap, 'checkpoint')) as f:
        state_file = f.read()
    manifest = manifest_of(prefix)
    n_slots = sum(k.endswith('/Momentum') for k in manifest)
    if n_slots != len(slots) or len(manifest) != len(shapes) + len(slots):
        raise AssertionError(f'manifest has {len(manifest)} keys, {n_slots} slots')
    data_bytes = os.path.getsize(f'{prefix}.data-00000-of-00001')

    # What the original's evaluate/inference scripts do with it: restore into a fresh graph.
    graph2, net2, reader2 = build(model_module, spec)
    with graph2.as_default():
        net2.create_session()
        net2.restore(prefix, tf.global_variables())
        restored = net2.sess.run(
            {k: net2.layers[k] for k in spec['outputs']}, {reader2.next_image: images}
        )
        net2.sess.close()
    for k in spec['outputs']:
        if not np.array_equal(restored[k], outputs[k]):
            raise AssertionError(f'{k} differs after Network.restore of the saved checkpoint')
    if keep_dir is None:
        for root, dirs, names in os.walk(work, topdown=False):
            for n in names:
                os.remove(os.path.join(root, n))
            for d in dirs:
                os.rmdir(os.path.join(root, d))
        os.rmdir(work)

    meta = {
        'case': name,
        'doc': spec['doc'],
        'model_class': spec['model'],
        'dataset': spec['dataset'],
        'filter_scale': spec['filter_scale'],
        'num_classes': spec['num_classes'],
        'train_beta_gamma': spec['train_beta_gamma'],
        'mode': 'train',
        'is_training': False,
        'input_shape': list(spec['input_shape']),
        'input': "seeded_images(input_shape, seed=1) fed to 'data'",
        'weights': 'seeded_weights(network variable shapes, seed=0) (caffe names), loaded with '
        'the reference Network.load_npy',
        'slot_values': {
            'function': 'seeded_uniform(shape, seed, low, high, tag=<slot variable name>)',
            'seed': SLOT_SEED,
            'low': SLOT_RANGE[0],
            'high': SLOT_RANGE[1],
        },
        'optimizer': f'tf.train.MomentumOptimizer(learning_rate, {MOMENTUM})',
        'saver': 'tf.train.Saver(var_list=tf.global_variables(), max_to_keep=5); '
        f"Network.save(saver, '{SNAPSHOT_DIR}', {STEP}) from a temporary working directory",
        'step': STEP,
        'network_variables': len(shapes),
        'slot_variables': len(slots),
        'data_file_bytes': data_bytes,
        'restored_outputs_equal': True,
        'avg_pools': mig.pool_attrs(graph),
        'outputs': {k: list(v.shape) for k, v in outputs.items()},
        'reference': f'{mig.REFERENCE_REPO}@{mig.REFERENCE_COMMIT}',
        'tf_version': mig._tf_root.__version__,
        'numpy_version': np.__version__,
        'run_as': 'tf.compat.v1 with disable_v2_behavior()',
        'seconds': round(time.time() - t0, 1),
    }
    record = {'meta': meta, 'state_file': state_file, 'files': files, 'manifest': manifest}
    return record, {k: v.astype(np.float32) for k, v in outputs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--reference_dir', required=True)
    parser.add_argument('--out_dir', required=True)
    parser.add_argument('--cases', nargs='*', default=list(CASES), choices=list(CASES))
    parser.add_argument(
        '--keep_checkpoints',
        default=None,
        help='keep the real checkpoints in <dir>/<case>/snapshots/ (large) for manual checks',
    )
    args = parser.parse_args(argv)

    tf.disable_v2_behavior()
    _, model_module = mig.load_reference(args.reference_dir)
    os.makedirs(args.out_dir, exist_ok=True)
    out_dir = os.path.abspath(args.out_dir)
    keep = os.path.abspath(args.keep_checkpoints) if args.keep_checkpoints else None
    for name in args.cases:
        record, outputs = run_case(model_module, name, CASES[name], keep)
        path = os.path.join(out_dir, f'tf1_checkpoint_{name}.json')
        with open(path, 'w') as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.write('\n')
        npz = os.path.join(out_dir, f'tf1_checkpoint_{name}.npz')
        mig.save_npz(npz, outputs)
        sizes = f'{os.path.getsize(path) / 1e3:.0f} kB + {os.path.getsize(npz) / 1e6:.2f} MB'
        print(f'{name}: {len(record["manifest"])} keys, {sizes}, {record["meta"]["seconds"]} s')


if __name__ == '__main__':
    main()
