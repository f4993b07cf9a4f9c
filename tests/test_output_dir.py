"""``convert`` and ``export`` never lose data: no overlap between SRC and DST, ``--overwrite`` replaces only
checkpoint folders, clear one-line errors for impossible destinations, and what a killed run leaves
behind is reclaimed by the next one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llava_next_video_hf import cli, output_dir, testing
from llava_next_video_hf.errors import ConversionError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return testing.make_tiny_checkpoint(tmp_path_factory.mktemp("src") / "ckpt")


def _cli(capsys, *argv) -> tuple[int, str]:
    extra = ["--no-progress"] if argv[0] == "convert" else []
    code = cli.main([*map(str, argv), *extra])
    return code, capsys.readouterr().err


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", ["convert", "export"])
def test_destination_containing_the_source_is_refused(ckpt, tmp_path, capsys, command):
    project = tmp_path / "P"
    shutil.copytree(ckpt, project / "ckpt")
    (project / "notes.txt").write_text("mine")
    before = _tree(project)
    code, err = _cli(capsys, command, project / "ckpt", project, "--overwrite")
    assert code == 1 and "contains the source folder" in _error_line(err)
    assert _tree(project) == before
    # the same through a symlink to the project, and the other direction (DST inside SRC, DST == SRC)
    (tmp_path / "link").symlink_to(project)
    for dst in (tmp_path / "link", project / "ckpt" / "out", tmp_path / "link" / "ckpt"):
        code, err = _cli(capsys, command, project / "ckpt", dst, "--overwrite")
        assert code == 1 and "source folder" in _error_line(err), dst
    assert _tree(project) == before


@pytest.mark.parametrize("command", ["convert", "export"])
def test_overwrite_replaces_only_checkpoint_folders(ckpt, tmp_path, capsys, command):
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "config.json").write_text('{"model_type": "x"}')
    (home / "model.safetensors").write_bytes(b"")
    before = _tree(home)
    code, err = _cli(capsys, command, ckpt, home, "--overwrite")
    assert code == 1 and "other folders (photos)" in _error_line(err) and _tree(home) == before
    shutil.rmtree(home / "photos")
    (home / "model.safetensors").unlink()
    code, err = _cli(capsys, command, ckpt, home, "--overwrite")
    assert code == 1 and "no weights" in _error_line(err) and (home / "config.json").is_file()

    old = testing.make_tiny_checkpoint(tmp_path / "old", seed=1)
    (old / "chat_templates").mkdir()
    code, err = _cli(capsys, command, ckpt, old, "--overwrite")
    assert code == 0, err
    assert not (old / "chat_templates").exists() or command == "export"
    assert (old / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "old"]  # nothing hidden left behind


@pytest.mark.parametrize("command", ["convert", "export"])
def test_impossible_destinations_are_one_line_errors(ckpt, tmp_path, capsys, command):
    plain = tmp_path / "plain.txt"
    plain.write_text("keep")
    code, err = _cli(capsys, command, ckpt, plain, "--overwrite")
    assert code == 1 and "is a file, not a folder" in _error_line(err) and plain.read_text() == "keep"
    code, err = _cli(capsys, command, ckpt, plain / "out")
    assert code == 1 and f"{plain} is a file, not a folder" in _error_line(err)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, err = _cli(capsys, command, ckpt, tmp_path / "a", "--overwrite")
    assert code == 1 and "symlink loop" in _error_line(err)
    assert "Traceback" not in err


_KILLED_RUN = """
import os, signal, sys
from llava_next_video_hf import convert, hub_cards

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "convert":
    convert.write_safetensors = die
    convert.convert(sys.argv[2], sys.argv[3], overwrite=True, progress=False)
else:
    hub_cards.export.check_folder = die
    hub_cards.export_for_hub(sys.argv[2], sys.argv[3], overwrite=True)
"""


@pytest.mark.parametrize("command", ["convert", "export"])
def test_a_killed_run_leaves_nothing_the_next_run_does_not_reclaim(ckpt, tmp_path, capsys, command):
    dst = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_RUN), command, str(ckpt), str(dst)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[0].startswith(".out.partial-") and left[1] == left[0] + ".lock"
    code, err = _cli(capsys, command, ckpt, dst)
    assert code == 0, err
    assert f"removed {tmp_path / left[0]}, left by an interrupted run" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_reclaim_spares_live_runs_and_restores_a_moved_aside_destination(tmp_path):
    dst = tmp_path / "out"
    notes: list[str] = []
    with output_dir.staged_output(dst, False, ConversionError) as tmp:
        (tmp / "config.json").write_text("{}")
        assert output_dir.reclaim_stale(dst, notes.append) == [] and tmp.is_dir()  # its lock is held
    assert (dst / "config.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    # a run killed after moving the previous DST aside and before putting the new one in place
    os.replace(dst, tmp_path / ".out.old-abc")
    (tmp_path / ".out.partial-abc").mkdir()
    (tmp_path / ".out.partial-abc.lock").write_text("")
    removed = output_dir.reclaim_stale(dst, notes.append)
    assert removed == [tmp_path / ".out.partial-abc"]
    assert (dst / "config.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert any("restored" in n for n in notes)
