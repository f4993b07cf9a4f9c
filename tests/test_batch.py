"""``llava-next-video batch`` / ``batch.run``: one record per row, answers equal to ``generate``'s,
bad rows as error records, resume after kill -9 and Ctrl-C, a failing output stops cleanly.

The embedded tiny trained checkpoint and synthetic clips of mixed lengths and sizes; the reference
answers come from ``cli.generate`` (transformers, one video at a time). One vLLM engine is shared
by this module's vLLM tests.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava_next_video_hf import batch, cli, testing
from llava_next_video_hf.batch.inputs import BatchInputError, parse_shard, read_rows, shard_rows
from llava_next_video_hf.batch.output import BatchOutputError, OutputFile
from llava_next_video_hf.video_io import load_video

CKPT = cli.default_checkpoint()
PROMPT = "What color is the square?"
#: (frames, fps, width, height): 1 s to 12 s, portrait and landscape, tiny to 640x360
CLIPS = [
    (40, 20, 320, 240),
    (90, 20, 160, 120),
    (20, 10, 640, 360),
    (60, 20, 200, 300),
    (240, 20, 96, 64),
    (9, 3, 128, 128),
]


def read(path: Path) -> list[dict]:
    """Every line of ``path`` parsed (fails on a partial or broken line)."""
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batch") / "clips"
    (root / "sub").mkdir(parents=True)
    out = {}
    for i, (n, fps, w, h) in enumerate(CLIPS):
        folder = root / "sub" if i % 2 else root
        out[f"c{i}"] = testing.make_video(
            folder / f"c{i}.mp4", num_frames=n, fps=fps, width=w, height=h, seed=i
        )
    (root / "notes.txt").write_text("not a video, not picked up from a folder")
    return out


@pytest.fixture(scope="module")
def expected(clips) -> dict[str, str]:
    """``generate``'s greedy answer for each clip (the reference)."""
    return {
        str(path): cli.generate(CKPT, PROMPT, video=str(path), engine="hf", max_new_tokens=12)
        for path in clips.values()
    }


def run_hf(inputs, out, **kwargs):
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("max_new_tokens", 12)
    kwargs.setdefault("workers", 2)
    return batch.run(CKPT, inputs, out, engine="hf", progress=False, **kwargs)


# ----------------------------------------------------------------------------- input
def test_inputs_folder_glob_text_and_manifests(clips, tmp_path):
    root = clips["c0"].parent
    paths = sorted(str(p) for p in clips.values())
    assert [r.video for r in read_rows(root, PROMPT)] == paths  # recursive, videos only, sorted
    assert [r.id for r in read_rows(root, PROMPT)] == paths  # id defaults to the path
    assert [r.video for r in read_rows(str(root / "**" / "*.mp4"), PROMPT)] == paths
    listing = tmp_path / "list.txt"
    listing.write_text("# my clips\n" + "\n".join(paths[:2]) + "\n\nhttps://example.com/v.mp4\n")
    assert [r.video for r in read_rows(listing, PROMPT)] == [*paths[:2], "https://example.com/v.mp4"]

    rows = [
        {"id": "a", "video": paths[0], "prompt": "Which way does it move?", "split": "val", "n": 3},
        {"id": "b", "video": paths[1], "split": "test", "n": 4},
    ]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv_path = tmp_path / "m.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "video", "prompt", "split", "n"])
        w.writeheader()
        w.writerows(rows)
    import pandas as pd

    parquet = tmp_path / "m.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    for source in (jsonl, csv_path, parquet, rows, pd.DataFrame(rows)):
        got = read_rows(source, PROMPT)
        assert [(r.id, r.video, r.prompt, r.extra["split"]) for r in got] == [
            ("a", paths[0], "Which way does it move?", "val"),
            ("b", paths[1], PROMPT, "test"),
        ], source
        assert str(got[0].extra["n"]) == "3"


def test_inputs_refused_up_front(clips, tmp_path):
    path = str(clips["c0"])
    with pytest.raises(BatchInputError, match="duplicate id 'x'"):
        read_rows([{"id": "x", "video": path}, {"id": "x", "video": path}], PROMPT)
    with pytest.raises(BatchInputError, match="has no prompt"):
        read_rows([path])
    with pytest.raises(BatchInputError, match="no such folder or file"):
        read_rows(tmp_path / "nowhere")
    with pytest.raises(BatchInputError, match="matches no files"):
        read_rows(str(tmp_path / "*.mp4"), PROMPT)
    with pytest.raises(BatchInputError, match="would be overwritten"):
        read_rows([{"video": path, "answer": "cheat"}], PROMPT)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video": "a.mp4"}\n{oops\n')
    with pytest.raises(BatchInputError, match="bad.jsonl:2"):
        read_rows(bad, PROMPT)


def test_shards_are_disjoint_and_cover_the_input(clips):
    rows = read_rows(clips["c0"].parent, PROMPT)
    shards = [shard_rows(rows, parse_shard(f"{k}/4")) for k in range(4)]
    ids = [r.id for s in shards for r in s]
    assert sorted(ids) == sorted(r.id for r in rows) and len(ids) == len(set(ids))
    for text in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(BatchInputError, match="--shard"):
            parse_shard(text)


# ----------------------------------------------------------------------------- transformers engine
def test_folder_on_transformers_answers_like_generate(clips, expected, tmp_path):
    out = tmp_path / "out.jsonl"
    summary = run_hf(clips["c0"].parent, out, batch_size=3)
    records = read(out)
    assert summary.done == len(CLIPS) and summary.failed == 0
    assert sorted(r["id"] for r in records) == sorted(expected)
    for rec in records:
        assert rec["answer"] == expected[rec["video"]], rec["video"]
        _, meta = load_video(rec["video"], num_frames=8)  # the checkpoint's default sampling
        assert rec["frames"]["indices"] == meta.frames_indices
        assert rec["frames"]["timestamps"] == pytest.approx(meta.timestamps, abs=1e-5)
        assert rec["finish_reason"] in ("stop", "length") and rec["output_tokens"] >= 1
        assert rec["prompt_tokens"] > 100  # the video's placeholders are counted
        assert set(rec["seconds"]) == {"decode", "queue", "generate"}


def test_manifest_with_per_row_prompts_carries_columns(clips, tmp_path):
    videos = [str(clips["c0"]), str(clips["c3"])]
    questions = ["What color is the square?", "Where does the square move?"]
    manifest = tmp_path / "qa.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "video": v, "prompt": q, "source": "unit"}) + "\n"
            for i, (v, q) in enumerate(zip(videos, questions, strict=True))
        )
    )
    out = tmp_path / "qa.out.jsonl"
    run_hf(manifest, out, prompt=None)
    records = {r["id"]: r for r in read(out)}
    for i, (v, q) in enumerate(zip(videos, questions, strict=True)):
        rec = records[f"q{i}"]
        assert (rec["prompt"], rec["source"]) == (q, "unit")
        assert rec["answer"] == cli.generate(CKPT, q, video=v, engine="hf", max_new_tokens=12)


def test_bad_rows_become_error_records_and_the_rest_finishes(clips, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    data = clips["c0"].read_bytes()
    corrupt.write_bytes(data[: len(data) // 3])  # truncated: the header promises frames that are not there
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("hello, this is text\n" * 50)
    rows = [
        {"id": "good", "video": str(clips["c1"])},
        {"id": "corrupt", "video": str(corrupt)},
        {"id": "empty", "video": str(empty)},
        {"id": "missing", "video": str(tmp_path / "missing.mp4")},
        {"id": "not-video", "video": str(text)},
        {"id": "too-long", "video": str(clips["c2"]), "prompt": "why " * 3000},
        {"id": "unreachable", "video": "http://127.0.0.1:9/clip.mp4"},
        {"id": "good2", "video": str(clips["c4"])},
    ]
    out = tmp_path / "bad.jsonl"
    summary = run_hf(rows, out)
    records = {r["id"]: r for r in read(out)}
    assert len(records) == len(rows) == len(read(out))
    assert "answer" in records["good"] and "answer" in records["good2"]
    kinds = {k: (r["error"]["kind"], r["error"]["message"]) for k, r in records.items() if "error" in r}
    assert set(kinds) == {"corrupt", "empty", "missing", "not-video", "too-long", "unreachable"}
    assert kinds["empty"] == ("video", f"{empty}: the file is empty (0 bytes)")
    assert kinds["missing"] == ("video", f"{tmp_path / 'missing.mp4'}: video file not found")
    assert kinds["not-video"][0] == "video" and "text.mp4" in kinds["not-video"][1]
    assert kinds["corrupt"][0] == "video" and "corrupt.mp4" in kinds["corrupt"][1]
    assert kinds["too-long"][0] == "context" and "context" in kinds["too-long"][1]
    assert kinds["unreachable"][0] == "video" and "127.0.0.1:9" in kinds["unreachable"][1]
    assert (summary.done, summary.failed) == (2, 6)
    # a re-run skips everything; --retry-failed runs the failed rows again, each still once
    assert run_hf(rows, out).skipped == len(rows)
    empty.write_bytes(clips["c5"].read_bytes())  # fixed
    summary = run_hf(rows, out, retry_failed=True)
    assert (summary.skipped, summary.done, summary.failed) == (2, 1, 5)
    again = read(out)
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in rows)
    assert "answer" in {r["id"]: r for r in again}["empty"]


def test_a_decoder_killed_mid_row_fails_that_row_only(clips, tmp_path):
    """A decoding worker that dies (here SIGKILL while it downloads a slow URL) costs its row an
    error record; the pool replaces the worker and the other rows are answered."""
    import http.server
    import threading

    import psutil

    from llava_next_video_hf.video_io.isolated import WORKER_NAME

    data = clips["c0"].read_bytes()
    started = threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            started.set()
            try:
                for i in range(0, len(data), 512):
                    self.wfile.write(data[i : i + 512])
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/slow.mp4"

    def kill_the_downloader() -> None:
        assert started.wait(120)
        for child in psutil.Process().children(recursive=True):
            if child.name() == WORKER_NAME and any(
                c.raddr and c.raddr[1] == server.server_address[1] for c in child.net_connections()
            ):
                child.kill()

    killer = threading.Thread(target=kill_the_downloader)
    killer.start()
    rows = [
        {"id": "slow", "video": url},
        {"id": "a", "video": str(clips["c1"])},
        {"id": "b", "video": str(clips["c3"])},
    ]
    try:
        out = tmp_path / "k.jsonl"
        summary = run_hf(rows, out)
        records = {r["id"]: r for r in read(out)}
    finally:
        killer.join()
        server.shutdown()
    assert (summary.done, summary.failed) == (2, 1)
    assert records["slow"]["error"]["kind"] == "video"
    assert "SIGKILL" in records["slow"]["error"]["message"], records["slow"]["error"]
    assert "answer" in records["a"] and "answer" in records["b"]


def test_output_is_locked_and_foreign_files_are_not_appended_to(clips, tmp_path):
    out = tmp_path / "o.jsonl"
    with OutputFile(out):
        with pytest.raises(BatchOutputError, match="being written by another batch job"):
            OutputFile(out)
    other = tmp_path / "other.jsonl"
    other.write_text('{"not": "ours"}\n')
    with pytest.raises(BatchOutputError, match="other.jsonl:1 is not a record"):
        run_hf([str(clips["c0"])], other)
    assert other.read_text() == '{"not": "ours"}\n'


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llava_next_video_hf.cli", "batch", str(CKPT), *args]


def _env() -> dict[str, str]:
    src = str(Path(batch.__file__).parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def many(tmp_path_factory, clips) -> tuple[Path, dict[str, str]]:
    """16 rows (the clips, several times under different ids) and the uninterrupted run's answers."""
    root = tmp_path_factory.mktemp("many")
    paths = list(clips.values())
    manifest = root / "many.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"id": f"r{i:02d}", "video": str(paths[i % len(paths)])}) + "\n" for i in range(16)
        )
    )
    ref = root / "ref.jsonl"
    run_hf(manifest, ref, batch_size=1)
    return manifest, {r["id"]: r["answer"] for r in read(ref)}


def _wait_for_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if out.exists() and out.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{out} did not reach {n} lines")


@pytest.mark.slow
def test_kill_9_half_way_then_resume(many, tmp_path):
    manifest, reference = many
    out = tmp_path / "k.jsonl"
    args = _cli(str(manifest), "-o", str(out), "--prompt", PROMPT, "--engine", "hf", "--max-new-tokens", "12")
    args += ["--batch-size", "1", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(args, env=_env(), start_new_session=True, stderr=subprocess.PIPE, text=True)
    _wait_for_lines(out, 8, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its decoding workers, without warning
    proc.wait()
    first = read(out)
    assert 8 <= len(first) < 16
    done = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(first)} skipped" in done.stderr
    records = read(out)
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(reference) and len(ids) == len(set(ids))
    assert {r["id"]: r["answer"] for r in records} == reference
    assert records[: len(first)] == first  # nothing written before was touched


@pytest.mark.slow
def test_partial_last_line_is_cut_on_resume(many, tmp_path):
    manifest, reference = many
    out = tmp_path / "p.jsonl"
    rows = read_rows(manifest, PROMPT)[:3]
    run_hf(rows, out)
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"id": "r03", "video": "x", "answ')  # what a kill mid-write could leave
    run_hf(read_rows(manifest, PROMPT)[:5], out)
    records = read(out)
    assert sorted(r["id"] for r in records) == ["r00", "r01", "r02", "r03", "r04"]  # in finishing order
    assert {r["id"]: r["answer"] for r in records} == {
        k: reference[k] for k in ("r00", "r01", "r02", "r03", "r04")
    }


@pytest.mark.slow
def test_sigint_stops_cleanly(many, tmp_path):
    manifest, reference = many
    out = tmp_path / "i.jsonl"
    args = _cli(str(manifest), "-o", str(out), "--prompt", PROMPT, "--engine", "hf", "--max-new-tokens", "12")
    args += ["--batch-size", "1", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(args, env=_env(), stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_lines(out, 2, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted (re-run the same command to resume)" in err
    assert "Traceback" not in err
    records = read(out)
    assert 2 <= len(records) < 16
    assert all(r["answer"] == reference[r["id"]] for r in records)


@pytest.mark.parametrize("failure", ["ENOSPC", "short write"])
def test_output_write_failure_stops_with_a_clear_error_and_keeps_what_was_written(
    many, tmp_path, monkeypatch, failure
):
    """The 5th record's write fails as a full disk fails it: refused outright (ENOSPC), or part of
    the bytes taken (a short write, what a file size limit gives). The job stops with a clear
    error; the 4 records before stay whole; a re-run completes the file."""
    import errno

    from llava_next_video_hf.batch import output

    manifest, reference = many
    out = tmp_path / "w.jsonl"
    calls = []

    def full_disk(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) <= 4:
            return os.write(fd, data)
        if failure == "ENOSPC":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data[: len(data) // 2])

    monkeypatch.setattr(output, "_write", full_disk)
    with pytest.raises(BatchOutputError) as info:
        run_hf(manifest, out)
    message = str(info.value)
    assert message.startswith(f"cannot write to {out}: ")
    assert ("No space left on device" if failure == "ENOSPC" else "the file system took only") in message
    assert "the 4 record(s) written by this run are kept" in message and "re-run the same command" in message
    kept = read(out)  # every line whole, the partial one taken back
    assert len(kept) == 4
    monkeypatch.setattr(output, "_write", os.write)
    run_hf(manifest, out)
    records = read(out)
    assert records[:4] == kept
    assert {r["id"]: r.get("answer") for r in records} == reference and len(records) == 16


def test_cli_errors_are_one_line(tmp_path, clips):
    out = tmp_path / "x.jsonl"
    manifest = tmp_path / "dup.jsonl"
    manifest.write_text(f'{{"id": 1, "video": "{clips["c0"]}"}}\n{{"id": 1, "video": "{clips["c1"]}"}}\n')
    res = subprocess.run(
        _cli(str(manifest), "-o", str(out), "--prompt", "hi"), env=_env(), capture_output=True, text=True
    )
    assert (
        res.returncode == 1
        and res.stderr.strip() == "error: duplicate id '1' (rows 1 and 2); ids must be unique"
    )
    res = subprocess.run(
        _cli(str(clips["c0"]), "-o", str(out), "--prompt", "hi", "--rope-factor", "2"),
        env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 1 and "--rope-factor works with --engine hf" in res.stderr


# ----------------------------------------------------------------------------- vLLM engine
@pytest.fixture(scope="module")
def vllm_engine():
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from llava_next_video_hf.batch.engines import Sampling, VllmEngine

    engine = VllmEngine(str(CKPT), Sampling(max_new_tokens=12), capacity=4)
    yield engine
    engine.close()


@pytest.mark.vllm
def test_folder_on_vllm_answers_like_generate_and_resumes(clips, expected, vllm_engine, tmp_path):
    out = tmp_path / "v.jsonl"
    root = clips["c0"].parent
    first = batch.run(CKPT, root, out, prompt=PROMPT, engine=vllm_engine, max_new_tokens=12, workers=2,
                      shard="1/2", progress=False)  # fmt: skip
    assert first.done == len(CLIPS) // 2
    summary = batch.run(CKPT, root, out, prompt=PROMPT, engine=vllm_engine, max_new_tokens=12, workers=2,
                        progress=False)  # fmt: skip
    assert (summary.skipped, summary.done) == (len(CLIPS) // 2, len(CLIPS) - len(CLIPS) // 2)
    records = read(out)
    assert sorted(r["id"] for r in records) == sorted(expected)
    for rec in records:
        assert rec["answer"] == expected[rec["video"]], rec["video"]
        _, meta = load_video(rec["video"], num_frames=8)
        assert rec["frames"]["indices"] == meta.frames_indices
        assert rec["finish_reason"] in ("stop", "length")


@pytest.mark.vllm
def test_bad_rows_on_vllm(clips, vllm_engine, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    rows = [
        {"id": "good", "video": str(clips["c2"])},
        {"id": "empty", "video": str(empty)},
        {"id": "too-long", "video": str(clips["c2"]), "prompt": "why " * 3000},
    ]
    out = tmp_path / "vb.jsonl"
    summary = batch.run(CKPT, rows, out, prompt=PROMPT, engine=vllm_engine, max_new_tokens=12, progress=False)
    records = {r["id"]: r for r in read(out)}
    assert (summary.done, summary.failed) == (1, 2)
    assert records["empty"]["error"]["kind"] == "video" and records["too-long"]["error"]["kind"] == "context"
    assert records["good"]["answer"] == cli.generate(CKPT, PROMPT, video=str(clips["c2"]), max_new_tokens=12)
