"""lmms-eval 0.7 runs our checkpoints: the ``llava_next_video_anyres`` backend (found through the
``lmms_eval.models`` entry point) on the local ``video_qa_synthetic`` task written by
``evaluation.write_task``, offline, end to end through lmms-eval's own CLI. Its answers must be the
ones ``llava-next-video generate`` gives on the same clips, and the shipped tiny model must score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llava_next_video_hf
from llava_next_video_hf.evaluation import MODEL_NAME, TASK_NAME, write_task
from llava_next_video_hf.testing import tasks

pytestmark = pytest.mark.lmms_eval

SHIPPED = Path(llava_next_video_hf.__file__).parent / "assets" / "tiny-video-qa"
CLIPS = 48


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``lmms-eval eval`` on the task with --log_samples; (task folder, results, samples by doc id)."""
    root = tmp_path_factory.mktemp("lmms")
    folder = write_task(root / "task", CLIPS)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(root / "hf")}
    cmd = [
        sys.executable, "-m", "lmms_eval", "eval", "--model", MODEL_NAME,
        "--model_args", f"pretrained={SHIPPED},max_new_tokens=4", "--tasks", TASK_NAME,
        "--include_path", str(folder), "--batch_size", "1", "--output_path", str(root / "out"),
        "--log_samples",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (results,) = (root / "out").rglob("*_results.json")
    (samples,) = (root / "out").rglob(f"*_samples_{TASK_NAME}.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return folder, json.loads(results.read_text()), {row["doc_id"]: row for row in rows}


def test_lmms_eval_scores_the_shipped_model_on_the_local_task(run):
    _, results, samples = run
    accuracy = results["results"][TASK_NAME]["accuracy,none"]
    assert len(samples) == CLIPS
    assert accuracy == pytest.approx(sum(row["accuracy"] for row in samples.values()) / CLIPS)
    assert accuracy >= 0.85  # the shipped model: 0.95 on 200 held-out clips (bench/RESULTS.md)


def _response(row: dict) -> str:
    """The model's answer in a logged sample: the task has no ``filter_list``, so lmms-eval 0.7 logs
    what ``generate_until`` returned, as ``filtered_resps`` (a string, or nested in lists)."""
    resps = row["filtered_resps"]
    while isinstance(resps, list):
        (resps,) = resps
    return resps


def test_lmms_eval_answers_are_the_generate_commands_answers(run):
    """Every document's whole answer string, as logged by lmms-eval, is ``generate``'s (cut at the task's
    ``until: ["\\n"]``, as lmms-eval's contract says), not just its first word."""
    from llava_next_video_hf.cli import generate

    folder, _, samples = run
    docs = [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]
    assert len(docs) == len(samples) == CLIPS
    got = {doc["id"]: _response(samples[doc["id"]]) for doc in docs}
    expected = {
        doc["id"]: generate(SHIPPED, doc["question"], video=doc["video"], max_new_tokens=4)
        .split("\n")[0]
        .strip()
        for doc in docs
    }
    assert got == expected
    assert all(got.values())  # answers, not empty strings that would compare equal


def test_loglikelihood_prefers_the_right_answer(run):
    """lmms-eval's multiple-choice interface: the answer's log-probability beats the wrong ones."""
    from lmms_eval.api.instance import Instance

    from llava_next_video_hf.evaluation import LlavaNextVideoLmms

    folder, _, _ = run
    docs = [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()][:8]
    model = LlavaNextVideoLmms(pretrained=str(SHIPPED))
    model.task_dict = {TASK_NAME: {"test": {doc["id"]: doc for doc in docs}}}
    wins = greedy = 0
    for doc in docs:
        options = [doc["answer"], *(a for a in tasks.ANSWERS[doc["kind"]] if a != doc["answer"])]
        requests = [
            Instance(
                request_type="loglikelihood",
                arguments=(
                    doc["question"],
                    " " + option,
                    lambda d: [d["video"]],
                    doc["id"],
                    TASK_NAME,
                    "test",
                ),
                idx=i,
                metadata={"task": TASK_NAME, "doc_id": doc["id"], "repeats": 1},
            )
            for i, option in enumerate(options)
        ]
        scores = model.loglikelihood(requests)
        wins += max(range(len(options)), key=lambda i: scores[i][0]) == 0
        greedy += scores[0][1]
    assert wins >= 7 and greedy >= 6, (wins, greedy)
