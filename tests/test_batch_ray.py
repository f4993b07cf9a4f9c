"""``batch --ray`` on a local two-node Ray cluster started here (``ray start --head`` and a second
``ray start --address``, each in its own process group, torn down by killing those groups): the same
records as the single-machine job, and a re-run resumes the same way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava_next_video_hf import batch, cli, testing
from llava_next_video_hf.vllm_plugin.testing import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ray = pytest.importorskip("ray")

CKPT = cli.default_checkpoint()
PROMPT = "What color is the square?"
SRC = str(Path(batch.__file__).parents[2])


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def _ray_start(*args: str) -> subprocess.Popen:
    ray_bin = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen(
        [ray_bin, "start", "--block", "--num-cpus", "2", "--object-store-memory", str(200 * 1024**2), *args],
        env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _alive_nodes(address: str) -> int:
    code = f"import ray; ray.init(address={address!r}, log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    res = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )
    return int(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 and res.stdout.strip() else 0


@pytest.fixture(scope="module")
def cluster():
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs = [
        _ray_start(
            "--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--include-dashboard=false"
        )
    ]
    try:
        time.sleep(5)
        procs.append(_ray_start("--address", address, "--node-ip-address", "127.0.0.1"))
        end = time.monotonic() + 180
        while _alive_nodes(address) < 2:
            assert all(p.poll() is None for p in procs), [
                p.stderr.read() for p in procs if p.poll() is not None
            ]
            assert time.monotonic() < end, "the two-node cluster did not come up"
            time.sleep(2)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


def test_ray_two_nodes_gives_the_single_machine_records(cluster, tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    for i, (n, w, h) in enumerate(
        [(40, 320, 240), (90, 160, 120), (20, 640, 360), (60, 200, 300), (30, 96, 64)]
    ):
        testing.make_video(root / f"c{i}.mp4", num_frames=n, fps=20, width=w, height=h, seed=i)
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    single = tmp_path / "single.jsonl"
    batch.run(CKPT, root, single, prompt=PROMPT, engine="hf", max_new_tokens=12, workers=2, progress=False)

    out = tmp_path / "ray.jsonl"
    args = [sys.executable, "-m", "llava_next_video_hf.cli", "batch", str(CKPT), str(root), "-o", str(out)]
    args += [
        "--prompt",
        PROMPT,
        "--engine",
        "hf",
        "--max-new-tokens",
        "12",
        "--ray",
        "--ray-address",
        cluster,
    ]
    args += ["--replicas", "2", "--batch-size", "2", "--no-progress"]
    res = subprocess.run(args + ["--shard", "0/2"], env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600)  # resumes
    assert res.returncode == 0, res.stderr
    assert "3 skipped" in res.stderr
    got = sorted((_strip(json.loads(line)) for line in out.read_text().splitlines()), key=lambda r: r["id"])
    want = sorted(
        (_strip(json.loads(line)) for line in single.read_text().splitlines()), key=lambda r: r["id"]
    )
    assert got == want
    assert sum("error" in r for r in got) == 1
