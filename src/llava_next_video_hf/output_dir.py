"""Writing an output folder (``convert``, ``export``) without ever losing data.

Rules, shared by every command that writes a checkpoint folder ``DST`` from a folder ``SRC``:

* ``SRC`` and ``DST`` must not overlap in either direction once symlinks are resolved (writing into
  the source, or replacing a folder that holds the source, would destroy it).
* An existing ``DST`` is replaced only with ``overwrite`` and only when it is empty or a checkpoint
  folder we recognise (:func:`is_checkpoint_folder`); a plain file, a symlink loop or any other
  folder is refused with a message saying why.
* The result is written into a hidden staging folder next to ``DST`` (``.DST.partial-<id>``) and
  renamed into place when complete. While the command runs, the staging folder's sibling lock file
  ``.DST.partial-<id>.lock`` is held with ``flock``; the kernel drops that lock when the process
  dies, however it dies. The next run for the same ``DST`` finds staging folders whose lock is free
  and removes them (:func:`reclaim_stale`, each one reported), and puts back a previous ``DST``
  that a killed run had moved aside (``.DST.old-<id>``) but not yet replaced.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

try:  # POSIX only; elsewhere stale staging folders are left for the user to remove
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CHECKPOINT_SUBFOLDERS",
    "check_destination",
    "check_no_overlap",
    "is_checkpoint_folder",
    "reclaim_stale",
    "staged_output",
]

#: Subfolders a checkpoint folder may hold and still be replaced with ``overwrite``.
CHECKPOINT_SUBFOLDERS = frozenset({"chat_templates", ".cache"})
#: Staging folders of older versions (no lock file) count as stale after this many seconds.
UNLOCKED_STALE_AFTER_S = 3600.0

Error = Callable[[str], Exception]


def _resolve(path: Path, what: str, error: Error) -> Path:
    try:
        return path.expanduser().resolve()
    except (RuntimeError, OSError) as err:  # RuntimeError: "Symlink loop from ..." (Python 3.11)
        raise error(f"{what} {path} cannot be resolved ({err}); is it a symlink loop?") from None


def check_no_overlap(src: Path, dst: Path, error: Error) -> None:
    """Refuse ``dst`` equal to, inside, or containing ``src`` (symlinks resolved)."""
    rsrc, rdst = _resolve(src, "SRC", error), _resolve(dst, "DST", error)
    if rdst == rsrc:
        raise error(f"DST {dst} is the source folder {src}: write the result to another folder")
    if rsrc in rdst.parents:
        raise error(f"DST {dst} is inside the source folder {src}: write the result outside it")
    if rdst in rsrc.parents:
        raise error(
            f"DST {dst} contains the source folder {src}: replacing it would delete the source; "
            "write the result to another folder"
        )


def is_checkpoint_folder(folder: Path) -> str | None:
    """``None`` when ``folder`` is a checkpoint folder we may replace, else the reason it is not.

    A checkpoint folder holds a ``config.json`` with a ``model_type`` or ``architectures``, at least
    one weights file (``*.safetensors`` or ``pytorch_model*.bin``), and no subfolders other than
    :data:`CHECKPOINT_SUBFOLDERS`.
    """
    config = folder / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it has no readable config.json"
    if not isinstance(data, dict) or not (data.get("model_type") or data.get("architectures")):
        return "its config.json names no model_type"
    entries = list(folder.iterdir())
    others = sorted(p.name for p in entries if p.is_dir() and p.name not in CHECKPOINT_SUBFOLDERS)
    if others:
        return f"it holds other folders ({', '.join(others[:5])})"
    if not any(
        p.is_file()
        and (p.suffix == ".safetensors" or (p.name.startswith("pytorch_model") and p.suffix == ".bin"))
        for p in entries
    ):
        return "it holds no weights (*.safetensors, pytorch_model*.bin)"
    return None


def check_destination(dst: Path, overwrite: bool, error: Error, *, empty_ok: bool = False) -> None:
    """Refuse a ``dst`` that cannot be written, or replaced without losing data.

    Args:
        dst: the output folder.
        overwrite: the user asked to replace an existing ``dst``.
        error: the exception class raised (with the message).
        empty_ok: an existing empty folder may be used without ``overwrite``.
    """
    if dst.is_symlink() and not dst.exists():
        try:
            dst.resolve(strict=True)
        except (RuntimeError, OSError) as err:
            raise error(f"DST {dst} is a broken symlink or a symlink loop ({err})") from None
    for parent in dst.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise error(f"DST {dst} cannot be created: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK) and parent == dst.absolute().parent:
                raise error(f"DST {dst} cannot be created: no permission to write in {parent}")
            break
    if not dst.exists():
        return
    if not dst.is_dir():
        raise error(f"DST {dst} is a file, not a folder: remove it or choose another name")
    empty = not any(dst.iterdir())
    if empty and (empty_ok or overwrite):
        return
    if not overwrite:
        what = "already exists" if empty else "already exists and is not empty"
        raise error(f"{dst} {what}; pass --overwrite to replace it")
    if not empty:
        reason = is_checkpoint_folder(dst)
        if reason is not None:
            raise error(
                f"refusing to replace {dst}: {reason}, so it is not a checkpoint folder this command "
                "would overwrite; remove it yourself or choose another DST"
            )


def _lock(path: Path) -> int | None:
    """Open and ``flock`` ``path`` without blocking: the fd, or ``None`` when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:  # pragma: no cover
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _say(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def reclaim_stale(dst: Path, say: Callable[[str], None] = _say) -> list[Path]:
    """Remove what killed runs for ``dst`` left in its parent; returns the paths removed.

    A ``.DST.partial-<id>`` folder (and its ``.old-<id>`` twin) is stale when its lock file is not
    held by a live process; a previous ``DST`` moved aside as ``.DST.old-<id>`` is put back when
    ``DST`` itself is missing. Staging folders from versions without lock files are stale once
    untouched for :data:`UNLOCKED_STALE_AFTER_S`.
    """
    parent = dst.absolute().parent
    if fcntl is None or not parent.is_dir():
        return []
    removed: list[Path] = []
    prefix = f".{dst.name}."
    for lock in sorted(parent.glob(f"{glob.escape(prefix)}partial-*.lock")):
        run_id = lock.name[len(prefix) + len("partial-") : -len(".lock")]
        fd = _lock(lock)
        if fd is None:
            continue  # a live run
        try:
            old = parent / f"{prefix}old-{run_id}"
            if old.exists() and not (dst.exists() or dst.is_symlink()):
                os.replace(old, dst)
                say(f"restored {dst} from {old.name}, left by an interrupted run")
            for path in (parent / f"{prefix}partial-{run_id}", old):
                if path.exists() or path.is_symlink():
                    _remove(path)
                    removed.append(path)
                    say(f"removed {path}, left by an interrupted run")
            lock.unlink()
        finally:
            os.close(fd)
    for path in sorted(parent.glob(f"{glob.escape(prefix)}partial-*")):
        if path.name.endswith(".lock") or (parent / f"{path.name}.lock").exists() or not path.is_dir():
            continue
        if time.time() - path.stat().st_mtime > UNLOCKED_STALE_AFTER_S:  # an older version's leftover
            _remove(path)
            removed.append(path)
            say(f"removed {path}, left by an interrupted run")
    return removed


@contextlib.contextmanager
def staged_output(dst: Path, overwrite: bool, error: Error) -> Iterator[Path]:
    """A fresh staging folder next to ``dst``; on a clean exit it replaces ``dst``.

    ``dst`` is replaced only if ``overwrite`` (the caller has checked it with
    :func:`check_destination`); the previous ``dst`` is moved aside first and deleted only once the
    new one is in place. On any exception the staging folder is removed and ``dst`` is untouched.
    """
    dst = dst.absolute()
    reclaim_stale(dst)
    run_id = uuid.uuid4().hex[:12]
    lock = dst.parent / f".{dst.name}.partial-{run_id}.lock"
    tmp = dst.parent / f".{dst.name}.partial-{run_id}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(lock)
    assert fd is not None, "a fresh lock file is held by nobody"
    try:
        tmp.mkdir()
        try:
            yield tmp
            _publish(tmp, dst, dst.parent / f".{dst.name}.old-{run_id}", overwrite, error)
        except BaseException:
            _remove(tmp)
            raise
    finally:
        if not tmp.exists():  # else it stays with its (soon unlocked) lock file for the next run to reclaim
            lock.unlink()
        os.close(fd)


def _publish(tmp: Path, dst: Path, old: Path, overwrite: bool, error: Error) -> None:
    if not (dst.exists() or dst.is_symlink()):
        os.replace(tmp, dst)
        return
    if not overwrite and (not dst.is_dir() or any(dst.iterdir())):
        raise error(f"{dst} already exists; pass --overwrite to replace it")
    os.replace(dst, old)
    try:
        os.replace(tmp, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    _remove(old)
