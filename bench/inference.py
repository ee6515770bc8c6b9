"""ICNet_BN inference speed: eager, tf.function, XLA, the exported SavedModel and the ORIGINAL TF1
graph, side by side in one run.

    python bench/inference.py --reference_dir /path/to/ICNet-tensorflow \
        [--sizes 1024x2048,512x1024] [--runs 10] [--warmup 2] [--no_append]

Every variant runs ICNet_BN with the same seeded weights (`tests/golden/seeded.py`, seed 0) and
the TF1 `ICNet_BN` pyramid (`psp_bins=(1, 2, 3, 4)`) on the same uint8 RGB image (a toy-city
scene, `data/toycity.py`), batch 1, from image to int32 labels: RGB -> BGR, mean, padding to a
multiple of 32, network, align-corners resize of `conv6_cls`, crop, argmax.

* eager:        `icnet_tf.ICNet_BN` called eagerly.
* tf.function:  the same pipeline in `tf.function` (one static-shape trace).
* XLA:          the same with `tf.function(jit_compile=True)`.
* SavedModel:   `python -m icnet_tf.export` output (`--no_probabilities`: every exact rewrite of
                `icnet_tf.rewrites` ICNet declares: BN folded into the convolutions, the zoom
                rewrites, RGB input, the sparse label upsampling), called through
                `signatures['serving_default']`.
* SavedModel (plain fold): the same exported with `--nooptimize` (folding only).
* TFLite:       `serving.tflite_model` (the rewrites TFLite takes: all but the label one) for the
                fixed image size, run by `serving.tflite_interpreter` (XNNPACK delegate on) with
                --tflite_threads threads (default: all cores); 'TFLite (1 thread)' with one
                (XNNPACK's thread pool spin-waits, which a shared CPU punishes).
* TF1 original: hellochick/ICNet-tensorflow `model.py`/`network.py` (read from --reference_dir,
                never copied) under `tf.compat.v1` in the same TF 2.15 runtime, built in its own
                `mode='inference'` path with the documented mean-subtraction fix (the original
                passes `swap_channel` where the mean belongs; here its own `_extract_mean(img,
                IMG_MEAN, swap_channel=True)` and `_check_input` are composed), weights loaded by
                its own `load_npy`; the labels are its ArgMax tensor. Without --reference_dir
                this row says "not run".

Each variant lives in its own subprocess (so `ru_maxrss` is its own peak RSS) and all of them
stay alive while the parent asks them for one timed call each in turn, round after round, so a
busy shared machine slows every variant alike. Reported: median wall ms/image over --runs
rounds after --warmup calls, images/s, median CPU ms/image (process time, all threads; a
load-independent view of the work), peak RSS, speed relative to TF1, and the percentage of
pixels whose label equals the TF1 graph's. The table is printed and appended to
bench/RESULTS.md. GPU: when TensorFlow sees one, every size is run a second time on it.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402

from bench import common  # noqa: E402

PSP_BINS = (1, 2, 3, 4)  # the TF1 ICNet_BN pyramid
NUM_CLASSES = 19
WEIGHT_SEED = 0
VARIANTS = (
    'eager',
    'tf.function',
    'XLA',
    'SavedModel',
    'SavedModel (plain fold)',
    'TFLite',
    'TFLite (1 thread)',
    'TF1 original',
)
REFERENCE = 'TF1 original'
EXPORTED = 'SavedModel'
GOAL_SPEEDUP, GOAL_AGREEMENT = 1.3, 0.9999


# ---------------------------------------------------------------------------------------------
# Workers (one process per variant)
# ---------------------------------------------------------------------------------------------
def seeded_icnet_bn():
    from icnet_tf import ICNet_BN
    from tests.golden.seeded import seeded_weights

    net = ICNet_BN(num_classes=NUM_CLASSES, psp_bins=PSP_BINS).build()
    net.load(seeded_weights(net.param_shapes(), seed=WEIGHT_SEED), verbose=False)
    return net


def labels_pipeline(net):
    """uint8 RGB [1, H, W, 3] -> int32 labels [1, H, W], the original's pre/postprocessing."""
    import tensorflow as tf

    from icnet_tf.network import caffe_bgr_input as to_network_input
    from icnet_tf.network import resize_bilinear_align_corners
    from icnet_tf.predict import padded_size

    def run(rgb):
        h, w = rgb.shape[1:3]
        ph, pw = padded_size(h, w)
        x = tf.pad(to_network_input(rgb), [[0, 0], [0, ph - h], [0, pw - w], [0, 0]])
        logits = resize_bilinear_align_corners(net(x, training=False), (ph, pw))[:, :h, :w]
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    return run


def export_model(export_dir, optimize):
    from icnet_tf.serving import export_saved_model

    export_saved_model(seeded_icnet_bn(), export_dir, probabilities=False, optimize=optimize)


def tf1_runner(reference_dir, rgb):
    """Build the original ICNet_BN inference graph; returns a function -> labels [1, H, W]."""
    import types

    from tests.golden import make_icnet_golden as golden

    v1 = golden.tf
    v1.disable_v2_behavior()
    _, model = golden.load_reference(reference_dir)
    reader = model._infer_preprocess.__globals__  # the original utils/image_reader.py
    mean = np.array((103.939, 116.779, 123.68), np.float32)  # its cfg.IMG_MEAN (BGR)

    def infer_preprocess_with_mean(img):  # _infer_preprocess without the argument slip
        o_shape = img.shape[0:2]
        img = reader['_extract_mean'](img, mean, swap_channel=True)
        img = v1.expand_dims(img, axis=0)
        img, n_shape = reader['_check_input'](img)
        return img, o_shape, n_shape

    model._infer_preprocess = infer_preprocess_with_mean
    h, w = rgb.shape[1:3]
    cfg = types.SimpleNamespace(
        dataset='cityscapes',
        param={'num_classes': NUM_CLASSES},
        filter_scale=1,
        is_training=False,
        INFER_SIZE=[h, w, 3],
    )
    graph = v1.Graph()
    with graph.as_default():
        net = model.ICNet_BN(cfg, 'inference')
        argmax = [op for op in graph.get_operations() if op.type == 'ArgMax']
        if len(argmax) != 1:
            raise RuntimeError(f'expected one ArgMax in the reference graph, got {len(argmax)}')
        labels = argmax[0].outputs[0]
    sess = v1.Session(graph=graph)
    golden.load_seeded_weights(graph, net, sess, golden.param_shapes(graph))
    feed = {net.img_placeholder: rgb[0]}
    return lambda: sess.run(labels, feed_dict=feed).astype(np.int32)


def make_runner(variant, rgb, args):
    if variant == REFERENCE:
        return tf1_runner(args.reference_dir, rgb)
    import tensorflow as tf

    if variant.startswith('TFLite'):
        from icnet_tf.serving import tflite_interpreter, tflite_model, xnnpack_partitions

        content = tflite_model(seeded_icnet_bn(), rgb.shape[1:3], probabilities=False)
        threads = 1 if variant == 'TFLite (1 thread)' else args.tflite_threads
        interpreter = tflite_interpreter(content, num_threads=threads)
        if not xnnpack_partitions(interpreter):
            raise RuntimeError('TFLite: the XNNPACK delegate was not applied')
        runner = interpreter.get_signature_runner()
        return lambda: runner(images=rgb)['labels']
    if variant.startswith('SavedModel'):
        loaded = tf.saved_model.load(args.export_dir)
        signature = loaded.signatures['serving_default']
        images = tf.constant(rgb)
        return lambda: signature(images=images)['labels'].numpy()
    fn = labels_pipeline(seeded_icnet_bn())
    if variant == 'tf.function':
        fn = tf.function(fn)
    elif variant == 'XLA':
        fn = tf.function(fn, jit_compile=True)
    images = tf.constant(rgb)
    return lambda: fn(images).numpy()


def worker(args):
    """Serve timed calls over stdin/stdout: 'run' -> {wall, cpu}; 'quit' -> labels + peak RSS."""
    import resource

    rgb = np.load(args.image)
    start = time.perf_counter()
    if args.variant == 'export':
        export_model(args.export_dir, optimize=args.optimize)
        print(json.dumps({'export_s': time.perf_counter() - start}), flush=True)
        return
    run = make_runner(args.variant, rgb, args)
    labels = None
    for _ in range(args.warmup):
        labels = run()
    print(json.dumps({'ready': True, 'setup_s': time.perf_counter() - start}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == 'run':
            wall, cpu = time.perf_counter(), time.process_time()
            labels = run()
            print(
                json.dumps({'wall': time.perf_counter() - wall, 'cpu': time.process_time() - cpu}),
                flush=True,
            )
        elif command == 'quit':
            np.save(args.labels_out, np.asarray(labels).reshape(rgb.shape[1:3]).astype(np.int32))
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB (Linux)
            print(json.dumps({'peak_rss_mb': rss}), flush=True)
            return


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------
class Worker(common.Worker):
    def __init__(self, variant, size, image, tmp, args, env, optimize=True, export_dir=None):
        super().__init__(variant, tmp, f'{variant}_{size[0]}x{size[1]}')
        self.labels_path = os.path.join(tmp, f'labels_{self.tag}.npy')
        command = [
            sys.executable,
            os.path.abspath(__file__),
            '--worker',
            variant,
            '--image',
            image,
            '--labels_out',
            self.labels_path,
            '--warmup',
            str(args.warmup),
        ]
        if export_dir:
            command += ['--export_dir', export_dir]
        if args.reference_dir:
            command += ['--reference_dir', args.reference_dir]
        if not optimize:
            command += ['--nooptimize']
        command += ['--tflite_threads', str(args.tflite_threads)]
        self.start(command, env)
        self.walls, self.cpus, self.error = [], [], None


def run_export(image, export_dir, optimize, env, args):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        '--worker',
        'export',
        '--image',
        image,
        '--export_dir',
        export_dir,
        '--labels_out',
        os.devnull,
    ]
    if not optimize:
        command.append('--nooptimize')
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f'export failed: {done.stderr.strip().splitlines()[-1:]}')


def bench_size(size, device, args, tmp):
    from data import toycity

    h, w = size
    image, _ = toycity.render_scene(np.random.default_rng(0), h, w)
    image_path = os.path.join(tmp, f'image_{h}x{w}.npy')
    np.save(image_path, image[None])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
    if device == 'CPU':
        env['CUDA_VISIBLE_DEVICES'] = ''
    exports = {}
    for name, optimize in ((EXPORTED, True), ('SavedModel (plain fold)', False)):
        if name in args.variants:
            exports[name] = os.path.join(tmp, f'export_{h}x{w}_{device}_{int(optimize)}')
            run_export(image_path, exports[name], optimize, env, args)
    workers, results = {}, {}
    for variant in args.variants:
        if variant == REFERENCE and not args.reference_dir:
            results[variant] = {'error': 'not run (no --reference_dir)'}
            continue
        workers[variant] = Worker(
            variant,
            size,
            image_path,
            tmp,
            args,
            env,
            optimize=variant != 'SavedModel (plain fold)',
            export_dir=exports.get(variant),
        )
    for variant, wk in list(workers.items()):  # all set up (and warm up) concurrently
        try:
            wk.read()
        except RuntimeError as e:
            results[variant] = {'error': str(e)}
            del workers[variant]
    load_before = os.getloadavg()
    for _ in range(args.runs):
        for wk in workers.values():
            timing = wk.ask('run')
            wk.walls.append(timing['wall'])
            wk.cpus.append(timing['cpu'])
    load_after = os.getloadavg()
    labels = {}
    for variant, wk in workers.items():
        rss = wk.ask('quit')['peak_rss_mb']
        wk.proc.wait()
        labels[variant] = np.load(wk.labels_path)
        results[variant] = {
            'ms': 1000 * statistics.median(wk.walls),
            'cpu_ms': 1000 * statistics.median(wk.cpus),
            'rss_mb': rss,
            'runs': len(wk.walls),
        }
    reference = labels.get(REFERENCE)
    for variant, lab in labels.items():
        if reference is not None:
            results[variant]['agreement'] = float(np.mean(lab == reference))
    return results, (load_before, load_after)


def format_table(all_results, args):
    lines = [
        '| size | device | variant | median ms/img | img/s | CPU ms/img | speed vs TF1 | '
        'peak RSS MB | labels = TF1 |',
        '|---|---|---|---:|---:|---:|---:|---:|---:|',
    ]
    for (size, device), (results, _loads) in all_results.items():
        ref = results.get(REFERENCE, {})
        for variant in args.variants:
            r = results.get(variant, {})
            name = f'{size[0]}x{size[1]}'
            if 'ms' not in r:
                lines.append(
                    f'| {name} | {device} | {variant} | {r.get("error", "not run")} | | | | | |'
                )
                continue
            speed = f'{ref["ms"] / r["ms"]:.2f}x' if 'ms' in ref else 'n/a'
            agree = f'{100 * r["agreement"]:.3f}%' if 'agreement' in r else 'n/a'
            lines.append(
                f'| {name} | {device} | {variant} | {r["ms"]:.0f} | '
                f'{1000 / r["ms"]:.2f} | {r["cpu_ms"]:.0f} | {speed} | '
                f'{r["rss_mb"]:.0f} | {agree} |'
            )
    load_lines = [
        f'{s[0]}x{s[1]} {d}: load average {", ".join(f"{v:.2f}" for v in b)} before '
        f'the timed rounds, {", ".join(f"{v:.2f}" for v in a)} after'
        for (s, d), (_, (b, a)) in all_results.items()
    ]
    return '\n'.join(lines), load_lines


def goal_verdict(all_results):
    for (size, device), (results, _) in all_results.items():
        if size != (1024, 2048) or device != 'CPU':
            continue
        exp, ref = results.get(EXPORTED, {}), results.get(REFERENCE, {})
        if 'ms' not in exp or 'ms' not in ref:
            return 'goal (exported >= 1.3x the TF1 graph at 1024x2048): not evaluated'
        speed, agree = ref['ms'] / exp['ms'], exp.get('agreement', float('nan'))
        cpu_speed = ref['cpu_ms'] / exp['cpu_ms']
        met = speed >= GOAL_SPEEDUP and agree >= GOAL_AGREEMENT
        verdict = (
            f'goal (exported SavedModel >= {GOAL_SPEEDUP}x the TF1 graph at 1024x2048 on CPU, '
            f'>= {100 * GOAL_AGREEMENT:.2f}% identical labels): {speed:.2f}x wall, '
            f'{cpu_speed:.2f}x CPU time, {100 * agree:.3f}% identical -> '
            f'{"MET" if met else "NOT MET"}'
        )
        lite = results.get('TFLite', {})
        if 'ms' in lite:
            verdict += (
                f"; TFLite runs at {exp['ms'] / lite['ms']:.2f}x the SavedModel's speed "
                f'({exp["cpu_ms"] / lite["cpu_ms"]:.2f}x in CPU time)'
            )
        return verdict
    return 'goal: 1024x2048 on CPU not in this run'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--reference_dir', help='checkout of hellochick/ICNet-tensorflow 90a85c4')
    parser.add_argument('--sizes', default='1024x2048,512x1024', help='HxW list')
    parser.add_argument('--runs', type=int, default=10, help='timed rounds (median)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls per variant')
    parser.add_argument(
        '--variants', default=','.join(VARIANTS), help=f'subset of: {", ".join(VARIANTS)}'
    )
    parser.add_argument(
        '--tflite_threads', type=int, default=os.cpu_count(), help='TFLite interpreter threads'
    )
    parser.add_argument('--no_append', action='store_true', help='do not write bench/RESULTS.md')
    # worker mode (internal)
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--image', help=argparse.SUPPRESS)
    parser.add_argument('--labels_out', help=argparse.SUPPRESS)
    parser.add_argument('--export_dir', help=argparse.SUPPRESS)
    parser.add_argument(
        '--nooptimize', dest='optimize', action='store_false', help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        args.variant = args.worker
        return args
    args.variants = [v.strip() for v in args.variants.split(',') if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f'unknown variant(s) {unknown}; choose from {", ".join(VARIANTS)}')
    try:
        args.sizes = [tuple(int(v) for v in s.lower().split('x')) for s in args.sizes.split(',')]
    except ValueError:
        parser.error(f'--sizes: expected HxW[,HxW...], got {args.sizes!r}')
    if args.reference_dir and not os.path.isfile(os.path.join(args.reference_dir, 'model.py')):
        parser.error(f'--reference_dir {args.reference_dir}: no model.py there')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    import tensorflow as tf

    devices = ['CPU'] + (['GPU'] if tf.config.list_physical_devices('GPU') else [])
    command = 'python ' + ' '.join(
        shlex.quote(a)
        for a in [os.path.relpath(os.path.abspath(__file__), ROOT)]
        + (sys.argv[1:] if argv is None else list(argv))
    )
    start = time.perf_counter()
    all_results = {}
    with tempfile.TemporaryDirectory(prefix='icnet_bench_') as tmp:
        for device in devices:
            for size in args.sizes:
                print(
                    f'{size[0]}x{size[1]} on {device}: {", ".join(args.variants)} ...', flush=True
                )
                all_results[(size, device)] = bench_size(size, device, args, tmp)
    table, load_lines = format_table(all_results, args)
    verdict = goal_verdict(all_results)
    print(table)
    print('\n'.join(load_lines))
    print(verdict)
    print(f'total {time.perf_counter() - start:.0f} s')
    if not args.no_append:
        from bench.common import append_results

        notes = (
            f'ICNet_BN, seeded weights, psp_bins {PSP_BINS} (the TF1 ICNet_BN pyramid), '
            f'{NUM_CLASSES} classes, batch 1, uint8 toy-city image -> int32 labels; '
            f'{args.runs} interleaved rounds after {args.warmup} warm-up calls, one '
            'subprocess per variant (peak RSS = its ru_maxrss). CPU ms = process time of '
            'all threads. SavedModel = `icnet_tf.export --no_probabilities` (every exact '
            'rewrite ICNet declares); plain fold = `--nooptimize`; TFLite = the rewrites '
            f'TFLite takes, XNNPACK, {args.tflite_threads} threads.'
        )
        body = '\n\n'.join(
            [notes, table, '\n'.join(f'- {line}' for line in load_lines), f'**{verdict}**']
        )
        append_results(
            'Inference: ICNet_BN eager / tf.function / XLA / SavedModel vs the TF1 '
            'graph (bench/inference.py)',
            body,
            command,
        )
        print('appended to bench/RESULTS.md')


if __name__ == '__main__':
    main()
