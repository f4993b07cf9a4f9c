"""lmms-eval over several processes and through vLLM: the ``llava_next_video_anyres`` backend under
``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo) gives each document to exactly one
rank and the same answers and accuracy as one process; ``engine=vllm`` gives the same greedy answers
as the transformers engine; a backend error makes ``lmms-eval`` exit non-zero (lmms-eval itself
prints the error and exits 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llava_next_video_hf
from llava_next_video_hf.evaluation import MODEL_NAME, TASK_NAME, write_task

pytestmark = pytest.mark.lmms_eval

SHIPPED = Path(llava_next_video_hf.__file__).parent / "assets" / "tiny-video-qa"
CLIPS = 16


def clean_env(root: Path) -> dict[str, str]:
    """Offline, and with no launcher variables inherited: the launcher under test sets them."""
    hidden = ("ACCELERATE_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_", "TORCHELASTIC")
    env = {k: v for k, v in os.environ.items() if not k.startswith(hidden)}
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(root / "hf")}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: a tiny model on a shared machine
    return {**env, **offline, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def lmms_eval(root: Path, task: Path, out: str, model_args: str, launcher: list[str] | None = None):
    """``lmms-eval eval`` on the synthetic task; (completed process, results, sample rows)."""
    cmd = [
        *(launcher or [sys.executable]), "-m", "lmms_eval", "eval", "--model", MODEL_NAME,
        "--model_args", model_args, "--tasks", TASK_NAME, "--include_path", str(task),
        "--batch_size", "1", "--output_path", str(root / out), "--log_samples",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=clean_env(root), capture_output=True, text=True, timeout=900, cwd=root)
    found = list((root / out).rglob("*_results.json"))
    if proc.returncode != 0 or not found:
        return proc, None, None
    (samples,) = (root / out).rglob(f"*_samples_{TASK_NAME}.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return proc, json.loads(found[0].read_text()), rows


def by_doc(rows: list[dict]) -> dict[int, str]:
    return {row["doc_id"]: row["filtered_resps"] for row in rows}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_scale")
    return root, write_task(root / "task", CLIPS)


@pytest.fixture(scope="module")
def one_process(task):
    root, folder = task
    proc, results, rows = lmms_eval(root, folder, "one", f"pretrained={SHIPPED},max_new_tokens=4")
    assert results is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results, rows


@pytest.mark.scale
def test_two_processes_split_the_documents_and_match_one_process(task, one_process):
    root, folder = task
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    proc, results, rows = lmms_eval(root, folder, "two", f"pretrained={SHIPPED},max_new_tokens=4", launcher)
    assert results is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    # accelerate (whose gather and barriers lmms-eval uses) sees both processes, on CPU as gloo MULTI_CPU
    log = proc.stdout + proc.stderr
    assert "process 1 of 2 (MULTI_CPU)" in log and "process 0 of 2 (MULTI_CPU)" in log
    one_results, one_rows = one_process
    # every document once (a rank answering all documents would make 2 * CLIPS rows)
    assert sorted(row["doc_id"] for row in rows) == list(range(CLIPS))
    assert sorted(row["doc_id"] for row in one_rows) == list(range(CLIPS))
    assert by_doc(rows) == by_doc(one_rows)
    accuracy = results["results"][TASK_NAME]["accuracy,none"]
    assert accuracy == one_results["results"][TASK_NAME]["accuracy,none"]
    assert accuracy >= 0.8  # the shipped model answers these clips (0.95 on 200 held-out ones)


def test_a_backend_error_exits_non_zero(task):
    """lmms-eval catches exceptions and exits 0 with no results; our backend's errors do not pass silently."""
    root, folder = task
    proc, results, _ = lmms_eval(root, folder, "broken", f"pretrained={root / 'no-such-checkpoint'}")
    assert proc.returncode != 0 and results is None
    assert f"{MODEL_NAME}: " in proc.stderr and "no-such-checkpoint" in proc.stderr


@pytest.mark.vllm
def test_vllm_engine_gives_the_transformers_answers(task, one_process):
    root, folder = task
    args = f"pretrained={SHIPPED},max_new_tokens=4,engine=vllm,max_model_len=256"
    proc, results, rows = lmms_eval(root, folder, "vllm", args)
    assert results is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    one_results, one_rows = one_process
    assert sorted(row["doc_id"] for row in rows) == list(range(CLIPS))
    assert by_doc(rows) == by_doc(one_rows)
    assert (
        results["results"][TASK_NAME]["accuracy,none"] == one_results["results"][TASK_NAME]["accuracy,none"]
    )
