"""ftcalc/safe_write.py, the one writer: refusals before any work, atomic replacement, the file's mode."""

import os
import stat

import pytest

from ftcalc.errors import DataFileError
from ftcalc.safe_write import SPEC_MARKERS, atomic_output, write_text


def test_a_users_file_is_replaced_only_with_force_and_an_input_never(tmp_path):
    mine = tmp_path / "notes.yaml"
    mine.write_text("my notes\n")
    with pytest.raises(DataFileError, match="did not write it"):
        write_text(mine, "# ftcalc training spec\n", marker=SPEC_MARKERS)
    assert mine.read_text() == "my notes\n"
    write_text(mine, "# ftcalc training spec\nx: 1\n", marker=SPEC_MARKERS, force=True)
    write_text(mine, "# ftcalc training spec\nx: 2\n", marker=SPEC_MARKERS)  # ftcalc's own: replaced
    assert mine.read_text().endswith("x: 2\n")
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a"}\n')
    with pytest.raises(DataFileError, match="input of this command"):
        write_text(data, "# ftcalc training spec\n", marker=SPEC_MARKERS, inputs=[data], force=True)
    assert data.read_text() == '{"text": "a"}\n'


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path):
    out = tmp_path / "spec.yaml"
    out.write_text("# ftcalc training spec\nold: true\n")
    with pytest.raises(RuntimeError), atomic_output(out, marker=SPEC_MARKERS) as tmp:
        tmp.write_text("# ftcalc training spec\nnew: tru")
        raise RuntimeError("killed mid-write")
    assert out.read_text() == "# ftcalc training spec\nold: true\n"
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]  # no temporary file left behind


def test_a_new_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_mode(tmp_path):
    old = os.umask(0o022)
    try:
        new = write_text(tmp_path / "a.yaml", "# ftcalc training spec\n", marker=SPEC_MARKERS)
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # mkstemp alone would leave 0600
        kept = tmp_path / "b.yaml"
        kept.write_text("# ftcalc training spec\n")
        kept.chmod(0o640)
        write_text(kept, "# ftcalc training spec\nx: 1\n", marker=SPEC_MARKERS)
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old)
