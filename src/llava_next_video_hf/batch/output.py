"""The job's JSONL output: one whole line per row, appended; resuming reads what is already there.

Each record is written with a single ``os.write`` on a file opened ``O_APPEND`` (no Python buffer):
a record is either in the file or not, and a process killed at any instant loses at most the line it
was writing, which the next run cuts off (a line without its newline) before appending. The file is
locked (``flock``) while a job writes it, so two jobs cannot interleave lines.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LlavaNextVideoError

#: the system call records go through (one per record); tests inject file-system failures here
_write = os.write


class BatchOutputError(LlavaNextVideoError):
    """The output file cannot be read, locked or written: the job cannot go on."""


@dataclass
class Existing:
    """What an output file already holds: answered ids, failed ids, and how many lines."""

    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    lines: int = 0
    cut_bytes: int = 0  # a partial last line removed


def scan(path: Path) -> tuple[Existing, int]:
    """Read ``path``'s records; returns them and the byte offset after the last whole line.

    Raises:
        BatchOutputError: a whole line (one ending with a newline) that is not a JSON record with an
            ``id``: the file was not written by this job, and nothing is appended to it.
    """
    found = Existing()
    if not path.exists():
        return found, 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # 0 when there is no whole line
    for n, line in enumerate(data[:end].split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rid = rec["id"]
        except (ValueError, KeyError, TypeError):
            raise BatchOutputError(
                f"{path}:{n} is not a record of a batch job (a JSON object with an 'id'); "
                "not appending to it (choose another -o)"
            ) from None
        found.lines += 1
        if "error" in rec:
            found.failed.add(str(rid))
        else:
            found.failed.discard(str(rid))
            found.done.add(str(rid))
    found.cut_bytes = len(data) - end
    return found, end


class OutputFile:
    """The JSONL output of one job, opened for appending (locked, partial last line removed).

    ``drop_failed``: rewrite the file without its error records first (``--retry-failed``), so a
    retried row still appears exactly once.
    """

    def __init__(self, path: str | os.PathLike, drop_failed: bool = False) -> None:
        self.path = Path(path)
        self.written = 0
        if self.path.is_dir():
            raise BatchOutputError(f"-o {self.path} is a folder; give a .jsonl file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as err:
            raise BatchOutputError(f"cannot open the output {self.path}: {err.strerror or err}") from err
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(self.fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise BatchOutputError(f"{self.path} is being written by another batch job") from None
            raise BatchOutputError(f"cannot lock {self.path}: {err.strerror or err}") from err
        try:
            self.existing, end = scan(self.path)
            if self.existing.cut_bytes:
                os.ftruncate(self.fd, end)  # a line a killed run did not finish
            if drop_failed and self.existing.failed:
                self._drop_failed()
        except BaseException:
            self.close()
            raise

    def _drop_failed(self) -> None:
        """Rewrite the file without error records (atomically: a temporary file, then rename)."""
        keep = []
        with open(self.path, "rb") as f:
            for line in f:
                if line.strip() and "error" not in json.loads(line):
                    keep.append(line)
        tmp = self.path.with_name(self.path.name + ".retry-tmp")
        try:
            with open(tmp, "wb") as f:
                f.writelines(keep)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise BatchOutputError(f"cannot rewrite {self.path} without its failed rows: {err}") from err
        # the lock and descriptor follow the new file
        old = self.fd
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(old)
        self.existing.lines = len(keep)
        self.existing.failed = set()

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line (one system call).

        Raises:
            BatchOutputError: the write failed (disk full, file too large, I/O error); the records
                written before stay, whole.
        """
        data = (json.dumps(record, ensure_ascii=False, allow_nan=False, default=str) + "\n").encode()
        try:
            done = _write(self.fd, data)
            if done != len(data):  # a short write: take it back so no partial line is left behind
                os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - done)
                raise OSError(
                    errno.ENOSPC,
                    f"the file system took only {done} of {len(data)} bytes (disk full or a file size limit)",
                )
        except OSError as err:
            raise BatchOutputError(
                f"cannot write to {self.path}: {err.strerror or err}; the {self.written} record(s) written "
                "by this run are kept; free the space (or fix the file system) and re-run the same command "
                "to resume"
            ) from err
        self.written += 1

    def close(self) -> None:
        """Release the lock and the descriptor (idempotent)."""
        if getattr(self, "fd", None) is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None  # type: ignore[assignment]

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["BatchOutputError", "Existing", "OutputFile", "scan"]
