"""Scoring segmentations: confusion matrices, IoU, and the evaluation loop over a list.

The confusion matrix counts pixels whose label is not `ignore_label` (rows = ground truth,
columns = prediction); IoU = TP / (TP + FP + FN) per class, mIoU = mean over the classes that
occur in labels or predictions (the others have no defined IoU and are reported as nan).
Category IoU (Cityscapes' 7 categories) comes from the same matrix with rows and columns summed
per category, which is what cityscapesScripts computes from its pixel counts.
"""

import os

import numpy as np

from converters.errors import UserError
from icnet_tf import labels as label_files
from icnet_tf.data import list_lines, sample_place
from icnet_tf.datasets import others
from icnet_tf.predict import Segmenter, read_image
from icnet_tf.progress import Progress


def confusion_matrix(pred, label, num_classes, ignore_label=255):
    """[C, C] counts, rows = ground truth, columns = prediction; ignore pixels skipped."""
    label = np.asarray(label).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    keep = (label != ignore_label) & (label >= 0) & (label < num_classes)
    index = label[keep] * num_classes + pred[keep]
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(cm):
    """Per-class IoU (nan where undefined), mIoU over defined classes, pixel accuracy."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = np.where(union > 0, tp / union, np.nan)
    miou = float(np.nanmean(iou)) if np.any(union > 0) else float('nan')
    accuracy = float(tp.sum() / cm.sum()) if cm.sum() else float('nan')
    return iou, miou, accuracy


def category_matrix(cm, category_of, num_categories):
    """[K, K] confusion of categories: `cm` summed over the classes of each category."""
    onehot = np.zeros((len(category_of), num_categories), np.int64)
    onehot[np.arange(len(category_of)), category_of] = 1
    return onehot.T @ np.asarray(cm, np.int64) @ onehot


def evaluate(
    net,
    pairs,
    *,
    spec=None,
    labels=None,
    num_classes=None,
    ignore_label=255,
    pad_to=None,
    resize_to=None,
    flip=False,
    save_dir=None,
    formats=('trainIds',),
    overwrite=False,
    list_path='list',
    progress=True,
    segmenter=None,
):
    """Confusion matrix of `net` over (image, label) pairs.

    `segmenter`: a `predict.Segmenter` of `net` to reuse (its compiled forward pass is traced
    once; periodic validation passes the same one every time); else one is made from `pad_to`,
    `resize_to` and `flip`.

    Labels are read by meaning: `labels` (a `data.LabelFormat` from `data.check_labels`), or
    `labels.read_label` with `spec` (default: `others(num_classes or net.num_classes,
    ignore_label)`, train ids on disk). With `save_dir` the predictions are written as
    `<save_dir>/<stem>_<fmt>.png` for every fmt of `formats` (`labels.write_label_png`, never
    over a file this run did not write unless `overwrite`).
    """
    if labels is not None:
        spec = labels.spec
    spec = spec or others(num_classes or net.num_classes, ignore_label)
    read = labels.read if labels is not None else lambda p: label_files.read_label(p, spec)
    if segmenter is None:
        segmenter = Segmenter(net, pad_to=pad_to, resize_to=resize_to, flip=flip)
    n = spec.num_classes
    cm = np.zeros((n, n), np.int64)
    stems = label_files.output_stems([image for image, _ in pairs]) if save_dir else {}
    bar = Progress(0, len(pairs)) if progress else None
    lines = list_lines(list_path) if list_path and os.path.isfile(list_path) else None
    for index, (image_path, label_path) in enumerate(pairs):
        place = sample_place(list_path, lines, index)
        try:
            image = read_image(image_path)
            label = read(label_path)
        except UserError as e:  # a file that passed the header checks but does not decode
            raise UserError(f'{place}: {e}') from None
        if label.shape != image.shape[:2]:
            raise UserError(
                f'{place}: label {label.shape} and image '
                f'{image.shape[:2]} sizes differ ({label_path})'
            )
        pred = segmenter(image)
        cm += confusion_matrix(pred, label, n, spec.ignore_label)
        if save_dir:
            base = os.path.join(save_dir, stems[image_path])
            for fmt in formats:
                label_files.write_label_png(base, pred, spec, fmt, rgb=image, overwrite=overwrite)
        if bar:
            bar.update(index + 1, {'mIoU': scores(cm)[1]}, force=index + 1 == len(pairs))
    if bar:
        bar.close()
    return cm


def report(cm, class_names=None, categories=None, category_of=None):
    """Per-class IoU, mIoU and pixel accuracy (in %); with `categories` (names) and
    `category_of` (class -> category index) the category IoU in a column beside the classes
    and the category mIoU under the mIoU (Cityscapes)."""
    iou, miou, accuracy = scores(cm)
    names = list(class_names or [f'class {i}' for i in range(len(iou))])
    width = max(14, *(len(n) for n in names))
    rows = [f'{name:>{width}s}: {value * 100:6.2f}' for name, value in zip(names, iou)]
    tail = [f'{"mIoU":>{width}s}: {miou * 100:6.2f}']
    if categories:
        cat_iou, cat_miou, _ = scores(category_matrix(cm, category_of, len(categories)))
        side = [f'{name:>14s}: {v * 100:6.2f}' for name, v in zip(categories, cat_iou)]
        head = f'{"class IoU":>{width + 8}s}    {"category IoU":>22s}'
        rows = [head] + [
            f'{row}    {side[i]}' if i < len(side) else row for i, row in enumerate(rows)
        ]
        tail.append(f'{"category mIoU":>{width}s}: {cat_miou * 100:6.2f}')
    tail.append(f'{"pixel acc.":>{width}s}: {accuracy * 100:6.2f}')
    return '\n'.join(rows + tail)


def metrics_dict(cm, spec=None):
    """What evaluate writes to metrics.json (IoU per class by name; category IoU if any)."""
    iou, miou, accuracy = scores(cm)
    out = {
        'mIoU': miou,
        'pixel_accuracy': accuracy,
        'iou': [None if np.isnan(v) else float(v) for v in iou],
    }
    if spec is not None:
        out['dataset'] = spec.name
        out['class_names'] = list(spec.class_names)
        if spec.categories:
            cm7 = category_matrix(cm, spec.category_of, len(spec.categories))
            cat_iou, cat_miou, _ = scores(cm7)
            out['category_mIoU'] = cat_miou
            out['category_iou'] = {
                name: None if np.isnan(v) else float(v) for name, v in zip(spec.categories, cat_iou)
            }
    return out
