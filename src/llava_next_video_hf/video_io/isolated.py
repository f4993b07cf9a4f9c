"""Decoding in worker processes (:class:`DecodePool`): a decoder crash or hang costs one job, never the caller.

FFmpeg is C code: a damaged file may make it crash (a segfault takes the whole process down) or spin
(no Python-level timeout can interrupt it). :class:`DecodePool` runs each job in one of a few worker
processes, each a fresh interpreter (``python -c``, as multiprocessing's ``spawn`` would start it,
but without re-importing the caller's main script, which for ``vllm serve`` would import vLLM in
every worker; never ``fork``, which is unsafe in processes with threads such as vLLM's API server):

* a job that raises gives the same exception from ``future.result()`` (``VideoLoadError`` for a
  refused video);
* a worker that dies (signal, ``os._exit``, the kernel's OOM killer) gives a ``VideoLoadError``
  naming the signal or exit code; a job that runs past ``deadline_s`` seconds of wall time gives a
  ``VideoLoadError`` naming the deadline, and its worker is killed. Either way the worker is
  replaced and the pool keeps serving.

Results come back pickled over a pipe, except NumPy arrays of at least :data:`SHM_MIN_BYTES`
(decoded frames): the worker copies each into an anonymous shared-memory file (``memfd``) whose
descriptor it passes over the pipe, and the caller maps it as the array's memory, with no further
copy (on systems without ``memfd_create`` the arrays are pickled like the rest).

``load_video`` in the calling process stays available for library users (no process, no
isolation); :meth:`DecodePool.load_video` is its isolated twin. This module imports no torch or
transformers.
"""

from __future__ import annotations

import concurrent.futures
import io
import mmap
import multiprocessing.connection
import os
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing import reduction
from typing import Any

import numpy as np

from ..errors import VideoLoadError

#: Wall time (s) a job may run in a worker before the worker is killed and the job fails.
DEFAULT_DECODE_DEADLINE_S = 60.0
#: Arrays at least this large come back through shared memory instead of the pipe.
SHM_MIN_BYTES = 1 << 20
#: The workers' process name (``/proc/PID/comm``, ``ps -o comm``).
WORKER_NAME = "video_io-decode"
#: Most workers a pool starts by default (fewer on machines with fewer cores).
DEFAULT_WORKERS = 4

_HAS_MEMFD = hasattr(os, "memfd_create")


class DecoderCrashError(VideoLoadError):
    """The worker process running a job died (a signal such as SIGSEGV, an exit, the OOM killer)."""


class DecodeDeadlineError(VideoLoadError):
    """A job ran past the pool's ``deadline_s``; its worker was killed."""


_STOP = object()


# -- the worker side -----------------------------------------------------------------------------


class _ArrayPickler(pickle.Pickler):
    """Pickles large arrays as references to memfd files (sent separately as descriptors)."""

    def __init__(self, file: io.BytesIO, fds: list[int]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.fds = fds

    def persistent_id(self, obj: Any) -> Any:
        if not _HAS_MEMFD or type(obj) is not np.ndarray or obj.nbytes < SHM_MIN_BYTES or obj.dtype.hasobject:
            return None
        fd = os.memfd_create("llava_next_video_hf.frames", os.MFD_CLOEXEC)
        try:
            # write() fills tmpfs pages faster than copying through a mapping (one page fault each).
            data = memoryview(np.ascontiguousarray(obj)).cast("B")
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done : done + (64 << 20)], done)
        except BaseException:
            os.close(fd)
            raise
        self.fds.append(fd)
        return ("memfd", len(self.fds) - 1, obj.shape, obj.dtype.str)


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, fds: list[int]):
        super().__init__(file)
        self.fds = fds

    def persistent_load(self, pid: Any) -> Any:
        kind, slot, shape, dtype = pid
        if kind != "memfd":  # pragma: no cover - only our pickler writes these
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        mm = mmap.mmap(self.fds[slot], nbytes)  # the array keeps the mapping alive
        return np.ndarray(shape, dtype=dtype, buffer=mm)


class _RemoteTraceback(Exception):
    """The worker-side traceback of an exception raised by a job (its ``__cause__``)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def _encode_reply(ok: bool, value: Any, tb: str | None = None) -> tuple[bytes, list[int]]:
    fds: list[int] = []
    buf = io.BytesIO()
    try:
        _ArrayPickler(buf, fds).dump((ok, value, tb))
    except Exception as exc:
        for fd in fds:
            os.close(fd)
        fds = []
        if ok:
            err: BaseException = TypeError(
                f"the job's result cannot be sent back ({type(exc).__name__}: {exc})"
            )
        else:
            err = RuntimeError(f"{type(value).__name__}: {value}")
        buf = io.BytesIO()
        _ArrayPickler(buf, fds).dump((False, err, tb))
    return struct.pack("<I", len(fds)) + buf.getvalue(), fds


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies (a stuck worker must not outlive it) and
    name it :data:`WORKER_NAME`."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        libc.prctl(15, WORKER_NAME.encode())  # PR_SET_NAME: what ps and /proc/PID/comm show
    except Exception:  # pragma: no cover - not Linux
        pass


def _worker_main(fd: int, parent_pid: int) -> None:
    """Run jobs sent over the socket ``fd`` until it closes; one reply per job.

    Started as ``python -c "...; _worker_entry()" FD PARENT_PID`` (a fresh interpreter: nothing of the
    caller's threads, locks or main script comes along).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides when workers stop
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before PR_SET_PDEATHSIG was in place
        return
    conn = multiprocessing.connection.Connection(fd)
    sock = socket.socket(fileno=os.dup(fd)) if _HAS_MEMFD else None
    try:
        conn.send_bytes(_READY)  # started and imported: job deadlines count from here
        while True:
            try:
                raw = conn.recv_bytes()
            except (EOFError, OSError):
                return
            try:
                fn, args, kwargs = pickle.loads(raw)  # a job that cannot be unpickled fails alone
                reply = _encode_reply(True, fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
                reply = _encode_reply(False, exc, traceback.format_exc())
            data, fds = reply
            try:
                conn.send_bytes(data)
                if fds:
                    assert sock is not None
                    reduction.sendfds(sock, fds)
            except (BrokenPipeError, OSError):
                return
            finally:
                for fd_ in fds:
                    os.close(fd_)
    finally:
        if sock is not None:
            sock.close()
        conn.close()


def _worker_entry() -> None:
    """``python -c`` entry point of a worker (see :meth:`_Worker.start_process`)."""
    _worker_main(int(sys.argv[1]), int(sys.argv[2]))


# -- the caller side -----------------------------------------------------------------------------


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


class _Job:
    __slots__ = ("future", "fn", "args", "kwargs", "desc")

    def __init__(self, future: concurrent.futures.Future, fn: Callable, args: tuple, kwargs: dict, desc: str):
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.desc = desc


_WORKER_CODE = "from llava_next_video_hf.video_io.isolated import _worker_entry; _worker_entry()"
_READY = b"ready"
#: Seconds a new worker may take to start (a fresh interpreter importing ``video_io``).
_START_TIMEOUT_S = 120.0


class _Worker:
    """One worker process and the thread in the caller that starts it and feeds it jobs.

    The thread starts the process (``PR_SET_PDEATHSIG`` follows the thread that started a
    process, so it must be the long-lived one) and restarts it after a crash or a deadline.
    """

    def __init__(self, pool: DecodePool, slot: int):
        self.pool = pool
        self.slot = slot
        self.process: subprocess.Popen | None = None
        self.conn: multiprocessing.connection.Connection | None = None
        self.sock: socket.socket | None = None
        self.started = threading.Event()
        self.start_error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"video_io-decode-{slot}", daemon=True)

    # process management

    def start_process(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # find what the caller finds
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.process = process
        self.conn = multiprocessing.connection.Connection(os.dup(ours.fileno()))
        self.sock = ours
        self.pool._started += 1
        # Wait for the worker to be up, so that a job's deadline does not include the start.
        ready = multiprocessing.connection.wait([self.conn], timeout=_START_TIMEOUT_S)
        try:
            greeting = self.conn.recv_bytes() if ready else None
        except (EOFError, OSError):
            greeting = None
        if greeting != _READY:
            try:
                code = process.wait(1) if ready else None
            except subprocess.TimeoutExpired:
                code = None
            self.stop_process()
            why = _describe_exit(code) if ready else f"no answer in {_START_TIMEOUT_S:g} s"
            raise DecoderCrashError(f"a decoding worker did not start ({why}); its error output says why")

    def stop_process(self) -> None:
        process, conn, sock = self.process, self.conn, self.sock
        self.process = self.conn = self.sock = None
        for closable in (conn, sock):
            if closable is not None:
                try:
                    closable.close()
                except OSError:  # pragma: no cover
                    pass
        if process is not None:
            if process.poll() is None:
                process.kill()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignored
                pass

    # job loop

    def _run(self) -> None:
        try:
            self.start_process()
        except BaseException as exc:  # noqa: BLE001 - reported by the pool's constructor
            self.start_error = exc
        finally:
            self.started.set()
        try:
            while True:
                job = self.pool._jobs.get()
                if job is _STOP:
                    return
                if not job.future.set_running_or_notify_cancel():
                    continue
                try:
                    ok, value = self._execute(job)
                except BaseException as exc:  # noqa: BLE001 - the caller must always get an answer
                    ok, value = False, exc
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)
        finally:
            self.stop_process()

    def _send(self, job: _Job) -> None:
        """Hand ``job`` to a live worker, replacing one that died while idle."""
        for attempt in range(2):
            if self.process is None or self.process.poll() is not None:
                self.stop_process()
                self.start_process()
            assert self.conn is not None
            try:
                self.conn.send((job.fn, job.args, job.kwargs))
                return
            except (BrokenPipeError, ConnectionResetError, EOFError):
                if attempt:
                    raise
                self.stop_process()
            # pickling errors (an unpicklable argument) propagate: they are the job's own

    def _execute(self, job: _Job) -> tuple[bool, Any]:
        if self.pool._closed:
            return False, RuntimeError("DecodePool is closed")
        self._send(job)
        process, conn, sock = self.process, self.conn, self.sock
        assert process is not None and conn is not None
        deadline = self.pool.deadline_s
        started = time.monotonic()
        # A worker that dies closes its end of the socket: the connection turns readable (EOF).
        ready = multiprocessing.connection.wait([conn], timeout=deadline)
        if ready:
            try:
                data = conn.recv_bytes()
                (nfds,) = struct.unpack_from("<I", data)
                fds = reduction.recvfds(sock, nfds) if nfds else []
            except (EOFError, OSError, struct.error):
                pass  # died before or while answering: reported below as a crash
            else:
                try:
                    ok, value, tb = _ArrayUnpickler(io.BytesIO(memoryview(data)[4:]), fds).load()
                finally:
                    for fd in fds:
                        os.close(fd)
                if not ok and tb and isinstance(value, BaseException):
                    value.__cause__ = _RemoteTraceback(tb)
                return ok, value
        if self.pool._closed:
            self.stop_process()
            return False, RuntimeError("DecodePool was closed while the job ran")
        if not ready:
            elapsed = time.monotonic() - started
            self.stop_process()
            self.pool._hung += 1
            return False, DecodeDeadlineError(
                f"{job.desc}: decoding took longer than the deadline of {deadline:g} s "
                f"(stopped after {elapsed:.1f} s); the file may be damaged or too long to decode"
            )
        try:
            code = process.wait(5)
        except subprocess.TimeoutExpired:  # closed its socket but lives on: stop it
            code = None
        self.stop_process()
        self.pool._crashed += 1
        return False, DecoderCrashError(
            f"{job.desc}: the decoder crashed ({_describe_exit(code)}); the file may be damaged"
        )


class DecodePool:
    """Worker processes that run decoding jobs; a crash or hang costs one job, never the caller.

    Args:
        workers: number of worker processes (default: up to :data:`DEFAULT_WORKERS`, at most the
            cores); jobs beyond that wait in a queue.
        deadline_s: wall time (s) one job may run in its worker (``None``: no limit). A job past it
            fails with a ``VideoLoadError`` and its worker is killed and replaced.
        start_method: ``None`` or ``"spawn"`` (the only one: a fresh interpreter per worker, which
            imports ``video_io`` when it starts; ``"fork"`` would be unsafe in threaded processes).

    Use as a context manager, or call :meth:`close`. Workers start when the pool is made; jobs
    must be picklable top-level functions of importable modules (workers find modules on the
    caller's ``sys.path``). Workers are named :data:`WORKER_NAME` and die with the caller.
    """

    def __init__(
        self,
        workers: int | None = None,
        deadline_s: float | None = DEFAULT_DECODE_DEADLINE_S,
        *,
        start_method: str | None = None,
    ):
        if workers is None:
            workers = max(1, min(DEFAULT_WORKERS, os.cpu_count() or 1))
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1 or None, got {workers!r}")
        if deadline_s is not None and (
            isinstance(deadline_s, bool) or not isinstance(deadline_s, int | float) or not deadline_s > 0
        ):
            raise ValueError(f"deadline_s must be a number > 0 or None, got {deadline_s!r}")
        if start_method not in (None, "spawn"):
            raise ValueError(
                f"start_method must be 'spawn' (a fresh interpreter per worker), got {start_method!r}"
            )
        self.workers = workers
        self.deadline_s = None if deadline_s is None else float(deadline_s)
        self.start_method = "spawn"
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._started = 0
        self._crashed = 0
        self._hung = 0
        self._workers = [_Worker(self, i) for i in range(workers)]
        for worker in self._workers:
            worker.thread.start()
        for worker in self._workers:
            worker.started.wait()
        errors = [w.start_error for w in self._workers if w.start_error is not None]
        if errors:
            self.close()
            raise RuntimeError(f"DecodePool could not start its workers: {errors[0]}") from errors[0]

    # statistics (read-only)

    @property
    def crashed(self) -> int:
        """Jobs whose worker died."""
        return self._crashed

    @property
    def hung(self) -> int:
        """Jobs stopped at the deadline."""
        return self._hung

    @property
    def processes_started(self) -> int:
        """Worker processes started so far (``workers`` plus replacements)."""
        return self._started

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Run ``fn(*args, **kwargs)`` in a worker; ``fn`` must be a picklable top-level callable.

        The future's result is ``fn``'s return value, or the exception ``fn`` raised; a worker
        that died or ran past the deadline gives a ``VideoLoadError`` saying which
        (:class:`DecoderCrashError`, :class:`DecodeDeadlineError`).
        """
        return self._submit(getattr(fn, "__qualname__", repr(fn)), fn, args, kwargs)

    def _submit(
        self, desc: str, fn: Callable[..., Any], args: tuple, kwargs: dict
    ) -> concurrent.futures.Future:
        if self._closed:
            raise RuntimeError("DecodePool is closed")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put(_Job(future, fn, args, kwargs, desc))
        return future

    def submit_load_video(self, source: Any, **load_video_kwargs: Any) -> concurrent.futures.Future:
        """:func:`~llava_next_video_hf.video_io.load_video` in a worker; the future gives
        ``(frames, metadata)``. File objects are read here first (they cannot cross processes);
        frames given in memory are sampled here (nothing to decode)."""
        from .load import load_video
        from .sources import _read_limited

        future: concurrent.futures.Future
        if isinstance(source, np.ndarray) or _in_memory_frames(source):
            future = concurrent.futures.Future()
            try:
                future.set_result(load_video(source, **load_video_kwargs))
            except BaseException as exc:  # noqa: BLE001
                future.set_exception(exc)
            return future
        desc = _describe_source(source)
        if hasattr(source, "read") and not isinstance(source, str | bytes | bytearray | memoryview):
            try:
                source = _read_limited(source, desc)
            except OSError as exc:
                future = concurrent.futures.Future()
                future.set_exception(VideoLoadError(f"{desc}: cannot be read ({exc})"))
                return future
        elif isinstance(source, bytearray | memoryview):
            source = bytes(source)
        return self._submit(desc, load_video, (source,), load_video_kwargs)

    def load_video(self, source: Any, **load_video_kwargs: Any) -> tuple[np.ndarray, Any]:
        """``load_video(source, **load_video_kwargs)`` run in a worker: ``(frames, VideoMetadata)``.

        Raises:
            VideoLoadError: what ``load_video`` refuses, a decoder crash or the deadline.
        """
        return self.submit_load_video(source, **load_video_kwargs).result()

    def close(self) -> None:
        """Stop the workers (killing any busy one); pending jobs fail. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._workers:
            self._jobs.put(_STOP)
        for worker in self._workers:
            process = worker.process
            if process is not None and process.poll() is None:
                process.kill()  # a busy worker's job fails ("closed while the job ran")
        for worker in self._workers:
            if worker.thread.is_alive() and worker.thread is not threading.current_thread():
                worker.thread.join(10)
        while True:  # jobs submitted but never started
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("DecodePool was closed before the job ran"))

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def _in_memory_frames(source: Any) -> bool:
    from collections.abc import Sequence

    from .frames import _is_torch_tensor

    return _is_torch_tensor(source) or (
        isinstance(source, Sequence) and not isinstance(source, str | bytes | bytearray | memoryview)
    )


def _describe_source(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        text = str(source)
        if text.lower().startswith(("http://", "https://")):
            from .sources import _describe_url

            return _describe_url(text)
        return text
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    return "<file-like>"


__all__ = [
    "DEFAULT_DECODE_DEADLINE_S",
    "SHM_MIN_BYTES",
    "DecodeDeadlineError",
    "DecodePool",
    "DecoderCrashError",
]
