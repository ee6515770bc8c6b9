"""`icnet_tf.cli`: the shared dataset flag group (presets, explicit flags, what a model file
recorded) and the output helpers, on private absl FlagValues (no subprocess)."""

import json

import pytest
from absl import flags

from converters.errors import UserError
from icnet_tf import cli
from icnet_tf.datasets import ADE20K, CITYSCAPES, to_record


def spec_of(*argv, **kwargs):
    fv = flags.FlagValues()
    cli.define_dataset_flags(flag_values=fv)
    fv(['prog', *argv])
    return cli.dataset_spec(flag_values=fv, **kwargs)


def test_presets_and_the_default():
    assert spec_of() is CITYSCAPES
    assert spec_of('--dataset', 'ade20k') is ADE20K
    assert spec_of('--dataset', 'ade20k', '--num_classes', '150', '--ignore_label', '255') is ADE20K


def test_explicit_preset_and_flag_conflicts_are_one_line():
    for argv, fragment in [
        (('--dataset', 'ade20k', '--num_classes', '19'), 'has 150 classes but --num_classes is 19'),
        (('--dataset', 'ade20k', '--ignore_label', '0'), '0 is the stored "other" value'),
        (('--dataset', 'cityscapes', '--num_classes', '5'), 'use --dataset others'),
        (('--dataset', 'others',), 'needs --num_classes or --class_names_json'),
    ]:  # fmt: skip
        with pytest.raises(UserError, match=fragment) as info:
            spec_of(*argv)
        assert '\n' not in str(info.value)


def test_explicit_class_count_overrides_the_default_preset(tmp_path):
    spec = spec_of('--num_classes', '5')
    assert spec.name == 'others' and spec.num_classes == 5 and spec.ignore_label == 255
    assert spec_of('--num_classes', '19', '--ignore_label', '254').ignore_label == 254
    names = tmp_path / 'names.json'
    names.write_text(json.dumps({'classes': [{'name': 'a', 'color': [1, 2, 3]}]}))
    spec = spec_of('--class_names_json', str(names))
    assert spec.class_names == ('a',) and spec.palette.tolist() == [[1, 2, 3]]


def test_what_a_model_file_holds_and_recorded():
    # a SavedModel / DFF snapshot with 150 classes and no record: --dataset must agree
    with pytest.raises(UserError, match='cityscapes has 19 classes but saved/ holds 150'):
        spec_of('--dataset', 'cityscapes', held_classes=150, holder='saved/')
    assert spec_of('--dataset', 'ade20k', held_classes=150) is ADE20K
    assert spec_of(held_classes=7).num_classes == 7  # no --dataset: its own dataset
    # the recorded dataset is the default of --dataset, an explicit one wins
    assert spec_of(held_classes=150, record=to_record(ADE20K)) is ADE20K
    own = spec_of('--num_classes', '3')
    back = spec_of(held_classes=3, record=to_record(own))
    assert back.class_names == own.class_names and (back.palette == own.palette).all()
    with pytest.raises(UserError, match='ade20k has 150 classes but m holds 19'):
        spec_of('--dataset', 'ade20k', held_classes=19, record=to_record(CITYSCAPES), holder='m')


def test_dataset_json_next_to_a_checkpoint(tmp_path):
    cli.write_json(str(tmp_path / cli.DATASET_FILE), to_record(ADE20K))
    assert spec_of(restore_from=str(tmp_path)) is ADE20K
    (tmp_path / 'ckpt-3.index').write_bytes(b'')
    assert spec_of(restore_from=str(tmp_path / 'ckpt-3')) is ADE20K
    assert spec_of('--dataset', 'cityscapes', restore_from=str(tmp_path)) is CITYSCAPES
    (tmp_path / cli.DATASET_FILE).write_text('{not json')
    with pytest.raises(UserError, match='dataset.json: unreadable dataset record'):
        spec_of(restore_from=str(tmp_path))


def test_save_dir_and_existing_files(tmp_path):
    image = tmp_path / 'in' / 'a.png'
    with pytest.raises(UserError, match='is the folder of the input'):
        cli.check_save_dir(str(tmp_path / 'in' / '.'), [str(image)])
    cli.check_save_dir(str(tmp_path / 'out'), [str(image)])
    (tmp_path / 'metrics.json').write_text('precious')
    with pytest.raises(UserError, match=r'^--save_dir .*metrics.json: exists and is a file'):
        cli.check_save_dir(str(tmp_path / 'metrics.json'), [str(image)])
    with pytest.raises(UserError, match=r'metrics.json: exists: pass --overwrite'):
        cli.refuse_existing([str(tmp_path / 'metrics.json')], overwrite=False)
    cli.refuse_existing([str(tmp_path / 'metrics.json')], overwrite=True)
    cli.write_json(str(tmp_path / 'metrics.json'), {'a': 1})
    assert json.loads((tmp_path / 'metrics.json').read_text()) == {'a': 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics.json']  # no temporary file


def test_output_dirs_are_checked_and_replaced_whole(tmp_path):
    from converters.errors import UserError
    from icnet_tf.cli import check_output_dir, replacing_dir

    user = tmp_path / 'user'
    user.mkdir()
    (user / 'mine.txt').write_text('keep me')
    with pytest.raises(UserError, match='exists and is not empty'):
        check_output_dir(str(user), 'export_dir', overwrite=False)
    (tmp_path / 'file').write_text('x')
    with pytest.raises(UserError, match='is a file'):
        check_output_dir(str(tmp_path / 'file'), 'export_dir', overwrite=True)
    # A failed write leaves the folder as it was, and no temporary folder behind.
    with pytest.raises(RuntimeError), replacing_dir(str(user)) as tmp:
        (tmp_path / tmp / 'saved_model.pb').write_text('half')
        raise RuntimeError('export failed')
    assert (user / 'mine.txt').read_text() == 'keep me'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file', 'user']
    with replacing_dir(str(tmp_path / 'new')) as tmp:
        (tmp_path / tmp / 'saved_model.pb').write_text('whole')
    assert (tmp_path / 'new' / 'saved_model.pb').read_text() == 'whole'


def test_converter_refuses_a_folder_that_holds_a_checkpoint(tmp_path):
    """A training snapshot folder given as --out_dir is left byte-identical."""
    from converters.errors import UserError
    from icnet_tf.convert import check_out_dir

    snap = tmp_path / 'snapshots'
    snap.mkdir()
    files = {'checkpoint': b'model_checkpoint_path: "ckpt-7"\n', 'ckpt-7.index': b'\x00\x01'}
    for name, data in files.items():
        (snap / name).write_bytes(data)
    with pytest.raises(UserError, match=r'snapshots: already holds a checkpoint'):
        check_out_dir(str(snap), overwrite=False)
    assert {p.name: p.read_bytes() for p in snap.iterdir()} == files
    check_out_dir(str(tmp_path / 'fresh'), overwrite=False)  # a new folder is fine


def run_main(body, *args):
    """Run `def main(argv): <body>` under `cli.run` in a fresh Python, as a user starts a tool
    (without the suite's log level, so the CLI's own quieting applies)."""
    import os
    import subprocess
    import sys
    import textwrap

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = 'from icnet_tf import cli\n\ndef main(argv):\n' + textwrap.indent(body, '    ')
    user_env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    return subprocess.run(
        [sys.executable, '-c', code + '\ncli.run(main)\n', *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(user_env, PYTHONPATH=root),
    )


def test_a_file_the_system_refuses_is_one_line_naming_it(tmp_path):
    """`cli.run` turns an OSError (a missing folder, a file where a folder is expected, no
    permission) into `error: <file>: <reason>` and exit status 1, not a traceback."""
    missing = tmp_path / 'no_such_dir' / 'out.txt'
    proc = run_main(f'open({str(missing)!r}, "w")\n')
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f'error: {missing}: No such file or directory']


def test_a_note_from_the_library_is_one_line_said_once():
    """A `Note` warning (e.g. a damaged checkpoint passed over) is `note: <message>`, each
    distinct one once; other warnings keep Python's own form."""
    proc = run_main(
        'import warnings\n'
        'from converters.errors import Note\n'
        'for _ in range(3):\n'
        "    warnings.warn('ckpt-6: truncated; using ckpt-4', Note)\n"
        "warnings.warn('ckpt-4: also odd', Note)\n"
        "warnings.warn('something else', UserWarning)\n"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[:2] == ['note: ckpt-6: truncated; using ckpt-4', 'note: ckpt-4: also odd']
    assert 'UserWarning: something else' in lines[2]


def test_a_bad_flag_is_one_line():
    proc = run_main('pass\n', '--max_image_megapixel', '3')
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: Unknown command line flag 'max_image_megapixel'. Did you mean: "
        'max_image_megapixels ? (--help lists the flags)'
    ]
