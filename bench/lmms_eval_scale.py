"""Benchmark: wall time of lmms-eval on the synthetic task with our backend, three ways, in one run.

Usage:
    PYTHONPATH=src .venv/bin/python bench/lmms_eval_scale.py [--clips 64] [--model CKPT] [--json out.json]

``evaluation.write_task`` writes ``--clips`` synthetic clips (the task ``video_qa_synthetic``); the
same checkpoint (the shipped tiny model unless ``--model``) answers all of them through
``lmms-eval eval`` as a user runs it:

* ``transformers x1``: one process (``python -m lmms_eval eval ...``);
* ``transformers x2``: ``accelerate launch --multi_gpu --num_processes 2`` (CPU: gloo);
* ``vllm engine``: one process, ``engine=vllm`` (continuous batching over the request list).

Wall time is the whole command (start-up, model load or engine start, evaluation, writing results);
lmms-eval's own ``total_evaluation_time_seconds`` is printed next to it. Ratios are against
``transformers x1`` measured in the same run. Each run's per-document answers are checked against
``transformers x1`` (every document answered once, the same answer).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import llava_next_video_hf
from llava_next_video_hf.evaluation import MODEL_NAME, TASK_NAME, write_task

SHIPPED = Path(llava_next_video_hf.__file__).parent / "assets" / "tiny-video-qa"


def run(root: Path, name: str, model_args: str, launcher: list[str]) -> dict:
    hidden = ("ACCELERATE_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_", "TORCHELASTIC")
    env = {k: v for k, v in os.environ.items() if not k.startswith(hidden)}
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(root / "hf"), TOKENIZERS_PARALLELISM="false"
    )
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cmd = [
        *launcher, "-m", "lmms_eval", "eval", "--model", MODEL_NAME, "--model_args", model_args,
        "--tasks", TASK_NAME, "--include_path", str(root / "task"), "--batch_size", "1",
        "--output_path", str(root / name), "--log_samples",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (results,) = (root / name).rglob("*_results.json")
    (samples,) = (root / name).rglob(f"*_samples_{TASK_NAME}.jsonl")
    data = json.loads(results.read_text())
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return {
        "name": name,
        "wall_s": wall,
        "lmms_eval_s": float(data.get("total_evaluation_time_seconds", "nan")),
        "accuracy": data["results"][TASK_NAME]["accuracy,none"],
        "doc_ids": sorted(row["doc_id"] for row in rows),
        "answers": {row["doc_id"]: row["filtered_resps"] for row in rows},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--model", default=str(SHIPPED))
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    base = f"pretrained={args.model},max_new_tokens={args.new_tokens}"
    py = [sys.executable]
    launch2 = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    with tempfile.TemporaryDirectory(prefix="lmms_scale_") as tmp:
        root = Path(tmp)
        write_task(root / "task", args.clips)
        runs = [
            run(root, "transformers x1", base, py),
            run(root, "transformers x2", base, launch2),
            run(root, "vllm engine", f"{base},engine=vllm", py),
        ]
    anchor = runs[0]
    print(f"{args.clips} documents, {os.cpu_count()} CPUs, model {args.model}")
    print(f"{'run':<18}{'wall s':>9}{'lmms-eval s':>13}{'x1 / this':>11}{'accuracy':>10}  answers")
    for r in runs:
        once = r["doc_ids"] == list(range(args.clips))
        same = r["answers"] == anchor["answers"]
        check = f"{'each doc once' if once else 'DOCS WRONG'}, {'same as x1' if same else 'DIFFER from x1'}"
        print(
            f"{r['name']:<18}{r['wall_s']:>9.1f}{r['lmms_eval_s']:>13.1f}"
            f"{anchor['wall_s'] / r['wall_s']:>11.2f}{r['accuracy']:>10.3f}  {check}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "answers"} for r in runs]))


if __name__ == "__main__":
    main()
