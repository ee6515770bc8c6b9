"""`icnet_tf.datasets`: the presets against their public sources, round trips, `others`,
`get_dataset` conflicts, and the official Cityscapes evaluator on predictions we write.

Truth comes from outside this repository: the `cityscapesscripts` package (2.3.0, the official
tables and `evalPixelLevelSemanticLabeling`) and, for ADE20K, `tests/data/ade20k_reference.json`
extracted from CSAIL's `color150.mat` / `objectInfo150.txt` by
`tests/golden/make_ade20k_golden.py`.
"""

import glob
import json
import os

import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image

from converters.errors import UserError
from icnet_tf import datasets, palette
from icnet_tf.datasets import ADE20K, CITYSCAPES, get_dataset, others
from icnet_tf.labels import read_label, write_label_png
from icnet_tf.metrics import confusion_matrix, scores

DATA = os.path.join(os.path.dirname(__file__), 'data')
EVALUATED = [label for label in cs_labels.labels if not label.ignoreInEval]


def official_train_id(label):
    return 255 if label.trainId in (255, -1) else label.trainId


# ---------------------------------------------------------------------------------- Cityscapes
def test_cityscapes_table_is_the_official_one():
    ours = {row[1]: row for row in datasets.CITYSCAPES_LABELS}
    assert len(ours) == len(cs_labels.labels) == 35
    for label in cs_labels.labels:
        name, label_id, train_id, category, colour = ours[label.id]
        assert (name, category, colour) == (label.name, label.category, label.color)
        assert train_id == official_train_id(label), label.name


def test_cityscapes_lookup_tables_against_cityscapesscripts():
    ids = np.arange(34, dtype=np.uint8)
    expected = [official_train_id(cs_labels.id2label[i]) for i in range(34)]
    assert CITYSCAPES.to_train_ids(ids, 'labelIds').tolist() == expected
    train_ids = np.arange(19)
    expected_ids = [cs_labels.trainId2label[k].id for k in range(19)]
    assert CITYSCAPES.from_train_ids(train_ids, 'labelIds').tolist() == expected_ids
    assert CITYSCAPES.from_train_ids(np.array([255]), 'labelIds').tolist() == [
        cs_labels.name2label['unlabeled'].id
    ]
    # ids beyond 33 and trainIds beyond 18 (other than 255) are not part of the encodings
    for raw, encoding in (([34], 'labelIds'), ([19], 'trainIds'), ([254], 'trainIds')):
        with pytest.raises(UserError, match=r'x\.png: values \[\d+\] are not cityscapes'):
            CITYSCAPES.to_train_ids(np.array(raw, np.uint8), encoding, 'x.png')


def test_cityscapes_names_colours_categories_against_cityscapesscripts():
    by_train = {label.trainId: label for label in EVALUATED}
    assert CITYSCAPES.class_names == tuple(by_train[k].name for k in range(19))
    assert CITYSCAPES.palette.tolist() == [list(by_train[k].color) for k in range(19)]
    official = [c for c in cs_labels.category2labels if c != 'void']
    assert list(CITYSCAPES.categories) == official
    categories = [CITYSCAPES.categories[c] for c in CITYSCAPES.category_of]
    assert categories == [by_train[k].category for k in range(19)]
    assert CITYSCAPES.ignore_label == 255 and CITYSCAPES.num_classes == 19
    # the original's evaluation protocol (utils/config.py, image_reader._eval_preprocess)
    assert (CITYSCAPES.eval_size, CITYSCAPES.eval_resize) == ((1025, 2049), 'pad')
    assert (ADE20K.eval_size, ADE20K.eval_resize) == ((480, 480), 'resize')


def test_palette_module_reads_the_one_source():
    assert palette.CLASS_NAMES is CITYSCAPES.class_names
    assert palette.CITYSCAPES is CITYSCAPES.palette
    assert palette.PALETTES['ade20k'] is ADE20K.palette
    with pytest.raises(ValueError):
        CITYSCAPES.palette[0, 0] = 1  # shared tables are read-only


def test_round_trips():
    # Cityscapes: every train id survives train -> labelIds -> train; every evaluated labelId
    # survives labelIds -> train -> labelIds; the others all land on ignore.
    train = np.array([*range(19), 255])
    for encoding in ('labelIds', 'trainIds'):
        stored = CITYSCAPES.from_train_ids(train, encoding)
        assert CITYSCAPES.to_train_ids(stored, encoding).tolist() == train.tolist()
    evaluated = np.array([label.id for label in EVALUATED])
    back = CITYSCAPES.from_train_ids(CITYSCAPES.to_train_ids(evaluated, 'labelIds'), 'labelIds')
    assert back.tolist() == evaluated.tolist()
    # ADE20K: stored 0..150 <-> train ids (0 = other = ignore, k -> k - 1)
    stored = np.arange(151)
    train = ADE20K.to_train_ids(stored, 'ade')
    assert train.tolist() == [255, *range(150)]
    assert ADE20K.from_train_ids(train, 'ade').tolist() == stored.tolist()
    with pytest.raises(UserError, match=r'a\.png: values \[151\]'):
        ADE20K.to_train_ids(np.array([151]), 'ade', 'a.png')
    # others: identity, ignore included; a train id that is neither a class nor ignore refused
    spec = others(7, ignore_label=200)
    values = np.array([0, 6, 200])
    assert spec.to_train_ids(values, 'trainIds').tolist() == values.tolist()
    assert spec.from_train_ids(values, 'trainIds').tolist() == values.tolist()
    with pytest.raises(UserError, match=r'train ids \[7\] are neither'):
        spec.from_train_ids(np.array([7]), 'trainIds')


# -------------------------------------------------------------------------------------- ADE20K
def test_ade20k_against_the_csail_files():
    with open(os.path.join(DATA, 'ade20k_reference.json'), encoding='utf-8') as f:
        reference = json.load(f)
    assert ADE20K.num_classes == 150 and ADE20K.ignore_label == 255
    assert ADE20K.palette.tolist() == reference['colors']
    for k, (name, synonyms) in enumerate(zip(ADE20K.class_names, reference['synonyms'])):
        assert name in synonyms, (k, name, synonyms)
    assert len(set(ADE20K.class_names)) == 150
    # the standard table gives road (6) and skyscraper (48) the same colour, and only those
    colours = [tuple(c) for c in ADE20K.palette.tolist()]
    shared = {c for c in colours if colours.count(c) > 1}
    assert shared == {(140, 140, 140)}
    assert [k for k, c in enumerate(colours) if c in shared] == [6, 48]


# ------------------------------------------------------------------------- others, get_dataset
def test_others_generated_names_and_palette():
    spec = others(300, ignore_label=1000)
    assert spec.class_names[:2] == ('class_0', 'class_1') and spec.num_classes == 300
    colours = {tuple(c) for c in spec.palette.tolist()}
    assert len(colours) == 300 and (0, 0, 0) not in colours  # distinct, none looks like ignore
    assert np.array_equal(others(300, 1000).palette, spec.palette)  # deterministic
    assert spec.label_dtype == np.int32 and others(5).label_dtype == np.uint8


def test_others_names_json(tmp_path):
    path = tmp_path / 'classes.json'
    classes = [{'name': 'sea', 'color': [0, 0, 255]}, {'name': 'land', 'color': [0, 255, 0]}]
    path.write_text(json.dumps({'classes': classes}))
    spec = get_dataset('others', names_json=str(path))
    assert spec.class_names == ('sea', 'land') and spec.ignore_label == 255
    assert spec.palette.tolist() == [[0, 0, 255], [0, 255, 0]]
    assert get_dataset('others', num_classes=2, names_json=str(path)).num_classes == 2
    with pytest.raises(UserError, match=r'classes\.json: 2 classes, but --num_classes is 3'):
        get_dataset('others', num_classes=3, names_json=str(path))


@pytest.mark.parametrize(
    'content, message',
    [
        (None, 'no such class names file'),
        ('{"classes": [', 'not valid JSON'),
        ('[1, 2]', 'expected an object'),
        ('{"classes": []}', '"classes" is empty'),
        ('{"classes": [3]}', r'classes\[0\]: expected an object'),
        ('{"classes": [{"name": "", "color": [1, 2, 3]}]}', 'non-empty string'),
        ('{"classes": [{"name": "a", "color": [1, 2]}]}', r'"color" must be \[r, g, b\]'),
        ('{"classes": [{"name": "a", "color": [1, 2, 256]}]}', r'ints in 0\.\.255'),
        ('{"classes": [{"name": "a", "color": [true, 2, 3]}]}', r'ints in 0\.\.255'),
        ('{"classes": [{"name": "a", "color": [1.5, 2, 3]}]}', r'ints in 0\.\.255'),
        (
            '{"classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "a", "color": [3, 2, 1]}]}',
            r'classes\[1\]: duplicate class name',
        ),
    ],
)
def test_others_names_json_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / 'bad.json'
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        others(names_json=str(path))
    text = str(info.value)
    assert text.startswith(str(path)) and '\n' not in text


def test_get_dataset_presets_and_conflicts():
    assert get_dataset('cityscapes') is CITYSCAPES
    assert get_dataset('cityscapes', num_classes=19, ignore_label=255) is CITYSCAPES
    assert get_dataset('ade20k', num_classes=150) is ADE20K
    cases = [
        (dict(name='cityscapes', num_classes=150), '--dataset cityscapes has 19 classes'),
        (dict(name='ade20k', ignore_label=0), 'stored "other" value'),
        (dict(name='cityscapes', names_json='x.json'), 'x.json: --class_names_json applies'),
        (dict(name='pascal'), "--dataset 'pascal' is unknown"),
        (dict(name='others'), 'needs --num_classes'),
        (dict(name='others', num_classes=5, ignore_label=3), '--ignore_label 3 must be outside'),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message) as info:
            get_dataset(**kwargs)
        assert '\n' not in str(info.value)


# ------------------------------------------------- the official evaluator on our written output
def _confusion(gt, pred, n, ignore=255):
    keep = gt != ignore
    return np.bincount(gt[keep] * n + pred[keep], minlength=n * n).reshape(n, n)


def _iou(cm):
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def test_official_cityscapes_evaluation_matches_numpy(tmp_path, monkeypatch):
    """Predictions written by `write_label_png(..., 'labelIds')` into a results folder, scored by
    cityscapesscripts' own evaluator, give the mIoU and category IoU of a NumPy confusion
    matrix over trainIds (ground truth mapped with the package's table, not ours)."""
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval

    rng = np.random.default_rng(0)
    to_train = np.array([official_train_id(cs_labels.id2label[i]) for i in range(34)])
    dataset, results, colours = tmp_path / 'cs', tmp_path / 'results', tmp_path / 'colours'
    results.mkdir()
    colours.mkdir()
    gts, preds = [], []
    for city, frame in [('aachen', 19), ('aachen', 20), ('bochum', 19)]:
        stem = f'{city}_000000_{frame:06d}'
        folder = dataset / 'gtFine' / 'val' / city
        folder.mkdir(parents=True, exist_ok=True)
        gt = rng.integers(0, 34, (24, 40)).astype(np.uint8)  # all 34 ids, void ones included
        Image.fromarray(gt).save(folder / f'{stem}_gtFine_labelIds.png')
        Image.fromarray(gt.astype(np.uint16)).save(folder / f'{stem}_gtFine_instanceIds.png')
        gt_train = to_train[gt]
        pred = np.where(
            (gt_train != 255) & (rng.random(gt.shape) < 0.6),
            gt_train,
            rng.integers(0, 19, gt.shape),
        )
        write_label_png(str(results / f'{stem}_leftImg8bit'), pred, CITYSCAPES, 'labelIds')
        write_label_png(str(colours / f'{stem}_leftImg8bit'), pred, CITYSCAPES, 'color')
        gts.append(gt_train)
        preds.append(pred)

    args = cs_eval.args
    for name, value in dict(
        quiet=True,
        JSONOutput=False,
        evalPixelAccuracy=False,
        predictionPath=None,
        predictionWalk=None,
        groundTruthSearch=str(dataset / 'gtFine' / 'val' / '*' / '*_gtFine_labelIds.png'),
    ).items():
        monkeypatch.setattr(args, name, value)
    monkeypatch.setenv('CITYSCAPES_RESULTS', str(results))
    gt_files = sorted(glob.glob(args.groundTruthSearch))
    pred_files = [cs_eval.getPrediction(args, f) for f in gt_files]  # exits unless exactly one
    assert len(set(pred_files)) == len(gt_files) == 3
    official = cs_eval.evaluateImgLists(pred_files, gt_files, args)

    cm = sum(_confusion(g.astype(np.int64), p, 19) for g, p in zip(gts, preds))
    iou = _iou(cm)
    for k, name in enumerate(CITYSCAPES.class_names):
        assert official['classScores'][name] == pytest.approx(iou[k], abs=1e-12)
    assert official['averageScoreClasses'] == pytest.approx(np.nanmean(iou), abs=1e-12)
    assert 0.4 < official['averageScoreClasses'] < 0.9  # a real mix of hits and misses
    # and the project's own scoring (icnet_tf.metrics) on the same maps
    ours_iou, ours_miou, _ = scores(sum(confusion_matrix(p, g, 19) for g, p in zip(gts, preds)))
    assert ours_miou == pytest.approx(official['averageScoreClasses'], abs=1e-12)
    assert np.allclose(ours_iou, iou, atol=1e-12, equal_nan=True)

    cm7 = sum(
        _confusion(CITYSCAPES.categories_of(g), CITYSCAPES.categories_of(p), 7)
        for g, p in zip(gts, preds)
    )
    cat_iou = _iou(cm7)
    for c, name in enumerate(CITYSCAPES.categories):
        assert official['categoryScores'][name] == pytest.approx(cat_iou[c], abs=1e-12)
    assert official['averageScoreCategories'] == pytest.approx(np.nanmean(cat_iou), abs=1e-12)

    # our reader agrees with the package's table on the ground truth
    assert np.array_equal(read_label(gt_files[0], CITYSCAPES), gts[0])
    # the evaluator needs the labelIds alone in its results folder: colour PNGs next to them
    # would be a second prediction per frame
    write_label_png(
        str(results / 'aachen_000000_000019_leftImg8bit'), preds[0], CITYSCAPES, 'color'
    )
    monkeypatch.setattr(args, 'predictionWalk', None)
    with pytest.raises(SystemExit):
        cs_eval.getPrediction(args, gt_files[0])
