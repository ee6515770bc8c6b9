"""Generate golden FlowNetS tensors from the real FlowNetPytorch code (run once, offline).

The reference is ClementPinard/FlowNetPytorch at HEAD d5f3292 (``models/__init__.py``,
``models/FlowNetS.py``, ``models/FlowNetC.py``, ``models/util.py``) run with torch (2.13.0 CPU
here). None of its code lives in this repository: its ``models`` package is imported from
``--reference_dir`` at run time after each file is checked against its git blob id at that
commit. Extract it anywhere outside the repository, e.g.::

    mkdir -p /tmp/fnp && git --git-dir=<FlowNetPytorch git dir> archive d5f3292 models \
        | tar -x -C /tmp/fnp
    python tests/golden/make_flownet_golden.py --reference_dir /tmp/fnp --out_dir tests/data

(``models/util.py`` warns that ``spatial_correlation_sampler`` is missing; only FlowNetC needs
it, FlowNetS does not.)

What is run, for each variant (``plain``: ``models.flownets()``, ``bn``: ``models.flownets_bn()``):

* weights: ``tests/golden/seeded.py`` ``seeded_torch_state_dict(shapes, seed=0)`` over the
  model's own state-dict shapes (``num_batches_tracked`` = 0), loaded with
  ``load_state_dict(strict=True)`` and checked to equal the seeded arrays exactly;
* input: ``seeded_uniform((1, 6, 80, 112), seed=1, low=-0.5, high=0.5)`` (NCHW, a normalised
  image pair; 80x112 is not a multiple of 64, so ``crop_like`` trims at three levels);
* eval mode, ``torch.no_grad()``: the model's return value (flow2) plus flow3..flow6 captured
  with forward hooks on ``predict_flow3..6``;
* ``bn`` only, train mode (batch statistics): the five outputs the model returns in train mode
  (train mode of ``plain`` computes the same numbers as eval mode, so it is not stored).

Output: ``<out_dir>/flownet_golden_{plain,bn}.npz`` with float32 arrays ``eval_flow2`` ..
``eval_flow6`` (and ``train_flow2`` .. ``train_flow6`` for bn), all NCHW exactly as the
reference returns them, and ``meta``: a JSON string with the reference commit and blob ids,
versions, seeds, the input's shape/range and the ordered state-dict keys with their shapes.
"""

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import platform
import sys
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.golden.seeded import seeded_torch_state_dict, seeded_uniform  # noqa: E402

REFERENCE_REPO = 'ClementPinard/FlowNetPytorch'
REFERENCE_COMMIT = 'd5f3292a738209d5f3ea450cf714265034fd033a'
REFERENCE_BLOBS = {
    'models/__init__.py': '4ba2cf9c48a252bdecc84ad102254402f7ff6671',
    'models/FlowNetS.py': '77a73661930176348901385954f16a6d297503b3',
    'models/FlowNetC.py': '1c54b8857561b996b9566bbdc549f7cb8a674511',
    'models/util.py': '20af8a3f54d3b20fce4c7c8a7aa9c0731393859e',
}
VARIANTS = {'plain': 'flownets', 'bn': 'flownets_bn'}
WEIGHT_SEED = 0
INPUT_SEED = 1
INPUT_SHAPE = (1, 6, 80, 112)  # NCHW
INPUT_RANGE = (-0.5, 0.5)
LEVELS = (2, 3, 4, 5, 6)


def git_blob_id(path):
    with open(path, 'rb') as f:
        data = f.read()
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def check_reference(reference_dir):
    for rel, blob in REFERENCE_BLOBS.items():
        path = os.path.join(reference_dir, rel)
        if not os.path.isfile(path):
            sys.exit(f'{path}: missing (extract {REFERENCE_REPO} {REFERENCE_COMMIT[:7]} there)')
        have = git_blob_id(path)
        if have != blob:
            sys.exit(f'{path}: git blob {have} is not the one at {REFERENCE_COMMIT[:7]} ({blob})')


@contextlib.contextmanager
def reference_models(reference_dir):
    """Import the reference `models` package from `reference_dir`; restore sys afterwards."""
    saved_path, saved_modules = list(sys.path), dict(sys.modules)
    sys.path.insert(0, os.path.abspath(reference_dir))
    for name in [m for m in sys.modules if m == 'models' or m.startswith('models.')]:
        del sys.modules[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', ImportWarning)  # no spatial_correlation_sampler
            models = importlib.import_module('models')
        assert os.path.dirname(os.path.abspath(models.__file__)) == os.path.join(
            os.path.abspath(reference_dir), 'models'
        ), models.__file__
        yield models
    finally:
        sys.path[:] = saved_path
        for name in list(sys.modules):
            if name not in saved_modules:
                del sys.modules[name]


def run_variant(models, variant):
    import torch

    model = getattr(models, VARIANTS[variant])()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    seeded = seeded_torch_state_dict(shapes, WEIGHT_SEED)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in seeded.items()}, strict=True)
    for k, v in model.state_dict().items():
        assert np.array_equal(v.numpy(), seeded[k]), k

    x = torch.from_numpy(seeded_uniform(INPUT_SHAPE, INPUT_SEED, *INPUT_RANGE))
    captured = {}
    hooks = [
        getattr(model, f'predict_flow{lv}').register_forward_hook(
            lambda m, i, o, lv=lv: captured.__setitem__(lv, o.detach().clone())
        )
        for lv in LEVELS[1:]
    ]
    arrays = {}
    model.eval()
    with torch.no_grad():
        flow2 = model(x)
    for h in hooks:
        h.remove()
    arrays['eval_flow2'] = flow2.numpy()
    for lv in LEVELS[1:]:
        arrays[f'eval_flow{lv}'] = captured[lv].numpy()
    if variant == 'bn':
        model.train()
        with torch.no_grad():
            outs = model(x)
        for lv, out in zip(LEVELS, outs):
            arrays[f'train_flow{lv}'] = out.numpy()
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    meta = dict(
        reference_repo=REFERENCE_REPO,
        reference_commit=REFERENCE_COMMIT,
        reference_blobs=REFERENCE_BLOBS,
        constructor=f'models.{VARIANTS[variant]}()',
        variant=variant,
        torch_version=torch.__version__,
        numpy_version=np.__version__,
        python_version=platform.python_version(),
        weight_seed=WEIGHT_SEED,
        weights='tests/golden/seeded.py seeded_torch_state_dict(state_dict shapes, weight_seed)',
        input='seeded_uniform(input_shape, input_seed, *input_range)',
        input_seed=INPUT_SEED,
        input_shape=list(INPUT_SHAPE),
        input_layout='NCHW',
        input_range=list(INPUT_RANGE),
        output_layout='NCHW',
        state_dict_keys=list(shapes),
        state_dict_shapes={k: list(s) for k, s in shapes.items()},
        param_count=int(sum(p.numel() for p in model.parameters())),
        outputs={k: list(v.shape) for k, v in arrays.items()},
        max_abs={k: float(np.abs(v).max()) for k, v in arrays.items()},
    )
    return arrays, meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--reference_dir', required=True, help='directory holding the reference models/ package'
    )
    p.add_argument('--out_dir', required=True)
    args = p.parse_args(argv)
    check_reference(args.reference_dir)
    os.makedirs(args.out_dir, exist_ok=True)
    with reference_models(args.reference_dir) as models:
        for variant in VARIANTS:
            arrays, meta = run_variant(models, variant)
            path = os.path.join(args.out_dir, f'flownet_golden_{variant}.npz')
            np.savez_compressed(path, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
            print(
                f'wrote {path} ({os.path.getsize(path)} bytes): '
                + ', '.join(f'{k} {tuple(v.shape)}' for k, v in arrays.items())
            )


if __name__ == '__main__':
    main()
