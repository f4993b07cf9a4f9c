"""The paper's benchmarks as lmms-eval defines them, run end to end with our backend on local stand-in
data (``llava_next_video_hf.testing.benchmarks``: the Hub datasets' columns and video file layout,
synthetic clips): lmms-eval's own ``doc_to_visual`` / ``doc_to_text`` / ``process_results`` and metrics,
reached only through ``include`` + ``dataset_path``/``dataset_kwargs`` + ``--include_path``.

* exact-match tasks (NExT-QA MC, EgoSchema subset, Video-MME, Perception Test MC; EgoSchema also as
  ``egoschema_subset_mcppl``: lmms-eval's ``loglikelihood`` requests) report their metric;
* GPT-judge tasks (ActivityNet-QA, VideoChatGPT generic/temporal/consistency) run up to the judge: a
  loopback stand-in receives the judge requests, which carry our model's answers, and refuses them
  (lmms-eval logs the refusal; VideoChatGPT scores 0, while lmms-eval 0.7.3's ActivityNet-QA
  ``process_results`` fails on the missing review with a TypeError, so that run has no results);
* NExT-QA open-ended's WUPS needs pywsd and NLTK's WordNet data (downloaded from GitHub at import):
  its answers are produced with ``--predict_only``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import llava_next_video_hf
from llava_next_video_hf.evaluation import MODEL_NAME
from llava_next_video_hf.testing.benchmarks import BENCHMARKS, write_standins

pytestmark = pytest.mark.lmms_eval

SHIPPED = Path(llava_next_video_hf.__file__).parent / "assets" / "tiny-video-qa"
DOCS = 2
REFUSAL = "refused: no GPT judge in this environment (set OPENAI_API_URL / OPENAI_API_KEY to a real one)"
# the tiny model's context is 256 positions; the benchmarks' option lists need a longer one: the
# fixture converts it with a linear RoPE factor of 4 written in (both engines read it from there)
ROPE_FACTOR = 4


class Judge(BaseHTTPRequestHandler):
    """A stand-in for the OpenAI judge: records each request body and refuses it (HTTP 200 with a
    plain-text body, which lmms-eval's judge helpers log as the response and retry without sleeping)."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(json.loads(body))
        data = REFUSAL.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def run_tasks(
    root: Path,
    names: list[str],
    out: str,
    judge_url: str,
    *extra: str,
    scored: bool = True,
    engine: str = "",
):
    args = f"pretrained={root / 'ckpt'},max_new_tokens=8{engine}"
    env = {
        **os.environ, "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "OPENAI_API_URL": judge_url, "OPENAI_API_KEY": "unused", "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    cmd = [
        sys.executable, "-m", "lmms_eval", "eval", "--model", MODEL_NAME, "--model_args", args,
        "--tasks", ",".join(f"{n}_local" for n in names), "--include_path", str(root / "tasks"),
        "--batch_size", "1", "--output_path", str(root / out), "--log_samples", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=root)
    found = list((root / out).rglob("*_results.json"))
    if not scored:
        return proc, None, None
    assert proc.returncode == 0 and found, proc.stdout[-4000:] + proc.stderr[-4000:]
    samples = {}
    for name in names:
        (path,) = (root / out).rglob(f"*_samples_{name}_local.jsonl")
        samples[name] = [json.loads(line) for line in path.read_text().splitlines()]
    return proc, json.loads(found[0].read_text())["results"], samples


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = write_standins(tmp_path_factory.mktemp("benchmarks"), DOCS)
    convert = [sys.executable, "-m", "llava_next_video_hf.cli", "convert", "--from", "ours", str(SHIPPED),
               str(root / "ckpt"), "--rope-factor", str(ROPE_FACTOR), "--no-progress"]  # fmt: skip
    done = subprocess.run(convert, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    Judge.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def scored(standins):
    root, judge_url = standins
    names = [b.task for b in BENCHMARKS if b.task not in ("nextqa_oe_test", "activitynetqa")]
    return run_tasks(root, names, "scored", judge_url)


def test_the_local_yamls_only_include_lmms_evals_task_and_point_at_local_data(standins):
    root, _ = standins
    for bench in BENCHMARKS:
        text = (root / "tasks" / f"{bench.local_task}.yaml").read_text()
        keys = {line.split(":")[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))}
        assert keys == {"include", "task", "dataset_path", "dataset_kwargs"}, (bench.task, keys)
        assert "!function" not in text and f"/lmms_eval/tasks/{bench.yaml}" in text


@pytest.mark.parametrize("bench", [b for b in BENCHMARKS if not b.judge and b.task != "nextqa_oe_test"],
                         ids=lambda b: b.task)  # fmt: skip
def test_exact_match_tasks_report_their_metric(standins, scored, bench):
    _, results, samples = scored
    lines = (standins[0] / "data" / f"{bench.task}.jsonl").read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    value = results[bench.local_task][f"{bench.metric},none"]
    assert isinstance(value, int | float) and 0 <= value <= (100 if bench.task == "videomme" else 1)
    rows = samples[bench.task]
    assert sorted(row["doc_id"] for row in rows) == list(range(DOCS))  # each document once
    for row in rows:
        if bench.likelihood:  # one (log-likelihood, is greedy) per option, from our loglikelihood
            doc = docs[row["doc_id"]]
            options = doc.get("option") or doc["options"]
            assert len(row["filtered_resps"]) == len(options)
            assert all(float(value) <= 0 for value, _ in row["filtered_resps"])
        else:
            assert row["filtered_resps"] and isinstance(row["filtered_resps"][0], str)


@pytest.mark.parametrize("bench", [b for b in BENCHMARKS if b.judge and b.task != "activitynetqa"],
                         ids=lambda b: b.task)  # fmt: skip
def test_judge_tasks_reach_the_judge_with_our_answers_and_report_the_refusal(scored, bench):
    proc, results, samples = scored
    assert f"{bench.metric},none" in results[bench.local_task]
    rows = samples[bench.task]
    assert sorted(row["doc_id"] for row in rows) == list(range(DOCS))
    asked = "\n".join(json.dumps(request) for request in Judge.received)
    for row in rows:  # every answer of ours was put before the judge, next to its question
        answer = (
            row["filtered_resps"][0] if isinstance(row["filtered_resps"], list) else row["filtered_resps"]
        )
        assert json.dumps(answer.strip())[1:-1] in asked, (bench.task, answer)
    assert REFUSAL in proc.stdout + proc.stderr


def test_nextqa_open_ended_answers_every_document(standins):
    root, judge_url = standins
    _, _, samples = run_tasks(root, ["nextqa_oe_test"], "oe", judge_url, "--predict_only")
    rows = samples["nextqa_oe_test"]
    assert sorted(row["doc_id"] for row in rows) == list(range(DOCS))
    # the task's own prompt reached the model: its question plus the open-ended instruction
    assert all(row["input"].endswith("Answer a question using a short phrase or sentence.") for row in rows)


def test_activitynetqa_reaches_the_judge_with_our_answers(standins):
    """Its answers come from our model (``--predict_only``), and the scoring run puts each of them
    before the judge; the refusal then stops lmms-eval 0.7.3's own ``activitynetqa_process_results``
    (it indexes the unparsed review: TypeError) and lmms-eval writes no results, as it would with a
    real judge that fails."""
    root, judge_url = standins
    _, _, samples = run_tasks(root, ["activitynetqa"], "anet_answers", judge_url, "--predict_only")
    rows = samples["activitynetqa"]
    assert sorted(row["doc_id"] for row in rows) == list(range(DOCS))
    before = len(Judge.received)
    proc, _, _ = run_tasks(root, ["activitynetqa"], "anet_scored", judge_url, scored=False)
    asked = "\n".join(json.dumps(request) for request in Judge.received[before:])
    for row in rows:
        answer = (
            row["filtered_resps"][0] if isinstance(row["filtered_resps"], list) else row["filtered_resps"]
        )
        assert f"Predicted Answer: {json.dumps(answer.strip())[1:-1]}" in asked
    log = proc.stdout + proc.stderr
    assert REFUSAL in log and "activitynetqa_process_results" in log
    assert not list((root / "anet_scored").rglob("*_results.json"))


@pytest.mark.vllm
def test_vllm_engine_matches_transformers_on_the_benchmarks(standins, scored):
    """``engine=vllm`` on the same documents: the same greedy answers (generate_until) and the same
    log-likelihoods (loglikelihood, from vLLM's prompt log-probabilities) as the transformers engine."""
    root, judge_url = standins
    names = ["videomme", "perceptiontest_val_mc", "egoschema_subset_mcppl"]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: a tiny model on a shared machine
    _, _, vllm_samples = run_tasks(root, names, "vllm", judge_url, engine=",engine=vllm,max_model_len=1024")
    _, _, hf_samples = scored
    for name in names:
        ours = {row["doc_id"]: row["filtered_resps"] for row in vllm_samples[name]}
        theirs = {row["doc_id"]: row["filtered_resps"] for row in hf_samples[name]}
        assert ours.keys() == theirs.keys() == set(range(DOCS)), name
        for doc_id, resps in theirs.items():
            if isinstance(resps[0], str):
                assert ours[doc_id] == resps, (name, doc_id)
            else:
                got = [float(value) for value, _ in ours[doc_id]]
                assert got == pytest.approx([float(value) for value, _ in resps], abs=1e-3), (name, doc_id)
                assert [bool(g) for _, g in ours[doc_id]] == [bool(g) for _, g in resps], (name, doc_id)
