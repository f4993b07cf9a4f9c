"""Local stand-ins for the paper's lmms-eval benchmarks: lmms-eval's own task definitions, unmodified,
over small datasets laid out like the Hub ones (same columns, same video folders and file names),
with synthetic clips of [`tasks`] in place of the real videos (the Hub datasets cannot be downloaded).

[`write_standins`] writes, under one folder:

* ``hf/<cache_dir>/<video folder>/<name>.mp4``: where each task's ``utils.py`` looks for its videos
  (``$HF_HOME/<cache_dir from its YAML>/...``): run lmms-eval with ``HF_HOME`` set to this ``hf``
  folder. The folder existing is also what stops lmms-eval's snapshot download.
* ``data/<task>.jsonl``: the documents, one JSON object a line, with the Hub dataset's columns.
* ``tasks/<task>_local.yaml``: ``include:`` of lmms-eval's installed task YAML (by absolute path),
  overriding only ``task`` (a new name), ``dataset_path: json`` and ``dataset_kwargs`` (the local
  file): lmms-eval's own loader mechanisms; their ``doc_to_visual`` / ``doc_to_text`` /
  ``process_results`` / metrics run as shipped. Pass the folder as ``--include_path``.

The documents are synthetic questions ([`tasks`]: colour, direction, order, count) dressed in each
benchmark's format (multiple-choice letters, options lists, free-form answers), so exact-match
metrics are meaningful for a model trained on them and the free-form ones reach their GPT judge.

Not here: ``perceptiontest_val_mcppl`` (lmms-eval 0.7.3's ``process_results_mc_ppl`` omits the
``correct`` key its aggregation reads: a KeyError for any model) and ``egoschema`` (full set: scored
by the EgoSchema submission server; ``egoschema_subset`` has the answers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import tasks

LETTERS = "ABCDE"


@dataclass(frozen=True)
class Benchmark:
    """One lmms-eval task of the paper and how its Hub dataset is laid out."""

    task: str  #: lmms-eval's task name
    yaml: str  #: its YAML, relative to ``lmms_eval/tasks``
    video_dir: str  #: where its utils look for videos, relative to ``$HF_HOME``
    split: str  #: the split the task reads
    video_name: Callable[[int], str]  #: the dataset's video column value for clip ``i``
    video_file: Callable[[str], str]  #: file name (under ``video_dir``) for that value
    row: Callable[[int, str, tasks.VideoQA, np.random.Generator], dict[str, Any]]  #: the other columns
    metric: str  #: the metric key lmms-eval reports (``<metric>,none``)
    judge: bool = False  #: the metric needs an external GPT judge
    likelihood: bool = False  #: ``output_type: multiple_choice`` (lmms-eval's ``loglikelihood`` requests)

    @property
    def local_task(self) -> str:
        return f"{self.task}_local"


def _options(example: tasks.VideoQA, rng: np.random.Generator, n: int) -> tuple[list[str], int]:
    """``n`` answer options (the synthetic kind's alternatives, padded with ``none``), the right one's index."""
    wrong = [a for a in tasks.ANSWERS[example.kind] if a != example.answer]
    rng.shuffle(wrong)
    options = (wrong + ["none", "none of these", "cannot tell", "something else"])[: n - 1]
    right = int(rng.integers(n))
    options.insert(right, example.answer)
    return options, right


def _nextqa_mc(i: int, name: str, ex: tasks.VideoQA, rng: np.random.Generator) -> dict[str, Any]:
    options, right = _options(ex, rng, 5)
    return {
        "video": int(name), "frame_count": tasks.file_frames() * 8, "width": 96, "height": 96,
        "question": ex.question, "answer": right, "qid": i, "type": "TN",
        **{f"a{k}": option for k, option in enumerate(options)},
    }  # fmt: skip


def _nextqa_oe(i: int, name: str, ex: tasks.VideoQA, rng: np.random.Generator) -> dict[str, Any]:
    return {
        "video": int(name), "frame_count": tasks.file_frames() * 8, "width": 96, "height": 96,
        "question": ex.question, "answer": ex.answer, "qid": i, "type": "TN", "additional_ref_answer": "",
    }  # fmt: skip


def _free_form(i: int, name: str, ex: tasks.VideoQA, rng: np.random.Generator) -> dict[str, Any]:
    return {
        "video_name": name,
        "question": ex.question,
        "answer": ex.answer,
        "question_id": f"q_{i}",
        "type": "1",
    }


def _consistency(i: int, name: str, ex: tasks.VideoQA, rng: np.random.Generator) -> dict[str, Any]:
    # the Hub rows hold one of the pair's two phrasings, the other "None"
    first = i % 2 == 0
    return {
        "video_name": name,
        "question_1": ex.question if first else "None",
        "question_2": "None" if first else ex.question,
        "answer": ex.answer,
    }


def _egoschema(i: int, name: str, ex: tasks.VideoQA, rng: np.random.Generator) -> dict[str, Any]:
    options, right = _options(ex, rng, 5)
    return {
        "video_idx": name, "question_idx": str(i), "question": ex.question,
        "option": [f"{LETTERS[k]}. {o}" for k, o in enumerate(options)], "answer": str(right),
    }  # fmt: skip


def _videomme(i: int, name: str, ex: tasks.VideoQA, rng: np.random.Generator) -> dict[str, Any]:
    options, right = _options(ex, rng, 4)
    return {
        "video_id": f"{i + 1:03d}", "duration": "short", "domain": "Life Record", "sub_category": "Daily Life",
        "url": f"https://www.youtube.com/watch?v={name}", "videoID": name, "question_id": f"{i + 1:03d}-1",
        "task_type": "Temporal Perception", "question": ex.question,
        "options": [f"{LETTERS[k]}. {o}" for k, o in enumerate(options)], "answer": LETTERS[right],
    }  # fmt: skip


def _perceptiontest(i: int, name: str, ex: tasks.VideoQA, rng: np.random.Generator) -> dict[str, Any]:
    options, right = _options(ex, rng, 3)
    return {
        "video_name": name, "question": ex.question, "question_id": str(i), "options": options,
        "answer_id": right, "area": "physics", "reasoning": "descriptive", "tag": ["motion"],
    }  # fmt: skip


def _youtube_id(i: int) -> str:
    return f"syn{i:08d}"


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("nextqa_mc_test", "nextqa/nextqa_mc_test.yaml", "nextqa/NExTVideo", "test",
              lambda i: str(4010069381 + i), lambda v: f"{v}.mp4", _nextqa_mc, "exact_match"),
    Benchmark("nextqa_oe_test", "nextqa/nextqa_oe_test.yaml", "nextqa/NExTVideo", "test",
              lambda i: str(4010069381 + i), lambda v: f"{v}.mp4", _nextqa_oe, "WUPS"),
    Benchmark("activitynetqa", "activitynetqa/activitynetqa_generation.yaml", "activitynetqa/all_test", "test",
              _youtube_id, lambda v: f"v_{v}.mp4", _free_form, "gpt_eval_accuracy", judge=True),
    Benchmark("videochatgpt_gen", "videochatgpt/videochatgpt_generic.yaml", "videochatgpt/Test_Videos", "test",
              lambda i: f"v_{_youtube_id(i)}", lambda v: f"{v}.mp4", _free_form, "gpt_eval_score_correctness",
              judge=True),
    Benchmark("videochatgpt_temporal", "videochatgpt/videochatgpt_temporal.yaml", "videochatgpt/Test_Videos",
              "test", lambda i: f"v_{_youtube_id(i)}", lambda v: f"{v}.mp4", _free_form,
              "gpt_eval_score_temporal", judge=True),
    Benchmark("videochatgpt_consistency", "videochatgpt/videochatgpt_consistency.yaml",
              "videochatgpt/Test_Videos", "test", lambda i: f"v_{_youtube_id(i // 2)}", lambda v: f"{v}.mp4",
              _consistency, "gpt_eval_score_consistency", judge=True),
    Benchmark("egoschema_subset", "egoschema/egoschema_subset.yaml", "egoschema/videos", "test",
              lambda i: f"00000000-0000-4000-8000-{i:012d}", lambda v: f"{v}.mp4", _egoschema, "score"),
    Benchmark("egoschema_subset_mcppl", "egoschema/egoschema_subset_mcppl.yaml", "egoschema/videos", "test",
              lambda i: f"00000000-0000-4000-8000-{i:012d}", lambda v: f"{v}.mp4", _egoschema, "score",
              likelihood=True),
    Benchmark("videomme", "videomme/videomme.yaml", "videomme/data", "test",
              _youtube_id, lambda v: f"{v}.mp4", _videomme, "videomme_perception_score"),
    Benchmark("perceptiontest_val_mc", "perceptiontest/val/perceptiontest_mc.yaml", "perceptiontest_val/videos",
              "validation", lambda i: f"video_{10000 + i}", lambda v: f"{v}.mp4", _perceptiontest, "accuracy"),
)  # fmt: skip


def lmms_eval_tasks_dir() -> Path:
    """The installed lmms-eval's ``tasks`` folder (its task YAMLs are included from there)."""
    import lmms_eval.tasks

    return Path(lmms_eval.tasks.__file__).parent


def write_standins(
    folder: str | os.PathLike, docs_per_task: int = 4, *, seed: int = 0, only: tuple[str, ...] | None = None
) -> Path:
    """Write stand-in datasets and include-YAMLs for [`BENCHMARKS`] (or the tasks named in ``only``).

    Returns ``folder``: run ``HF_HOME=folder/hf lmms-eval eval ... --include_path folder/tasks
    --tasks <task>_local``. Clips are shared between tasks that share a video folder.
    """
    root = Path(folder)
    hf, data, yamls = root / "hf", root / "data", root / "tasks"
    for path in (hf, data, yamls):
        path.mkdir(parents=True, exist_ok=True)
    tasks_dir = lmms_eval_tasks_dir()
    chosen = [b for b in BENCHMARKS if only is None or b.task in only]
    unknown = set(only or ()) - {b.task for b in BENCHMARKS}
    if unknown:
        raise ValueError(f"no stand-in for {sorted(unknown)}; known: {[b.task for b in BENCHMARKS]}")
    for bench in chosen:
        rng = np.random.default_rng(seed)
        rows = []
        for i in range(docs_per_task):
            example = tasks.sample_example(rng, tasks.KINDS[i % len(tasks.KINDS)])
            name = bench.video_name(i)
            clip = hf / bench.video_dir / bench.video_file(name)
            if not clip.exists():
                clip.parent.mkdir(parents=True, exist_ok=True)
                tasks.write_mp4(example.frames(tasks.file_frames()), clip)
            rows.append(bench.row(i, name, example, rng))
        docs = data / f"{bench.task}.jsonl"
        docs.write_text("".join(json.dumps(row) + "\n" for row in rows))
        included = tasks_dir / bench.yaml
        if not included.is_file():
            raise FileNotFoundError(f"lmms-eval has no task file {included} (installed lmms-eval changed?)")
        (yamls / f"{bench.local_task}.yaml").write_text(
            f"# lmms-eval's own {bench.task}, on the local stand-in data (llava_next_video_hf.testing.benchmarks)\n"
            f"include: {json.dumps(str(included))}\n"
            f"task: {bench.local_task}\n"
            "dataset_path: json\n"
            "dataset_kwargs:\n"
            "  data_files:\n"
            f"    {bench.split}: {json.dumps(str(docs.resolve()))}\n"
        )
    return root


__all__ = ["BENCHMARKS", "Benchmark", "lmms_eval_tasks_dir", "write_standins"]
