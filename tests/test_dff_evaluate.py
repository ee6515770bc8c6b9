"""dff_tf.evaluate helpers: the key-interval score and the report columns."""

import numpy as np
import pytest

from dff_tf.evaluate import BASELINE, add_interval, metrics, spread, summary


def _cm(rng):
    return rng.integers(0, 50, (3, 3)).astype(np.int64)


def test_key_interval_sums_distances_zero_to_l_minus_one():
    rng = np.random.default_rng(0)
    cms = {BASELINE: _cm(rng), 1: _cm(rng), 2: _cm(rng), 3: _cm(rng), 9: _cm(rng)}
    out = add_interval(cms, 4)
    np.testing.assert_array_equal(out['l=4'], cms[BASELINE] + cms[1] + cms[2] + cms[3])
    assert list(out)[:5] == list(cms)  # the inputs are kept, in order
    with pytest.raises(ValueError, match=r'\[4\]'):
        add_interval(cms, 5)  # distance 4 was not evaluated


def test_report_and_metrics_name_the_interval_column():
    rng = np.random.default_rng(1)
    cms = add_interval({BASELINE: _cm(rng), 1: _cm(rng)}, 2)
    speed = dict(
        samples={'key': 3, 'propagate': 3},
        key_fps=10.0,
        propagate_fps=20.0,
        key_interval=2,
        overall_fps=15.0,
    )
    header = summary(cms, speed).splitlines()[0].split()
    assert header[2:] == ['per-frame', 'd=1', 'l=2']
    out = metrics(cms, speed, 3, {})
    # mIoU of the summed matrix, computed here from its definition
    cm = cms['l=2'].astype(float)
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    assert out['key_interval_2']['mIoU'] == pytest.approx(iou.mean())
    assert set(out) >= {'per-frame', 'distance_1', 'key_interval_2'}


def test_max_samples_spread_over_the_list():
    assert spread(list(range(10)), 0) == list(range(10))
    assert spread(list(range(10)), 20) == list(range(10))
    assert spread(list(range(63)), 3) == [0, 21, 42]  # one frame from each toy video
    assert spread(list(range(10)), 4) == [0, 2, 5, 7]
