"""ICNet_BN training speed: our training loop against the ORIGINAL TF1 `train.py` graph, side by
side in one run.

    python bench/train_step.py --reference_dir /path/to/ICNet-tensorflow \
        [--batch_size 8] [--crop 720,720] [--rounds 8] [--warmup 1] [--num_images 24]
        [--image_size 1024,2048] [--data_dir D] [--variants ...] [--no_append]

Both sides train ICNet_BN (19 classes, the TF1 pyramid: bins 1, 2, 3, 4 with floor pooling)
from the same seeded weights (`tests/golden/seeded.py`, seed 0) with the original `train.py`
recipe: its cascade loss (0.16 sub4 + 0.4 sub24 + 1.0 conv6_cls, mean cross entropy over
valid pixels, labels nearest-resized to each head) plus 1e-4 L2 on every conv kernel,
`MomentumOptimizer(0.9)` on the poly learning rate (5e-4, power 0.9, 60001 steps),
`--update-mean-var --train-beta-gamma --random-scale --random-mirror`, on toy-city scenes
(`data/toycity.py`, Cityscapes-sized 1024x2048 by default) cropped to --crop.

Variants, each in its own process (its CPU time and peak RSS are its own):

* phase "step" (a fixed batch in memory, no input pipeline):
  - `ours: step`: `icnet_tf.training.Trainer.train_step` (compiled step, float32);
  - `ours: step (mixed_bfloat16)` (and `ours: step (mixed_float16)` when listed): the same
    under `--precision` (not part of the goal: float32 is compared with float32);
  - `TF1: step`: the original graph (its `model.py`/`network.py`/`train.py` read from
    --reference_dir, run under `tf.compat.v1`), the train op and the loss fetches of
    `train.py` on the same batch held in variables.
* phase "pipeline" (each side's own input pipeline from the image files):
  - `ours: fit`: `Trainer.fit`, exactly what `python -m icnet_tf.train` runs per step (our
    `icnet_tf.data.train_dataset` with the labels checked by `check_labels`, TensorBoard
    scalars, progress bar, non-finite check); `ours: fit (mixed_bfloat16)` when listed;
  - `TF1: step + pipeline`: the original graph fed by its own `ImageReader` (tf.data: parse,
    scale, mirror, crop with 8 parallel calls, shuffle 500, batch, repeat);
  - `TF1: train.py`: what its loop really runs each step: also the validation loss
    (`val_reduced_loss`, fetched every step) of a second `ICNet_BN` on the same variables fed
    by `ImageReader(cfg, mode='eval')`. With train.py's config (`is_training=True`) that reader
    builds the training pipeline over the validation list (random scale, mirror, crops, batch,
    repeat), so each step also runs a forward pass of a batch of validation crops (in training
    mode: its batch norm updates the moving statistics too). The 2 toy validation scenes are
    fewer than a batch (`drop_remainder` would leave none): the list is repeated to a batch.

Each phase starts its workers together; then every worker runs --warmup untimed rounds and
--rounds timed rounds, interleaved (one round of each variant in turn, the order rotating every
round), so a busy shared machine slows every variant alike. A round is one epoch of the
original's pipeline (--num_images / --batch_size steps) for every variant. Reported: medians
over the rounds of the wall time per step (and steps/s), of the CPU seconds per step (process
time of all threads from the start of a round to the start of the next, so work the input
pipeline does between rounds is counted), the ratios ours/TF1 from the medians and per round
(median [min-max]), peak RSS, and the total loss of the first step of each fixed-batch variant
(same weights, same batch: the two graphs must agree).
"""

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402

from bench import common  # noqa: E402

NUM_CLASSES = 19
PSP_BINS = (1, 2, 3, 4)  # the TF1 ICNet_BN pyramid
WEIGHT_SEED = 0
DATA_SEED = 1234
# train.py's TrainConfig and utils/config.py (the values its training uses)
LEARNING_RATE, MOMENTUM, POWER, TRAINING_STEPS, WEIGHT_DECAY = 5e-4, 0.9, 0.9, 60001, 1e-4
IGNORE_LABEL = 255

VARIANTS = {
    'ours: step': dict(phase='step', side='ours', precision='float32'),
    'ours: step (mixed_bfloat16)': dict(phase='step', side='ours', precision='mixed_bfloat16'),
    'ours: step (mixed_float16)': dict(phase='step', side='ours', precision='mixed_float16'),
    'TF1: step': dict(phase='step', side='tf1'),
    'ours: fit': dict(phase='pipeline', side='ours', precision='float32'),
    'ours: fit (mixed_bfloat16)': dict(phase='pipeline', side='ours', precision='mixed_bfloat16'),
    'TF1: step + pipeline': dict(phase='pipeline', side='tf1'),
    'TF1: train.py': dict(phase='pipeline', side='tf1', validation=True),
}
DEFAULT_VARIANTS = (
    'ours: step',
    'ours: step (mixed_bfloat16)',
    'TF1: step',
    'ours: fit',
    'TF1: step + pipeline',
    'TF1: train.py',
)
# (ours, TF1 baseline) pairs whose ratio is reported; the first pair of each phase is the goal
RATIOS = (
    ('ours: step', 'TF1: step'),
    ('ours: step (mixed_bfloat16)', 'TF1: step'),
    ('ours: step (mixed_float16)', 'TF1: step'),
    ('ours: fit', 'TF1: step + pipeline'),
    ('ours: fit', 'TF1: train.py'),
    ('ours: fit (mixed_bfloat16)', 'TF1: step + pipeline'),
)
GOALS = (('ours: step', 'TF1: step'), ('ours: fit', 'TF1: step + pipeline'))

# The original's modules, read from --reference_dir at run time (never copied): import name,
# path, package, git blob id at hellochick/ICNet-tensorflow 90a85c4. Import order: train.py
# imports model (which imports network and the utils), utils.config and utils.visualize.
EXTRA_REFERENCE_MODULES = (
    ('utils.config', 'utils/config.py', False, 'b5d7a002049be829491f0aa13d343b69c0b7dd64'),
    ('train', 'train.py', False, 'f63e77e2979793601a1af41a20ba8cf69358f429'),
)


# ---------------------------------------------------------------------------------------------
# The original, under tf.compat.v1
# ---------------------------------------------------------------------------------------------
def load_original(reference_dir):
    """Exec the original's modules (model.py and what it imports, utils/config.py, train.py)
    with `tf` bound to tf.compat.v1, as `tests/golden/make_icnet_golden.py` does for model.py;
    returns {import name: module}. Each file is checked against its git blob id."""
    from tests.golden import make_icnet_golden as golden

    modules = golden.REFERENCE_MODULES + EXTRA_REFERENCE_MODULES
    return golden.load_reference_modules(reference_dir, modules)


def tf1_trainer(args, validation):
    """The original training graph; returns `run_step() -> total loss` (one sess.run)."""
    from tests.golden import make_icnet_golden as golden
    from tests.golden.seeded import seeded_weights

    tf = golden.tf
    tf.disable_v2_behavior()
    mods = load_original(args.reference_dir)
    train, reader_mod, model = mods['train'], mods['utils.image_reader'], mods['model']
    cfg = train.TrainConfig(
        dataset='cityscapes',
        is_training=True,
        filter_scale=1,
        random_scale=True,
        random_mirror=True,
    )
    # utils/config.py's paths and sizes for this run (instance attributes; the class's dicts
    # are left alone)
    cfg.param = dict(
        cfg.param,
        data_dir=args.data_dir,
        train_list=args.train_list,
        eval_list=args.val_list,
    )
    cfg.TRAINING_SIZE = list(args.crop)
    cfg.BATCH_SIZE = args.batch_size
    assert (cfg.LEARNING_RATE, cfg.MOMENTUM, cfg.POWER) == (LEARNING_RATE, MOMENTUM, POWER)
    assert (cfg.TRAINING_STEPS, cfg.WEIGHT_DECAY) == (TRAINING_STEPS, WEIGHT_DECAY)
    graph = tf.Graph()
    fixed = None
    with graph.as_default():
        if args.fixed_batch:
            data = np.load(args.fixed_batch)
            local = [tf.GraphKeys.LOCAL_VARIABLES]  # not the network's (global) variables
            images = tf.Variable(tf.zeros(data['images'].shape), trainable=False, collections=local)
            labels = tf.Variable(
                tf.zeros(data['labels'].shape, tf.uint8), trainable=False, collections=local
            )
            fixed = [(images, data['images']), (labels, data['labels'].astype(np.uint8))]
            reader = types.SimpleNamespace(
                next_image=images.read_value(), next_label=labels.read_value()
            )
        else:
            reader = reader_mod.ImageReader(cfg=cfg, mode='train')
        train_net = model.ICNet_BN(image_reader=reader, cfg=cfg, mode='train')
        shapes = golden.param_shapes(graph)  # before the optimizer adds its slots
        loss_sub4, loss_sub24, loss_sub124, reduced_loss = train.create_losses(
            train_net, train_net.labels, cfg
        )
        fetches = [reduced_loss, loss_sub4, loss_sub24, loss_sub124]
        if validation:  # as train.py: the validation network reuses the variables
            with tf.variable_scope('', reuse=True):
                val_reader = reader_mod.ImageReader(cfg, mode='eval')
                val_net = model.ICNet_BN(image_reader=val_reader, cfg=cfg, mode='train')
                fetches.append(train.create_losses(val_net, val_net.labels, cfg)[3])
        # train.py main(), with --update-mean-var --train-beta-gamma
        base_lr = tf.constant(cfg.LEARNING_RATE)
        step_ph = tf.placeholder(dtype=tf.float32, shape=())
        learning_rate = tf.scalar_mul(
            base_lr, tf.pow((1 - step_ph / cfg.TRAINING_STEPS), cfg.POWER)
        )
        all_trainable = tf.trainable_variables()
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.control_dependencies(update_ops):
            opt_conv = tf.train.MomentumOptimizer(learning_rate, cfg.MOMENTUM)
            grads = tf.gradients(reduced_loss, all_trainable)
            train_op = opt_conv.apply_gradients(zip(grads, all_trainable))
        train_net.create_session()  # the original's session (allow_growth) and initialisation
        sess = train_net.sess
        for var, value in fixed or ():
            var.load(value, sess)
        weights = seeded_weights(shapes, seed=WEIGHT_SEED)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'seeded_weights.npy')
            np.save(path, weights, allow_pickle=True)
            with golden.numpy_load_allow_pickle():
                train_net.load_npy(path, sess)  # the original's own loader
    step = [0]

    def run_step():
        values = sess.run(fetches + [train_op], feed_dict={step_ph: step[0]})
        if validation:  # train.py prints every step
            print(
                'step {:d} \t total loss = {:.3f}, sub4 = {:.3f}, sub24 = {:.3f}, sub124 = '
                '{:.3f}, val_loss: {:.3f}'.format(step[0], *values[:5]),
                file=sys.stderr,
            )
        step[0] += 1
        return float(values[0])

    return run_step


# ---------------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------------
def our_network():
    from icnet_tf import ICNet_BN
    from tests.golden.seeded import seeded_weights

    net = ICNet_BN(num_classes=NUM_CLASSES, psp_bins=PSP_BINS, psp_pooling='floor').build()
    net.load(seeded_weights(net.param_shapes(), seed=WEIGHT_SEED), verbose=False)
    return net


def our_trainer(args, precision, snapshot_dir):
    import tensorflow as tf

    from icnet_tf.losses import PolyLR, TF1Momentum
    from icnet_tf.training import Trainer, make_loss_fn, trained_variables

    net = our_network()
    schedule = PolyLR(LEARNING_RATE, TRAINING_STEPS, POWER)
    trainer = Trainer(
        strategy=tf.distribute.get_strategy(),
        model=net,
        optimizer=TF1Momentum(schedule, momentum=MOMENTUM),
        variables=trained_variables(net, True),
        loss_fn=make_loss_fn(
            net,
            ignore_label=IGNORE_LABEL,
            weight_decay=WEIGHT_DECAY,
            update_mean_var=True,
            precision=precision,
        ),
        snapshot_dir=snapshot_dir,
        save_every=10**9,
        precision=precision,
    )
    return net, trainer, schedule


def our_dataset(args, net, pairs, labels):
    from icnet_tf.data import train_dataset

    return lambda input_context: train_dataset(
        pairs,
        preprocess=net.preprocess,
        crop_size=tuple(args.crop),
        random_scale=True,
        random_mirror=True,
        ignore_label=IGNORE_LABEL,
        labels=labels,
        **dict(batch_size=args.batch_size, seed=DATA_SEED, input_context=input_context),
    )


def our_pairs(args):
    from icnet_tf.data import check_labels, read_list
    from icnet_tf.datasets import get_dataset

    pairs = read_list(args.train_list, args.data_dir)
    return pairs, check_labels(pairs, get_dataset('cityscapes'), args.train_list)


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------
class _Quit(Exception):
    """Raised by the fit worker's hook to leave `Trainer.fit`."""


class Protocol:
    """The worker's side: JSON lines on a private copy of stdout (everything else the worker
    prints, TensorFlow's and the progress bar's output included, goes to stderr)."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), 'w', buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self.cpu = time.process_time()

    def send(self, **message):
        self.out.write(json.dumps(message) + '\n')
        self.out.flush()

    @staticmethod
    def command():
        line = sys.stdin.readline()
        return line.strip() or 'quit'

    def finish(self):
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB (Linux)
        self.send(peak_rss_mb=rss)

    def round_done(self, wall, losses):
        """Report a round: wall seconds, CPU seconds since the previous report, losses."""
        cpu = time.process_time()
        self.send(wall=wall, cpu=cpu - self.cpu, losses=losses)
        self.cpu = cpu


def worker(args):
    proto = Protocol()
    spec = VARIANTS[args.worker]
    start = time.perf_counter()
    if spec['phase'] == 'pipeline' and spec['side'] == 'ours':
        return fit_worker(args, spec, proto, start)
    if spec['side'] == 'tf1':
        run_step = tf1_trainer(args, spec.get('validation', False))
    else:
        import tensorflow as tf

        data = np.load(args.fixed_batch)
        batch = (tf.constant(data['images']), tf.constant(data['labels'].astype(np.int32)))
        snapshot_dir = tempfile.mkdtemp(prefix='icnet_train_bench_')  # nothing is saved there
        _, trainer, _ = our_trainer(args, spec['precision'], snapshot_dir)

        def run_step():
            return trainer.train_step(batch)['loss']

    try:
        serve(proto, run_step, args, start)
    finally:
        if spec['side'] == 'ours':
            shutil.rmtree(snapshot_dir, ignore_errors=True)


def serve(proto, run_step, args, start):
    proto.send(ready=True, setup_s=time.perf_counter() - start)
    proto.cpu = time.process_time()
    while proto.command() == 'run':
        t = time.perf_counter()
        losses = [run_step() for _ in range(args.steps_per_round)]
        proto.round_done(time.perf_counter() - t, losses)
    proto.finish()


def fit_worker(args, spec, proto, start):
    """`Trainer.fit` as the training CLI runs it; a hook every round reports and waits."""
    pairs, labels = our_pairs(args)
    with tempfile.TemporaryDirectory() as snapshot_dir:
        net, trainer, schedule = our_trainer(args, spec['precision'], snapshot_dir)
        dataset = our_dataset(args, net, pairs, labels)
        proto.send(ready=True, setup_s=time.perf_counter() - start)
        round_start = [None]
        if proto.command() != 'run':
            return proto.finish()

        def hook(step, writer):
            proto.round_done(time.perf_counter() - round_start[0], [])
            if proto.command() != 'run':
                raise _Quit
            round_start[0] = time.perf_counter()

        proto.cpu = time.process_time()
        round_start[0] = time.perf_counter()
        try:
            trainer.fit(
                dataset,
                10**9,
                hooks=[hook],
                hook_every=args.steps_per_round,
                learning_rate=schedule,
            )
        except _Quit:
            pass
    proto.finish()


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------
class Worker(common.Worker):
    def __init__(self, variant, args, tmp):
        super().__init__(variant, tmp)
        command = [
            sys.executable,
            os.path.abspath(__file__),
            '--worker',
            variant,
            '--data_dir',
            args.data_dir,
            '--train_list',
            args.train_list,
            '--val_list',
            args.val_list,
            '--batch_size',
            str(args.batch_size),
            '--crop',
            f'{args.crop[0]},{args.crop[1]}',
            '--steps_per_round',
            str(args.steps_per_round),
        ]
        if VARIANTS[variant]['phase'] == 'step':
            command += ['--fixed_batch', args.fixed_batch]
        if args.reference_dir:
            command += ['--reference_dir', args.reference_dir]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES='')
        self.start(command, env)
        self.walls, self.cpus, self.losses = [], [], []
        self.setup_s = self.rss = None


def prepare_data(args, tmp):
    """Toy-city scenes (generated unless --data_dir has them), the lists, the fixed batch."""
    from data import toycity

    if not args.data_dir:
        args.data_dir = os.path.join(tmp, 'toycity')
        h, w = args.image_size
        print(f'generating {args.num_images} toy-city scenes of {h}x{w} ...', flush=True)
        run = toycity.Run(args.num_images, 2, h, w, num_videos_train=0, num_videos_val=0)
        toycity.generate(args.data_dir, **dataclasses.asdict(run))
    args.train_list = os.path.join(args.data_dir, 'list', 'train.txt')
    with open(args.train_list) as f:
        num_images = sum(1 for line in f if line.strip())
    args.steps_per_round = args.steps_per_round or max(1, num_images // args.batch_size)
    # train.py's validation pipeline batches with drop_remainder: at least one batch of lines
    with open(os.path.join(args.data_dir, 'list', 'val.txt')) as f:
        val_lines = [line for line in f if line.strip()]
    args.val_list = os.path.join(tmp, 'val_repeated.txt')
    with open(args.val_list, 'w') as f:
        f.writelines(val_lines * -(-args.batch_size // len(val_lines)))
    # the fixed batch: the first batch of our pipeline (what both "step" variants train on)
    from icnet_tf.network import caffe_bgr_input

    pairs, labels = our_pairs(args)
    caffe_net = types.SimpleNamespace(preprocess=caffe_bgr_input)  # ICNet's input convention
    images, label_batch = next(iter(our_dataset(args, caffe_net, pairs, labels)(None)))
    args.fixed_batch = os.path.join(tmp, 'fixed_batch.npz')
    np.savez(args.fixed_batch, images=images.numpy(), labels=label_batch.numpy().astype(np.uint8))
    return num_images


def run_phase(phase, variants, args, tmp):
    """Start the phase's workers, warm up, run the interleaved rounds; returns results."""
    workers = {v: Worker(v, args, tmp) for v in variants}
    results = {}
    for variant, wk in list(workers.items()):
        try:
            wk.setup_s = wk.read()['setup_s']
        except RuntimeError as e:
            results[variant] = {'error': str(e)}
            del workers[variant]
    names = list(workers)
    load_before = os.getloadavg()
    for r in range(args.warmup + args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)] if names else []
        for variant in order:
            wk = workers[variant]
            try:
                timing = wk.ask('run')
            except RuntimeError as e:
                results[variant] = {'error': str(e)}
                names.remove(variant)
                del workers[variant]
                continue
            wk.losses.append(timing['losses'])
            if r >= args.warmup:
                wk.walls.append(timing['wall'] / args.steps_per_round)
                wk.cpus.append(timing['cpu'] / args.steps_per_round)
        print(f'{phase}: round {r + 1}/{args.warmup + args.rounds} done', flush=True)
    load_after = os.getloadavg()
    for variant, wk in workers.items():
        wk.rss = wk.ask('quit')['peak_rss_mb']
        wk.proc.wait()
        first = wk.losses[0][0] if wk.losses and wk.losses[0] else None
        results[variant] = {
            'wall': statistics.median(wk.walls),
            'cpu': statistics.median(wk.cpus),
            'walls': wk.walls,
            'cpus': wk.cpus,
            'rss': wk.rss,
            'setup_s': wk.setup_s,
            'first_loss': first,
        }
    return results, (load_before, load_after)


def ratio_line(ours, ref, results):
    a, b = results.get(ours, {}), results.get(ref, {})
    if 'wall' not in a or 'wall' not in b:
        return None
    per_round = [w_ref / w for w, w_ref in zip(a['walls'], b['walls'])]
    return {
        'wall': b['wall'] / a['wall'],
        'cpu': b['cpu'] / a['cpu'],
        'round_median': statistics.median(per_round),
        'round_min': min(per_round),
        'round_max': max(per_round),
    }


def format_report(results, loads, args, num_images):
    lines = [
        '| phase | variant | steps/s | s/step (wall) | CPU s/step | peak RSS MB '
        '| first-step loss |',
        '|---|---|---:|---:|---:|---:|---:|',
    ]
    for variant in args.variants:
        phase = VARIANTS[variant]['phase']
        r = results.get(variant, {})
        if 'wall' not in r:
            lines.append(f'| {phase} | {variant} | {r.get("error", "not run")} | | | | |')
            continue
        # the first loss only means something on the fixed batch both sides share
        fixed = phase == 'step' and r['first_loss'] is not None
        loss = f'{r["first_loss"]:.5f}' if fixed else '-'
        lines.append(
            f'| {phase} | {variant} | {1 / r["wall"]:.3f} | {r["wall"]:.2f} | {r["cpu"]:.2f} | '
            f'{r["rss"]:.0f} | {loss} |'
        )
    lines += [
        '',
        '| ours / TF1 | speed (wall) | per round: median [min-max] | CPU time |',
        '|---|---:|---:|---:|',
    ]
    verdicts = []
    for ours, ref in RATIOS:
        q = ratio_line(ours, ref, results)
        if q is None:
            continue
        lines.append(
            f'| {ours} / {ref} | {q["wall"]:.2f}x | {q["round_median"]:.2f} '
            f'[{q["round_min"]:.2f}-{q["round_max"]:.2f}] | {q["cpu"]:.2f}x |'
        )
        if (ours, ref) in GOALS:
            met = q['wall'] >= 1.0 and q['cpu'] >= 1.0
            verdicts.append(
                f'{ours} vs {ref}: {q["wall"]:.2f}x wall, {q["cpu"]:.2f}x CPU time -> '
                f'{"MET" if met else "NOT MET"} (goal >= 1.0)'
            )
    a, b = results.get('ours: step', {}), results.get('TF1: step', {})
    if a.get('first_loss') is not None and b.get('first_loss') is not None:
        rel = abs(a['first_loss'] - b['first_loss']) / abs(b['first_loss'])
        verdicts.append(
            f'same weights and batch, first step: total loss {a["first_loss"]:.6f} (ours) vs '
            f'{b["first_loss"]:.6f} (TF1), relative difference {rel:.1e}'
        )
    load_lines = [
        f'{phase}: load average {", ".join(f"{v:.2f}" for v in before)} before the rounds, '
        f'{", ".join(f"{v:.2f}" for v in after)} after'
        for phase, (before, after) in loads.items()
    ]
    notes = (
        f'ICNet_BN, seeded weights, psp_bins {PSP_BINS} (floor), {NUM_CLASSES} classes, batch '
        f'{args.batch_size}, crops {args.crop[0]}x{args.crop[1]} of {num_images} toy-city scenes '
        f'({args.image_size[0]}x{args.image_size[1]} unless --data_dir), random scale and mirror, '
        f'BN statistics and gamma/beta trained; {args.rounds} interleaved rounds of '
        f'{args.steps_per_round} steps after {args.warmup} warm-up round(s), one process per '
        "variant, two phases (fixed batch; each side's input pipeline). CPU s = process time "
        'of all threads.'
    )
    return notes, '\n'.join(lines), load_lines, verdicts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--reference_dir', help='checkout of hellochick/ICNet-tensorflow 90a85c4')
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--crop', default='720,720', help='training crop h,w')
    parser.add_argument('--rounds', type=int, default=8, help='timed rounds (median)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds')
    parser.add_argument('--num_images', type=int, default=24, help='toy-city scenes to generate')
    parser.add_argument('--image_size', default='1024,2048', help='toy-city scene size h,w')
    parser.add_argument('--data_dir', help='an existing toy city (data.toycity output)')
    parser.add_argument(
        '--steps_per_round', type=int, default=0, help='default: one epoch (images / batch)'
    )
    parser.add_argument(
        '--variants',
        default=','.join(DEFAULT_VARIANTS),
        help=f'comma list of: {", ".join(VARIANTS)}',
    )
    parser.add_argument('--no_append', action='store_true', help='do not write bench/RESULTS.md')
    # worker mode (internal)
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--train_list', help=argparse.SUPPRESS)
    parser.add_argument('--val_list', help=argparse.SUPPRESS)
    parser.add_argument('--fixed_batch', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.crop = tuple(int(v) for v in args.crop.split(','))
    args.image_size = tuple(int(v) for v in args.image_size.split(','))
    if args.worker:
        return args
    args.variants = [v.strip() for v in args.variants.split(',') if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f'unknown variant(s) {unknown}; choose from {", ".join(VARIANTS)}')
    needs_tf1 = any(VARIANTS[v]['side'] == 'tf1' for v in args.variants)
    if needs_tf1 and not (
        args.reference_dir and os.path.isfile(os.path.join(args.reference_dir, 'train.py'))
    ):
        parser.error('--reference_dir: a checkout of the original (with train.py) is needed')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    command = 'python ' + ' '.join(
        shlex.quote(a)
        for a in [os.path.relpath(os.path.abspath(__file__), ROOT)]
        + (sys.argv[1:] if argv is None else list(argv))
    )
    start = time.perf_counter()
    results, loads = {}, {}
    with tempfile.TemporaryDirectory(prefix='icnet_train_bench_') as tmp:
        num_images = prepare_data(args, tmp)
        for phase in ('step', 'pipeline'):
            variants = [v for v in args.variants if VARIANTS[v]['phase'] == phase]
            if variants:
                print(f'{phase}: {", ".join(variants)} ...', flush=True)
                found, loads[phase] = run_phase(phase, variants, args, tmp)
                results.update(found)
    notes, table, load_lines, verdicts = format_report(results, loads, args, num_images)
    print(table)
    print('\n'.join(load_lines))
    print('\n'.join(verdicts))
    print(f'total {time.perf_counter() - start:.0f} s')
    if not args.no_append:
        from bench.common import append_results

        body = '\n\n'.join(
            [
                notes,
                table,
                '\n'.join(f'- {line}' for line in load_lines),
                '\n\n'.join(f'**{v}**' for v in verdicts),
            ]
        )
        append_results(
            'Training: ICNet_BN step, ours vs the TF1 train.py graph (bench/train_step.py)',
            body,
            command,
        )
        print('appended to bench/RESULTS.md')


if __name__ == '__main__':
    main()
