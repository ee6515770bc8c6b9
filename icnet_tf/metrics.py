"""Scoring segmentations: confusion matrices, IoU, and the evaluation loop over a list.

The confusion matrix counts pixels whose label is not `ignore_label` (rows = ground truth,
columns = prediction); IoU = TP / (TP + FP + FN) per class, mIoU = mean over the classes that
occur in labels or predictions (the others have no defined IoU and are reported as nan).
"""

import os

import numpy as np
from PIL import Image

from converters.errors import UserError
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


def evaluate(
    net,
    pairs,
    *,
    num_classes,
    ignore_label=255,
    pad_to=None,
    flip=False,
    save_dir=None,
    list_path='list',
    progress=True,
):
    """Confusion matrix of `net` over (image, label) pairs; optionally writes trainId PNGs."""
    segmenter = Segmenter(net, pad_to=pad_to, flip=flip)
    cm = np.zeros((num_classes, num_classes), np.int64)
    bar = Progress(0, len(pairs)) if progress else None
    for index, (image_path, label_path) in enumerate(pairs):
        image = read_image(image_path)
        with Image.open(label_path) as img:
            label = np.asarray(img)
        if label.shape != image.shape[:2]:
            raise UserError(
                f'{list_path}:{index + 1}: label {label.shape} and image '
                f'{image.shape[:2]} sizes differ ({label_path})'
            )
        pred = segmenter(image)
        cm += confusion_matrix(pred, label, num_classes, ignore_label)
        if save_dir:
            name = os.path.splitext(os.path.basename(image_path))[0] + '_trainIds.png'
            Image.fromarray(pred.astype(np.uint8)).save(os.path.join(save_dir, name))
        if bar:
            bar.update(index + 1, {'mIoU': scores(cm)[1]}, force=index + 1 == len(pairs))
    if bar:
        bar.close()
    return cm


def report(cm, class_names=None):
    iou, miou, accuracy = scores(cm)
    names = class_names or [f'class {i}' for i in range(len(iou))]
    lines = [f'{name:>14s}: {value * 100:6.2f}' for name, value in zip(names, iou)]
    lines += [f'{"mIoU":>14s}: {miou * 100:6.2f}', f'{"pixel acc.":>14s}: {accuracy * 100:6.2f}']
    return '\n'.join(lines)
