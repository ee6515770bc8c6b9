"""`python -m data.lists`: write list files by scanning an official dataset tree.

    python -m data.lists --dataset cityscapes|ade20k --data_dir ROOT --split train|val|test
        [--out FILE] [--label_encoding labelIds|trainIds|ade] [--overwrite] [--allow_missing]

The format is the original ICNet-tensorflow's (`data/list/*.txt`): one sample per line,
`<image> <label>` separated by one space, paths relative to ROOT ('/' separators), sorted.
Unlabelled splits (Cityscapes `test`, whose gtFine labels are placeholders) get one field per
line, the image; the original's reader accepts such lines (it then uses the image path for
both).

Layouts (`icnet_tf.datasets.Layout`):

* Cityscapes, ROOT holding `leftImg8bit/` and `gtFine/`:
  `leftImg8bit/<split>/<city>/<key>_leftImg8bit.png` with
  `gtFine/<split>/<city>/<key>_gtFine_labelIds.png` (default, in every download) or, with
  `--label_encoding trainIds`, `<key>_gtFine_labelTrainIds.png` (made by cityscapesScripts'
  `csCreateTrainIdLabelImgs`; the original's lists use these).
* ADE20K, ROOT = `ADEChallengeData2016/` (as the original's lists) or its parent:
  `images/{training,validation}/<key>.jpg` with `annotations/{training,validation}/<key>.png`
  (`--split train|val`; the challenge's test images come without labels and a separate tree).

Every image without its label and every label without its image is reported on its own line
(`<file>: no label <expected>`); then the exit status is 1 and nothing is written, unless
`--allow_missing`, which writes the complete pairs. `--out` defaults to
`ROOT/list/<dataset>_<split>_list.txt`. The list is written to a temporary name and renamed;
an existing list is replaced only with `--overwrite`.
"""

import os
import sys

from converters.errors import UserError
from icnet_tf.datasets import DATASETS, scan_pairs


def list_lines(pairs):
    """[(image, label or None)] -> the list file's lines (without newlines)."""
    for pair in pairs:
        for path in pair:
            if path is not None and any(c.isspace() for c in path):
                raise UserError(f'{path}: contains whitespace, which the list format cannot hold')
    return [image if label is None else f'{image} {label}' for image, label in pairs]


def write_list(path, lines, overwrite=False):
    """Write `lines` to `path` via a temporary file and a rename; never replace an existing
    file unless `overwrite`."""
    if os.path.lexists(path) and not overwrite:
        raise UserError(f'{path}: exists (pass --overwrite to replace it)')
    folder = os.path.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.writelines(line + '\n' for line in lines)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def make_list(
    dataset,
    data_dir,
    split,
    out=None,
    *,
    label_encoding=None,
    overwrite=False,
    allow_missing=False,
    stream=None,
):
    """Scan, report unmatched files on `stream` (one line each), write the list.

    Returns `(out_path, number_of_lines, problems)`. Raises UserError when files are
    unmatched (after reporting them) unless `allow_missing`.
    """
    stream = stream or sys.stderr
    if dataset not in DATASETS:
        raise UserError(f'--dataset {dataset!r}: choose one of {", ".join(DATASETS)}')
    spec = DATASETS[dataset]
    out = out or os.path.join(data_dir, 'list', f'{dataset}_{split}_list.txt')
    if os.path.lexists(out) and not overwrite:  # before the scan: fail fast
        raise UserError(f'{out}: exists (pass --overwrite to replace it)')
    pairs, problems = scan_pairs(spec, data_dir, split, label_encoding)
    for line in problems:
        print(f'{"warning" if allow_missing else "error"}: {line}', file=stream)
    if problems and not allow_missing:
        raise UserError(
            f'{data_dir}: {len(problems)} unmatched files (listed above); nothing written '
            '(--allow_missing writes the complete pairs)'
        )
    if not pairs:
        raise UserError(f'{data_dir}: no complete {split} pairs; nothing written')
    write_list(out, list_lines(pairs), overwrite)
    return out, len(pairs), problems


def main(argv):
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
    out, count, problems = make_list(
        FLAGS.dataset,
        FLAGS.data_dir,
        FLAGS.split,
        FLAGS.out,
        label_encoding=FLAGS.label_encoding,
        overwrite=FLAGS.overwrite,
        allow_missing=FLAGS.allow_missing,
    )
    skipped = f' ({len(problems)} unmatched files skipped)' if problems else ''
    print(f'wrote {count} lines to {out}{skipped}')


if __name__ == '__main__':
    from absl import flags

    from icnet_tf import cli

    flags.DEFINE_enum('dataset', None, list(DATASETS), 'which official tree to scan')
    flags.DEFINE_string('data_dir', None, 'the dataset root (list paths are relative to it)')
    flags.DEFINE_enum('split', None, ['train', 'val', 'test'], 'which split to list')
    flags.DEFINE_string('out', None, 'list file (default ROOT/list/<dataset>_<split>_list.txt)')
    flags.DEFINE_string(
        'label_encoding',
        None,
        'label files to pair: Cityscapes labelIds (default) or trainIds; ADE20K ade',
    )
    flags.DEFINE_bool('overwrite', False, 'replace an existing list file')
    flags.DEFINE_bool('allow_missing', False, 'write the complete pairs despite unmatched files')
    flags.mark_flags_as_required(['dataset', 'data_dir', 'split'])
    cli.run(main)
