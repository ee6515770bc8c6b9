"""Training throughput of ICNet_BN with 1 and 2 worker processes, side by side.

    python bench/multiworker.py [--out_dir runs/multiworker] [--batch_size 4]
        [--input_size 256,256] [--warmup 3] [--steps 10] [--repeats 3] [--threads 0]
        [--no_append]

Each configuration runs `icnet_tf.training.Trainer` exactly as `python -m icnet_tf.train`
builds it (ICNet_BN from scratch, --random_mirror --random_scale --update_mean_var
--train_beta_gamma, the sharded toy-city input pipeline) for `warmup + steps` steps, timing
every step with a hook (hooks run after the step, the summaries and any save): the first
`warmup` steps (tracing) are dropped, the median of the remaining step times gives steps/s,
times the global batch images/s. Configurations:

* 1 process, default strategy, global batch B;
* 2 worker processes (MultiWorkerMirroredStrategy, TF_CONFIG on free localhost ports),
  global batch B (B/2 per worker): the same work per step, split;
* 2 worker processes, global batch 2B (B per worker): the same work per worker.

Configurations alternate within each repeat, so a change of the machine's load hits them
alike; reported: the median over repeats of each run's median, and ratios to 1 process.
`--threads N` sets TF's intra- and inter-op threads per process (0: TF's default, all cores).
The toy city (64 scenes, 256x512) is generated into --out_dir if absent.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.common import report, run  # noqa: E402


def worker(args):
    """One training process: train, time each step, write the times (chief only)."""
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from icnet_tf import build_model
    from icnet_tf.data import read_list, train_dataset
    from icnet_tf.losses import PolyLR, TF1Momentum
    from icnet_tf.training import Trainer, make_loss_fn, make_strategy, trained_variables

    strategy = make_strategy(args.strategy)
    crop = tuple(int(v) for v in args.input_size.split(','))
    pairs = read_list(os.path.join(args.data, 'list', 'train.txt'), args.data)
    total = args.warmup + args.steps
    with strategy.scope():
        net = build_model('ICNet_BN', num_classes=19, seed=1234).build()
        optimizer = TF1Momentum(PolyLR(0.01, 10 * total, 0.9), momentum=0.9)
    trainer = Trainer(
        strategy=strategy,
        model=net,
        optimizer=optimizer,
        variables=trained_variables(net, True),
        loss_fn=make_loss_fn(net, ignore_label=255, weight_decay=1e-4, update_mean_var=True),
        snapshot_dir=args.snapshot,
        save_every=10 * total,  # no checkpoint inside the timed steps
    )
    stamps = [time.perf_counter()]

    def timer(step, writer):
        stamps.append(time.perf_counter())

    augment = dict(preprocess=net.preprocess, crop_size=crop, random_scale=True, random_mirror=True)
    dataset = lambda input_context: train_dataset(  # noqa: E731
        pairs, batch_size=args.batch_size, seed=1234, input_context=input_context, **augment
    )
    trainer.fit(dataset, total, hooks=[timer], hook_every=1)
    if trainer.is_chief:
        times = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup : total]
        with open(args.result, 'w') as f:
            json.dump({'step_s': times, 'replicas': strategy.num_replicas_in_sync}, f)


def free_ports(n):
    """n distinct free localhost ports (bound to port 0 together, then released)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def launch(args, workers, batch, log, timeout=3600):
    """Run one configuration; returns the chief's step times in seconds."""
    scratch = tempfile.mkdtemp(prefix='mw_', dir=args.out_dir)
    result = os.path.join(scratch, 'result.json')
    base = [sys.executable, os.path.abspath(__file__), 'worker', '--data', args.data]
    base += ['--snapshot', os.path.join(scratch, 'snap'), '--result', result]
    base += ['--batch_size', str(batch), '--input_size', args.input_size]
    base += ['--warmup', str(args.warmup), '--steps', str(args.steps)]
    base += ['--threads', str(args.threads)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
    procs = []
    if workers == 1:
        cmds = [(base + ['--strategy', 'default'], env)]
    else:
        cluster = {'worker': [f'localhost:{p}' for p in free_ports(workers)]}
        cmds = []
        for i in range(workers):
            config = {'cluster': cluster, 'task': {'type': 'worker', 'index': i}}
            cmds.append(
                (base + ['--strategy', 'multi_worker'], dict(env, TF_CONFIG=json.dumps(config)))
            )
    print(f'$ {workers} process(es), global batch {batch}', flush=True)
    with open(log, 'a') as f:
        for cmd, e in cmds:
            procs.append(
                subprocess.Popen(
                    cmd, cwd=ROOT, env=e, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        deadline = time.time() + timeout
        try:
            for p in procs:
                if p.wait(max(1.0, deadline - time.time())):
                    raise SystemExit(f'a worker failed: see {log}')
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    with open(result) as f:
        out = json.load(f)
    assert out['replicas'] == workers, out
    return out['step_s']


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='command')
    w = sub.add_parser('worker')  # internal: one training process
    for name in ('data', 'snapshot', 'result', 'strategy', 'input_size'):
        w.add_argument(f'--{name}', required=True)
    for name in ('batch_size', 'warmup', 'steps', 'threads'):
        w.add_argument(f'--{name}', type=int, required=True)
    p.add_argument('--out_dir', default=os.path.join(ROOT, 'runs', 'multiworker'))
    p.add_argument('--batch_size', type=int, default=4, help='global batch of 1 process')
    p.add_argument('--input_size', default='256,256')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--no_append', action='store_true', help='do not write bench/RESULTS.md')
    args = p.parse_args()
    if args.command == 'worker':
        return worker(args)

    os.makedirs(args.out_dir, exist_ok=True)
    args.data = os.path.join(args.out_dir, 'data')
    log = os.path.join(args.out_dir, 'log.txt')
    if not os.path.exists(os.path.join(args.data, 'list', 'train.txt')):
        cmd = [sys.executable, '-m', 'data.toycity', '--out_dir', args.data, '--num_train', '64']
        run(cmd + ['--num_val', '0', '--num_videos_train', '0', '--num_videos_val', '0'], log)
    configs = [(1, args.batch_size), (2, args.batch_size), (2, 2 * args.batch_size)]
    medians = {c: [] for c in configs}
    for repeat in range(args.repeats):
        for workers, batch in configs:
            times = launch(args, workers, batch, log)
            medians[workers, batch].append(statistics.median(times))
            print(
                f'  repeat {repeat + 1}: median step {medians[workers, batch][-1]:.3f} s',
                flush=True,
            )

    base = statistics.median(medians[configs[0]])
    rows = [
        '| processes | global batch (per process) | step s (median; per repeat) | steps/s '
        '| images/s | steps/s vs 1 process | images/s vs 1 process |',
        '|---|---|---|---|---|---|---|',
    ]
    base_images = args.batch_size / base
    for workers, batch in configs:
        step = statistics.median(medians[workers, batch])
        each = ', '.join(f'{m:.2f}' for m in medians[workers, batch])
        rows.append(
            f'| {workers} | {batch} ({batch // workers}) | {step:.2f} ({each}) | {1 / step:.3f} | '
            f'{batch / step:.2f} | {base / step:.2f}x | {batch / step / base_images:.2f}x |'
        )
    crop = args.input_size.replace(',', 'x')
    notes = (
        f'\nICNet_BN, crop {crop}, toy city 256x512; {args.steps} timed steps after {args.warmup} '
        f'warm-up steps per run, {args.repeats} repeats; TF threads per process: '
        f'{args.threads or "default"}. All processes on this one machine (localhost gRPC).'
    )
    report(
        'Training throughput, 1 vs 2 worker processes (bench/multiworker.py)',
        '\n'.join(rows) + '\n' + notes,
        'bench/multiworker.py',
        append=not args.no_append,
    )


if __name__ == '__main__':
    main()
