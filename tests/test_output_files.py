"""Output file checks: suffixes, permissions, and folders made for the file."""

from pathlib import Path

import pytest

from metarl.errors import UserError

def test_plot_suffixes_are_case_insensitive(tmp_path):
    from metarl.output_files import PLOT_SUFFIXES, check_output_file

    check_output_file(tmp_path / "figure.PNG", "--plot", PLOT_SUFFIXES)  # no error
    with pytest.raises(UserError, match="must end in"):
        check_output_file(tmp_path / "figure.jpg", "--plot", PLOT_SUFFIXES)


def test_an_unwritable_existing_file_or_folder_is_refused(tmp_path, monkeypatch):
    """os.access is faked: the tests may run as root, for whom chmod does not deny writes."""
    import metarl.output_files as output_files

    existing = tmp_path / "old.png"
    existing.write_text("")
    denied = set()
    monkeypatch.setattr(output_files.os, "access", lambda p, mode: Path(p) not in denied)
    output_files.check_output_file(existing, "--plot", output_files.PLOT_SUFFIXES)  # writable: fine
    denied.add(existing)  # a read-only file in a writable folder
    with pytest.raises(UserError, match="no permission to write it"):
        output_files.check_output_file(existing, "--plot", output_files.PLOT_SUFFIXES)
    denied = {tmp_path}
    monkeypatch.setattr(output_files.os, "access", lambda p, mode: Path(p) not in denied)
    with pytest.raises(UserError, match=f"no permission to write in {tmp_path}"):
        output_files.check_output_file(tmp_path / "new" / "deeper" / "x.png", "--plot", output_files.PLOT_SUFFIXES)


def test_writing_creates_missing_nested_folders(tmp_path):
    from metarl.output_files import writing

    target = tmp_path / "a" / "b" / "c" / "plot.png"
    with writing(target, "--plot") as path:
        path.write_bytes(b"x")
    assert target.read_bytes() == b"x"
