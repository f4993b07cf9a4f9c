"""``video_io.DecodePool``: jobs run in worker processes; a crash or hang costs one job, never the caller.

Jobs that crash (``os._exit``, SIGSEGV, SIGKILL from outside mid-job) or hang are turned into
``VideoLoadError`` naming the cause, the worker is replaced and the next job is answered; results
(large arrays through shared memory) equal the in-process ``load_video``'s.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from llava_next_video_hf import testing
from llava_next_video_hf.errors import VideoLoadError
from llava_next_video_hf.video_io import DecodePool, load_video


# Jobs (top-level, so the workers can unpickle them).
def _pid() -> int:
    return os.getpid()


def _array(n: int) -> np.ndarray:
    return (np.arange(n) % 251).astype(np.uint8)


def _raise(message: str) -> None:
    raise KeyError(message)


def _exit(code: int) -> None:
    os._exit(code)


def _signal(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(5)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


class _FailsToUnpickle:
    def __reduce__(self):
        return (_raise, ("unpickled",))


@pytest.fixture(scope="module")
def pool():
    with DecodePool(workers=2, deadline_s=5) as p:
        yield p


@pytest.fixture(scope="module")
def clip():
    return testing.make_video_bytes(num_frames=40, fps=10, width=320, height=240, seed=1, bframes=2)


def test_load_video_matches_in_process(pool, clip):
    frames, meta = pool.load_video(clip, num_frames=8)
    ref, ref_meta = load_video(clip, num_frames=8)
    assert frames.nbytes >= 1 << 20  # large enough to come back through shared memory
    np.testing.assert_array_equal(frames, ref)
    assert meta == ref_meta
    assert [testing.read_frame_index(f) for f in frames] == meta.frames_indices
    frames[0, 0, 0] = 1  # an ordinary writable array


def test_large_and_small_results(pool):
    big = pool.submit(_array, 5_000_003).result()
    np.testing.assert_array_equal(big, _array(5_000_003))
    assert pool.submit(_array, 10).result().tolist() == list(range(10))
    assert pool.submit(_pid).result() != os.getpid()


def test_exceptions_come_back_as_raised(pool):
    with pytest.raises(KeyError, match="mine"):
        pool.submit(_raise, "mine").result()
    crashed = pool.crashed
    with pytest.raises(KeyError, match="unpickled"):  # a job the worker cannot unpickle fails alone
        pool.submit(_pid, _FailsToUnpickle()).result()
    with pytest.raises(Exception, match="pickle"):  # one the caller cannot pickle too
        pool.submit(_pid, lambda: 0).result()
    assert pool.crashed == crashed
    assert pool.submit(_sleep, 0).result() == 0
    with pytest.raises(VideoLoadError, match="<bytes>: not a readable video"):
        pool.load_video(b"not a video at all" * 100, num_frames=4)


@pytest.mark.parametrize(
    ("job", "arg", "named"),
    [(_exit, 7, "exit code 7"), (_signal, signal.SIGSEGV, "SIGSEGV"), (_signal, signal.SIGKILL, "SIGKILL")],
)
def test_a_dead_worker_costs_one_job(pool, clip, job, arg, named):
    crashed = pool.crashed
    with pytest.raises(VideoLoadError, match=f"crashed \\(.*{named}"):
        pool.submit(job, arg).result(timeout=30)
    assert pool.crashed == crashed + 1
    frames, meta = pool.load_video(clip, num_frames=4)  # the pool keeps serving
    assert meta.frames_indices == [0, 13, 26, 39]


def test_worker_killed_from_outside_mid_job(pool, clip):
    pids = {pool.submit(_pid).result() for _ in range(8)}
    futures = [pool.submit(_sleep, 2.0) for _ in range(2)]  # both workers busy
    time.sleep(0.5)
    victim = sorted(pids)[0]
    for p in pids:
        if p == victim:
            os.kill(p, signal.SIGKILL)
    outcomes = []
    for f in futures:
        try:
            outcomes.append(f.result(timeout=30))
        except VideoLoadError as exc:
            outcomes.append(str(exc))
    assert sum("SIGKILL" in str(o) for o in outcomes) == 1, outcomes
    assert 2.0 in outcomes
    assert pool.load_video(clip, num_frames=2)[1].frames_indices == [0, 39]


def test_deadline_kills_a_stuck_job(pool, clip):
    hung = pool.hung
    t0 = time.monotonic()
    with pytest.raises(VideoLoadError, match="longer than the deadline of 5 s"):
        pool.submit(_sleep, 60).result()
    assert time.monotonic() - t0 < 10
    assert pool.hung == hung + 1
    assert pool.submit(_sleep, 0.01).result() == 0.01


def test_concurrent_jobs_and_file_objects(pool, clip, tmp_path):
    import io

    path = tmp_path / "clip.mp4"
    path.write_bytes(clip)
    sources = [s for _ in range(3) for s in (clip, str(path), io.BytesIO(clip))]
    futures = [pool.submit_load_video(src, num_frames=5) for src in sources]
    results = [f.result(timeout=60) for f in futures]
    ref = load_video(clip, num_frames=5)[0]
    for frames, _ in results:
        np.testing.assert_array_equal(frames, ref)
    arr = np.zeros((3, 48, 64, 3), np.uint8)  # frames in memory are sampled in this process
    assert pool.load_video(arr, num_frames=2)[1].decode_mode == "array"


def test_arguments_and_close():
    with pytest.raises(ValueError, match="workers"):
        DecodePool(workers=0)
    with pytest.raises(ValueError, match="deadline_s"):
        DecodePool(deadline_s=0)
    with pytest.raises(ValueError, match="start_method"):
        DecodePool(start_method="fork")
    with pytest.raises(ValueError, match="start_method"):
        DecodePool(start_method="forkserver")
    p = DecodePool(workers=1, deadline_s=None, start_method="spawn")
    assert p.submit(_sleep, 0).result(timeout=60) == 0
    pending = p.submit(_sleep, 30)
    time.sleep(0.3)
    p.close()
    p.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        pending.result(timeout=15)
    with pytest.raises(RuntimeError, match="closed"):
        p.submit(_pid)


def test_a_worker_that_cannot_start_is_a_clear_error(monkeypatch):
    from llava_next_video_hf.video_io import isolated

    monkeypatch.setattr(isolated, "_WORKER_CODE", "import sys; sys.exit(3)")
    with pytest.raises(RuntimeError, match=r"could not start its workers: .*did not start \(exit code 3\)"):
        DecodePool(workers=1)


def test_a_real_decoder_hang_costs_one_job(clip):
    """A fuzz mutant (bench/fuzz_video_io.py, seed 2: an HEVC Matroska clip, zeroed run + damaged
    header + duplicated bytes) on which FFmpeg 8.1's frame-threaded HEVC decoder never returns:
    the pool's deadline stops it and the pool keeps serving; ``threads=1`` (no FFmpeg frame
    threads) refuses it at once in-process."""
    from pathlib import Path

    data = (Path(__file__).parent / "data" / "hevc_frame_threads_deadlock.mkv").read_bytes()
    with DecodePool(workers=1, deadline_s=5) as p:
        t0 = time.monotonic()
        try:
            p.load_video(data, num_frames=32)
        except VideoLoadError as exc:  # the deadline (FFmpeg 8.1), or a refusal once FFmpeg is fixed
            print(f"{type(exc).__name__}: {exc}")
        assert time.monotonic() - t0 < 30
        assert p.load_video(clip, num_frames=2)[1].frames_indices == [0, 39]
    t0 = time.monotonic()
    with pytest.raises(VideoLoadError, match="truncated or corrupt"):
        load_video(data, num_frames=32, threads=1)
    assert time.monotonic() - t0 < 10
