"""Generate golden ICNet tensors from the original TF1 implementation (run once, offline).

The reference is hellochick/ICNet-tensorflow at HEAD 90a85c4 (``model.py``, ``network.py`` and
the ``utils`` modules ``model.py`` imports), executed under ``tf.compat.v1`` with
``disable_v2_behavior()`` on TensorFlow 2.15.1. None of its code lives in this repository: the
files are read from ``--reference_dir`` at run time, checked against the git blob ids of that
commit, and executed into fresh module objects.

Usage (from the repository root, with a checkout or export of the reference at /path/to/ref)::

    python tests/golden/make_icnet_golden.py --reference_dir /path/to/ref --out_dir tests/data

How the reference is run
------------------------
* Module loading: each reference file is exec'd into a new module registered in ``sys.modules``
  under its own import name (``utils``, ``utils.image_reader``, ``utils.visualize``, ``network``,
  ``model``) while the graph code is loaded; the one line ``import tensorflow as tf`` is rebound
  to ``import tensorflow.compat.v1 as tf``. Nothing else in the source is changed. ``cv2`` and
  ``scipy.io`` (used only by the reference's file-reading and colour-decoding helpers, which the
  golden graphs never call) are replaced by inert stub modules during that import, so the script
  needs neither package. ``sys.modules`` is restored afterwards.
* Weights: ``tests/golden/seeded.py`` ``seeded_weights(shapes, seed=0)`` for every global
  variable of the graph (caffe-tensorflow names: ``weights``, ``biases``; BN ``scale``,
  ``offset``, ``mean``, ``variance``). They are written as a caffe-tensorflow ``.npy`` (a pickled
  ``{layer: {param: array}}``) and loaded through the reference's own ``Network.load_npy``, which
  maps the BN names to ``gamma``/``beta``/``moving_mean``/``moving_variance``. That loader calls
  ``np.load(path, encoding='latin1').item()`` without ``allow_pickle``, which numpy >= 1.16.3
  refuses for object arrays, so ``numpy.load`` is wrapped to pass ``allow_pickle=True`` for the
  duration of that call only. Every variable is then checked to equal its seeded array exactly.
* Inputs: ``seeded_images((N, H, W, 3), seed=1)`` fed straight into the ``data`` input (the
  image reader is replaced by two placeholders, ``next_image`` and ``next_label``).
* Pyramid pooling: the adaptive branches call ``avg_pool`` with Python-3 float kernel sizes
  (``h/2`` ...). TF 2.15 accepts them and truncates with ``int()`` exactly like TF 1.x did
  (``_execute.make_int``), so no shim is needed; the kernel sizes and strides actually built are
  read back from the graph and recorded in each file's ``meta``.

Outputs (``--out_dir``)
-----------------------
``icnet_golden_<case>.npz`` (see ``CASES``), each with ``meta`` (JSON string), ``param_shapes``
(JSON string ``{'layer/param': shape}``, caffe names, all variables of the graph) and float32
tensors keyed by layer name with ``/`` replaced by ``__``; plus ``icnet_param_counts.json``.
"""

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import time
import types
import zipfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import tensorflow as _tf_root  # noqa: E402

from tests.golden.seeded import seeded_images, seeded_weights  # noqa: E402

tf = _tf_root.compat.v1

REFERENCE_REPO = 'hellochick/ICNet-tensorflow'
REFERENCE_COMMIT = '90a85c4e8b2da241128f6ddc0938ab5c4336a309'
WEIGHT_SEED = 0
INPUT_SEED = 1
SAMPLE_SEED = 7
NUM_SAMPLES = 20000
BN_MOMENTUM = 0.95  # hard-coded in the reference's Network.batch_normalization

# (import name, path relative to --reference_dir, is package, git blob id at REFERENCE_COMMIT),
# in import order: model.py imports network, utils.image_reader and utils.visualize.
REFERENCE_MODULES = (
    ('utils', 'utils/__init__.py', True, 'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'),
    (
        'utils.image_reader',
        'utils/image_reader.py',
        False,
        '8a21c761a759cdcfd845b7ec2427a52dd3e33892',
    ),
    ('utils.visualize', 'utils/visualize.py', False, 'bbdf3a89b9bb3b7d9d05d0e5b78fa30a0914521a'),
    ('network', 'network.py', False, '1ea593951e1773849123f53c53dc76be20889eba'),
    ('model', 'model.py', False, '5dae6d2f0f2c0ca8adeb52da474927c43edfaf06'),
)
# Third-party modules imported at the top of the reference utils but only used by helpers the
# golden graphs never call (image decoding with cv2, ADE20k colour table with scipy.io).
STUBBED_MODULES = ('cv2', 'scipy', 'scipy.io')

TF_IMPORT = re.compile(r'^import tensorflow as tf[ \t]*$', re.MULTILINE)
BN_TF_TO_CAFFE = {
    'gamma': 'scale',
    'beta': 'offset',
    'moving_mean': 'mean',
    'moving_variance': 'variance',
}

# Case F: BN layers whose moving statistics are recorded after one update step.
TRAIN_BN_LAYERS = (
    'conv1_1_3x3_s2_bn',
    'conv3_1_1x1_reduce_bn',
    'conv5_3_1x1_increase_bn',
    'conv3_sub1_proj_bn',
)

CASES = {
    'bn_eval_193x385': dict(
        doc='ICNet_BN inference at a canonical 32k+1 size; outputs and small intermediates.',
        model='ICNet_BN',
        mode='eval',
        dataset='cityscapes',
        filter_scale=1,
        num_classes=19,
        is_training=False,
        input_shape=(1, 193, 385, 3),
        outputs=(
            'conv6_cls',
            'sub4_out',
            'sub24_out',
            'data_sub2',
            'conv3_1_sub4',
            'conv5_3/relu',
            'conv5_3_sum',
            'conv5_4_interp',
        ),
    ),
    'bn_eval_192x384': dict(
        doc='ICNet_BN at an even size: `add` resizes its first input, SAME padding at even sizes.',
        model='ICNet_BN',
        mode='eval',
        dataset='cityscapes',
        filter_scale=1,
        num_classes=19,
        is_training=False,
        input_shape=(1, 192, 384, 3),
        outputs=('conv6_cls', 'sub4_out', 'sub24_out', 'conv5_3_sum'),
    ),
    'icnet_eval_cityscapes_1025x2049': dict(
        doc='ICNet (BN merged) in eval mode on cityscapes: Caffe-prototxt pyramid pooling kernels. '
        'Stored as argmax, top-2 margin, max |x| and a fixed random sample of elements.',
        model='ICNet',
        mode='eval',
        dataset='cityscapes',
        filter_scale=1,
        num_classes=19,
        is_training=False,
        input_shape=(1, 1025, 2049, 3),
        sampled=('conv6_cls', 'conv5_3_sum'),
    ),
    'icnet_train_193x385': dict(
        doc='ICNet (BN merged) in train mode: adaptive h/n pyramid pooling kernels.',
        model='ICNet',
        mode='train',
        dataset='cityscapes',
        filter_scale=1,
        num_classes=19,
        is_training=False,
        input_shape=(1, 193, 385, 3),
        outputs=('conv6_cls', 'conv5_3_sum'),
    ),
    'bn_fs2_nc5_129x257': dict(
        doc='ICNet_BN with filter_scale 2 and 5 classes.',
        model='ICNet_BN',
        mode='eval',
        dataset='others',
        filter_scale=2,
        num_classes=5,
        is_training=False,
        input_shape=(1, 129, 257, 3),
        outputs=('conv6_cls', 'sub4_out', 'sub24_out'),
    ),
    'bn_training_b2_129x257': dict(
        doc='ICNet_BN with cfg.is_training=True (batch statistics), batch 2: conv6_cls before any '
        'update, then moving statistics after running UPDATE_OPS once on the same batch, and '
        'the batch mean / biased variance of the BN inputs recomputed in NumPy (float64).',
        model='ICNet_BN',
        mode='train',
        dataset='cityscapes',
        filter_scale=1,
        num_classes=19,
        is_training=True,
        input_shape=(2, 129, 257, 3),
        outputs=('conv6_cls',),
        bn_update=TRAIN_BN_LAYERS,
    ),
}

PARAM_COUNT_CONFIGS = (('ICNet_BN', 1), ('ICNet_BN', 2), ('ICNet', 1), ('ICNet', 2))


# ----------------------------------------------------------------------------------------------
# Loading the reference code
# ----------------------------------------------------------------------------------------------
def git_blob_id(data):
    """The id git gives a file's contents (sha1 over 'blob <size>\\0<data>')."""
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def _stub_module(name):
    def _missing(attr):
        raise RuntimeError(f'{name}.{attr} is a stub: the golden graphs must not use {name}')

    mod = types.ModuleType(name)
    mod.__getattr__ = _missing
    return mod


def load_reference(reference_dir, check_blobs=True):
    """Exec the reference modules with `tf` bound to tf.compat.v1; returns (network, model)."""
    loaded = load_reference_modules(reference_dir, REFERENCE_MODULES, check_blobs)
    return loaded['network'], loaded['model']


def load_reference_modules(reference_dir, modules, check_blobs=True):
    """Exec `modules` ((import name, path, is package, git blob id), in import order) of the
    reference checkout with `tf` bound to tf.compat.v1 (every module but `utils` must have its
    one `import tensorflow as tf` line, or none), cv2/scipy stubbed; returns {name: module}.
    `sys.modules` is restored afterwards."""
    touched = {name for name, *_ in modules} | set(STUBBED_MODULES)
    saved = {name: sys.modules[name] for name in touched if name in sys.modules}
    try:
        for name in STUBBED_MODULES:
            sys.modules[name] = _stub_module(name)
        sys.modules['scipy'].io = sys.modules['scipy.io']

        loaded = {}
        for name, rel_path, is_package, blob_id in modules:
            path = os.path.join(reference_dir, rel_path)
            with open(path, 'rb') as f:
                raw = f.read()
            if check_blobs and git_blob_id(raw) != blob_id:
                raise RuntimeError(
                    f'{path} is not {rel_path} of {REFERENCE_REPO}@{REFERENCE_COMMIT[:7]} '
                    f'(git blob {git_blob_id(raw)}, expected {blob_id})'
                )
            source = raw.decode('utf-8')
            if name != 'utils':
                source, n = TF_IMPORT.subn('import tensorflow.compat.v1 as tf', source)
                if n > 1 or (n == 0 and 'tf.' in source):
                    raise RuntimeError(
                        f"expected one 'import tensorflow as tf' line in {path}, found {n}"
                    )
            module = types.ModuleType(name)
            module.__file__ = path
            if is_package:
                module.__path__ = []  # submodules are registered explicitly, never searched for
            sys.modules[name] = module
            if '.' in name:
                parent, child = name.rsplit('.', 1)
                setattr(loaded[parent], child, module)
            exec(compile(source, path, 'exec'), module.__dict__)
            loaded[name] = module
        return loaded
    finally:
        for name in touched:
            if name in saved:
                sys.modules[name] = saved[name]
            else:
                sys.modules.pop(name, None)


@contextlib.contextmanager
def numpy_load_allow_pickle():
    """The reference's Network.load_npy predates numpy 1.16.3 and calls np.load on a pickled dict
    without allow_pickle=True; numpy 1.26 rejects that, so pass it for the loader call only."""
    original = np.load
    np.load = functools.partial(original, allow_pickle=True)
    try:
        yield
    finally:
        np.load = original


# ----------------------------------------------------------------------------------------------
# Building and running one reference graph
# ----------------------------------------------------------------------------------------------
def make_cfg(dataset, num_classes, filter_scale, is_training):
    """The attributes of utils.config.Config that model.py / network.py read."""
    return types.SimpleNamespace(
        dataset=dataset,
        param={'num_classes': num_classes},
        filter_scale=filter_scale,
        is_training=is_training,
        INFER_SIZE=None,
    )


def build_graph(
    model_module, model_name, mode, dataset, num_classes, filter_scale, is_training, input_shape
):
    """A fresh graph with the reference network; the image reader is two placeholders."""
    graph = tf.Graph()
    with graph.as_default():
        n, h, w, _ = input_shape
        reader = types.SimpleNamespace(
            next_image=tf.placeholder(tf.float32, [n, h, w, 3], name='next_image'),
            next_label=tf.placeholder(tf.uint8, [n, h, w, 1], name='next_label'),
        )
        cfg = make_cfg(dataset, num_classes, filter_scale, is_training)
        net = getattr(model_module, model_name)(cfg, mode, reader)
    return graph, net, reader


def caffe_key(var):
    """'conv1_bn/moving_mean:0' -> 'conv1_bn/mean' (the caffe-tensorflow parameter names)."""
    name = var.op.name
    layer, param = name.split('/')
    if param in BN_TF_TO_CAFFE:
        param = BN_TF_TO_CAFFE[param]
    elif param not in ('weights', 'biases'):
        raise ValueError(f'unexpected variable {name}')
    return f'{layer}/{param}'


def param_shapes(graph):
    with graph.as_default():
        return {caffe_key(v): [int(d) for d in v.shape] for v in tf.global_variables()}


def load_seeded_weights(graph, net, sess, shapes):
    """Write the seeded weights as a caffe-tensorflow .npy and load it with net.load_npy."""
    weights = seeded_weights(shapes, seed=WEIGHT_SEED)
    with graph.as_default():
        sess.run(tf.global_variables_initializer())
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'seeded_weights.npy')
            np.save(path, weights, allow_pickle=True)
            with numpy_load_allow_pickle():
                net.load_npy(path, sess)
        variables = tf.global_variables()
        values = sess.run(variables)
    for var, value in zip(variables, values):
        layer, param = caffe_key(var).split('/')
        if not np.array_equal(value, weights[layer][param]):
            raise AssertionError(f'{var.op.name} does not hold its seeded value after load_npy')
    return weights


def pool_attrs(graph):
    """The pyramid pooling ops actually built (kernel sizes after TF's int() truncation)."""
    out = {}
    for op in graph.get_operations():
        if op.type == 'AvgPool':
            out[op.name] = {
                'ksize': list(op.get_attr('ksize')),
                'strides': list(op.get_attr('strides')),
                'padding': op.get_attr('padding').decode(),
            }
    return out


def out_key(layer):
    return layer.replace('/', '__')


def sample_tensor(value, name):
    """A fixed sample of NUM_SAMPLES distinct elements of a [1, H, W, C] tensor."""
    assert value.shape[0] == 1
    hwc = value.shape[1:]
    rng = np.random.default_rng(SAMPLE_SEED)
    flat = np.sort(rng.choice(int(np.prod(hwc)), size=NUM_SAMPLES, replace=False))
    idx = np.stack(np.unravel_index(flat, hwc), axis=1).astype(np.int32)
    return {
        f'{name}_sample_idx': idx,
        f'{name}_sample': value[0][idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float32),
        f'{name}_max_abs': np.float32(np.abs(value).max()),
    }


def run_case(model_module, name, spec):
    t0 = time.time()
    graph, net, reader = build_graph(
        model_module,
        spec['model'],
        spec['mode'],
        spec['dataset'],
        spec['num_classes'],
        spec['filter_scale'],
        spec['is_training'],
        spec['input_shape'],
    )
    shapes = param_shapes(graph)
    images = seeded_images(spec['input_shape'], seed=INPUT_SEED)
    feed = {reader.next_image: images}
    arrays = {}
    meta_extra = {}
    with tf.Session(graph=graph) as sess:
        weights = load_seeded_weights(graph, net, sess, shapes)
        t_build = time.time() - t0

        names = list(spec.get('outputs', ())) + list(spec.get('sampled', ()))
        fetched = sess.run({layer: net.layers[layer] for layer in names}, feed_dict=feed)
        for layer in spec.get('outputs', ()):
            arrays[out_key(layer)] = fetched[layer].astype(np.float32)
        for layer in spec.get('sampled', ()):
            arrays.update(sample_tensor(fetched[layer], out_key(layer)))
        if 'conv6_cls' in spec.get('sampled', ()):
            logits = fetched['conv6_cls'][0]
            top2 = np.sort(logits, axis=-1)[..., -2:]
            arrays['conv6_cls_argmax'] = logits.argmax(-1).astype(np.uint8)
            arrays['conv6_cls_top2_margin'] = (top2[..., 1] - top2[..., 0]).astype(np.float32)
        output_shapes = {out_key(layer): list(fetched[layer].shape) for layer in names}

        if spec.get('bn_update'):
            meta_extra.update(
                run_bn_update(graph, net, sess, feed, spec['bn_update'], weights, arrays)
            )
    t_total = time.time() - t0

    meta = {
        'case': name,
        'doc': spec['doc'],
        'model_class': spec['model'],
        'mode': spec['mode'],
        'dataset': spec['dataset'],
        'filter_scale': spec['filter_scale'],
        'num_classes': spec['num_classes'],
        'is_training': spec['is_training'],
        'input_shape': list(spec['input_shape']),
        'input': "seeded_images(input_shape, seed=1) fed to 'data'",
        'weight_seed': WEIGHT_SEED,
        'input_seed': INPUT_SEED,
        'weights': 'seeded_weights(param_shapes, seed=0), loaded with the reference '
        'Network.load_npy',
        'output_shapes': output_shapes,
        'avg_pools': pool_attrs(graph),
        'batch_norm_ops': sorted(
            {op.type for op in graph.get_operations() if 'BatchNorm' in op.type}
        ),
        'reference': f'{REFERENCE_REPO}@{REFERENCE_COMMIT}',
        'reference_commit': REFERENCE_COMMIT[:7],
        'tf_version': _tf_root.__version__,
        'numpy_version': np.__version__,
        'python_version': platform.python_version(),
        'run_as': 'tf.compat.v1 with disable_v2_behavior()',
    }
    if spec.get('sampled'):
        meta['sampling'] = (
            f'per sampled tensor T: np.random.default_rng({SAMPLE_SEED}).choice(H*W*C, '
            f'{NUM_SAMPLES}, replace=False), sorted, unravelled to (y, x, c) of T[0]'
        )
    meta.update(meta_extra)
    timings = {'build_and_load_s': round(t_build, 2), 'total_s': round(t_total, 2)}
    return arrays, shapes, meta, timings


def run_bn_update(graph, net, sess, feed, bn_layers, weights, arrays):
    """Run UPDATE_OPS once; record moving statistics before/after and the BN inputs' batch stats."""
    with graph.as_default():
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
    n_bn = sum('scale' in params for params in weights.values())
    if len(update_ops) != 2 * n_bn:
        raise AssertionError(f'expected {2 * n_bn} update ops, found {len(update_ops)}')
    conv_inputs = {layer: net.layers[layer[: -len('_bn')]] for layer in bn_layers}
    _, conv_values = sess.run([update_ops, conv_inputs], feed_dict=feed)

    findings = {}
    for layer in bn_layers:
        with graph.as_default(), tf.variable_scope(layer, reuse=True):
            moving_mean, moving_var = sess.run(
                [tf.get_variable('moving_mean'), tf.get_variable('moving_variance')]
            )
        x = conv_values[layer].astype(np.float64)
        count = int(np.prod(x.shape[:-1]))
        batch_mean = x.mean(axis=(0, 1, 2))
        batch_var = x.var(axis=(0, 1, 2))  # biased (divide by count)
        before_mean, before_var = weights[layer]['mean'], weights[layer]['variance']
        arrays[f'before_update/{layer}/mean'] = before_mean
        arrays[f'before_update/{layer}/variance'] = before_var
        arrays[f'after_update/{layer}/mean'] = moving_mean.astype(np.float32)
        arrays[f'after_update/{layer}/variance'] = moving_var.astype(np.float32)
        arrays[f'batch_input/{layer}/mean'] = batch_mean.astype(np.float32)
        arrays[f'batch_input/{layer}/variance_biased'] = batch_var.astype(np.float32)
        arrays[f'batch_input/{layer}/count'] = np.int64(count)
        # Which batch variance did the moving average absorb?
        used = (moving_var.astype(np.float64) - BN_MOMENTUM * before_var) / (1.0 - BN_MOMENTUM)
        err_biased = float(np.max(np.abs(used - batch_var) / batch_var))
        err_bessel = float(np.max(np.abs(used - batch_var * count / (count - 1)) / batch_var))
        used_mean = (moving_mean.astype(np.float64) - BN_MOMENTUM * before_mean) / (
            1.0 - BN_MOMENTUM
        )
        findings[layer] = {
            'count': count,
            'bessel_factor': count / (count - 1),
            'max_rel_err_vs_biased': err_biased,
            'max_rel_err_vs_bessel': err_bessel,
            'max_abs_err_mean': float(np.max(np.abs(used_mean - batch_mean))),
            'moving_variance_uses': 'bessel_corrected' if err_bessel < err_biased else 'biased',
        }
    verdicts = {f['moving_variance_uses'] for f in findings.values()}
    return {
        'bn_momentum': BN_MOMENTUM,
        'bn_update_findings': findings,
        'moving_variance_update': verdicts.pop() if len(verdicts) == 1 else 'mixed',
        'bn_update_keys': 'after_update/<layer>/{mean,variance}, '
        'before_update/<layer>/{mean,variance}, '
        'batch_input/<layer>/{mean,variance_biased,count} (input = the conv feeding <layer>)',
    }


def save_npz(path, arrays):
    """Like np.savez_compressed, but byte-for-byte reproducible (fixed zip timestamps)."""
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(key + '.npy', date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, 'w', force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def param_counts(model_module):
    counts = {}
    for model_name, filter_scale in PARAM_COUNT_CONFIGS:
        # Variable shapes do not depend on the input size, but ICNet's adaptive pooling (h/6)
        # needs conv5_3 at least 6 rows high, i.e. an input of at least 161 rows.
        graph, _, _ = build_graph(
            model_module,
            model_name,
            'train',
            'cityscapes',
            19,
            filter_scale,
            False,
            (1, 193, 385, 3),
        )
        with graph.as_default():
            total = sum(int(np.prod(v.shape)) for v in tf.global_variables())
            trainable = sum(int(np.prod(v.shape)) for v in tf.trainable_variables())
            keys = [caffe_key(v) for v in tf.global_variables()]
        counts[f'{model_name}_fs{filter_scale}'] = {
            'model_class': model_name,
            'filter_scale': filter_scale,
            'num_classes': 19,
            'trainable': trainable,
            'total': total,
            'conv_layers': sum(k.endswith('/weights') for k in keys),
            'bn_layers': sum(k.endswith('/scale') for k in keys),
        }
    counts['about'] = {
        'reference': f'{REFERENCE_REPO}@{REFERENCE_COMMIT}',
        'tf_version': _tf_root.__version__,
        'note': "per '<model class>_fs<filter_scale>' (num_classes 19): total = all global "
        'variables '
        '(incl. BN moving statistics), trainable = trainable variables, conv_layers = layers '
        "with 'weights', bn_layers = batch-normalization layers",
    }
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--reference_dir',
        required=True,
        help='directory holding model.py, network.py and utils/ of the reference',
    )
    parser.add_argument('--out_dir', required=True, help='where to write the .npz / .json files')
    parser.add_argument(
        '--cases',
        nargs='*',
        default=list(CASES),
        choices=list(CASES),
        help='subset of cases to generate (default: all)',
    )
    parser.add_argument(
        '--skip_blob_check',
        action='store_true',
        help='do not insist on the exact reference files of commit 90a85c4',
    )
    args = parser.parse_args(argv)

    tf.disable_v2_behavior()
    _, model_module = load_reference(args.reference_dir, check_blobs=not args.skip_blob_check)
    os.makedirs(args.out_dir, exist_ok=True)

    for name in args.cases:
        arrays, shapes, meta, timings = run_case(model_module, name, CASES[name])
        path = os.path.join(args.out_dir, f'icnet_golden_{name}.npz')
        save_npz(
            path,
            {
                'meta': np.array(json.dumps(meta, sort_keys=True)),
                'param_shapes': np.array(json.dumps(shapes, sort_keys=True)),
                **arrays,
            },
        )
        print(f'{path}: {len(arrays)} arrays, {os.path.getsize(path) / 1e6:.2f} MB, {timings}')

    counts = param_counts(model_module)
    path = os.path.join(args.out_dir, 'icnet_param_counts.json')
    with open(path, 'w') as f:
        json.dump(counts, f, indent=2, sort_keys=True)
        f.write('\n')
    print(f'{path}: {json.dumps({k: v for k, v in counts.items() if k != "about"})}')


if __name__ == '__main__':
    main()
