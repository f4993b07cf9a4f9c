"""Benchmark: ``vllm serve`` measured with vLLM's own ``vllm bench serve``, next to transformers ``generate``.

Usage (an engine is started: run it under the lock):
    flock /tmp/vllm.lock .venv/bin/python bench/vllm_bench_serve.py [--requests 16] [--frames 8]
        [--new-tokens 32] [--model CKPT] [--server-args "--max-num-batched-tokens 8192"] [--json out.json]

One run, one workload: ``--requests`` synthetic mp4 clips (4 sizes, different content), one question
each, written as a ShareGPT-format file (``{"conversations": [...], "video": path}``, the format
``vllm bench serve --dataset-name sharegpt`` reads videos from). Then, on the same checkpoint (the tiny
random one unless ``--model``), float32, greedy, exactly ``--new-tokens`` output tokens per request:

* ``vllm serve`` (``python -m vllm.entrypoints.openai.api_server``: the ``vllm`` command of the CPU
  wheel may not start) with ``--media-io-kwargs {"video": {"num_frames": F}}``, measured by
  ``python -m vllm.entrypoints.cli.main bench serve --backend openai-chat --dataset-name sharegpt
  --max-concurrency N --request-rate inf --ignore-eos --temperature 0``: all requests at once, clips
  sent as ``file://`` URLs, so the server decodes them (vLLM's loader) inside the measurement.
  Warm-up: a first ``vllm bench serve`` over *other* clips (a disjoint warm-up set); the timed run
  then skips vLLM's own ready check and warm-ups, which would send a timed prompt first and so put
  its video in the prefix and multimodal caches. Prefix caching stays on (vLLM's default): timed
  requests share only the system prompt and question text (a few KV blocks) with each other and
  with the warm-up, never video tokens.
* transformers: our model's ``generate`` on the same prompts (the checkpoint's chat template, the
  question then the video, as ``openai-chat`` sends them) and the same clips decoded by our loader
  at the same frame count: batch 1 (one request after the other) and one padded batch of all
  requests. Decoding and the processor are inside the clock here too. TTFT is the time from a call's
  start to its first sampled token (a logits processor's timestamps), TPOT the mean gap after it;
  for batch 1 each request is timed from its own start (the queueing a server would add is not
  counted, which favours transformers).

Prints requests/s, output tokens/s, TTFT and TPOT, and the ratios against both transformers rows, and
checks that both sides saw the same requests: the prompt token counts vLLM reports equal the
transformers processor's. (Greedy texts are not compared here: the server decodes the mp4 with vLLM's
own loader, whose pixels differ slightly from PyAV's, and a random model's greedy tokens follow them;
``bench/serving.py`` compares greedy answers on identical frames.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import QUESTIONS, make_clips  # noqa: E402  (the clips of bench/serving.py)


def write_dataset(path: Path, clips: list[Path], questions: list[str]) -> Path:
    """A ShareGPT-format file for ``vllm bench serve --dataset-name sharegpt`` with one video per entry."""
    entries = [
        {
            "id": clip.stem,
            "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": "a reference answer"}],
            "video": str(clip),
        }
        for clip, q in zip(clips, questions, strict=True)
    ]
    path.write_text(json.dumps(entries, indent=1))
    return path


# ---------------------------------------------------------------------------------------------- transformers


def bench_hf(ckpt: Path, clips: list[Path], questions: list[str], frames: int, new_tokens: int) -> dict:
    """Our transformers model, batch 1 then one padded batch; processor and decoding inside the clock."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor

    processor = LlavaNextVideoAnyResProcessor.from_pretrained(ckpt)
    model = LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).eval()

    class StepClock(LogitsProcessor):
        """Timestamps of each decoding step (called once per sampled token, after the forward)."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            self.times.append(time.perf_counter())
            return scores

    def run(batch: list[int]) -> dict[str, Any]:
        start = time.perf_counter()
        messages = [
            [{"role": "user", "content": [{"type": "text", "text": questions[i]}, {"type": "video"}]}]
            for i in batch
        ]
        texts = [
            processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages
        ]
        videos = [
            processor.video_processor.load_clips(str(clips[i]), num_frames=frames)[0]
            .permute(0, 2, 3, 1)
            .numpy()
            for i in batch
        ]  # (T, H, W, 3) uint8
        # the rendered template starts with BOS already: tokenize without adding a second one (as the
        # chat template path and the server do)
        bos = processor.tokenizer.bos_token
        special = not (bos is not None and texts[0].startswith(bos))
        inputs = processor(
            text=texts, videos=videos, padding=True, return_tensors="pt", add_special_tokens=special
        )
        clock = StepClock()
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([clock]),
            )
        end = time.perf_counter()
        steps = clock.times
        return {
            "wall_s": end - start,
            "ttft_s": steps[0] - start,
            "tpot_s": (steps[-1] - steps[0]) / max(len(steps) - 1, 1),
            "tokens": out[:, inputs["input_ids"].shape[1] :].tolist(),
            "prompt_lens": inputs["attention_mask"].sum(-1).tolist(),
        }

    run(
        [len(clips) - 1]
    )  # warm-up (allocator, first-call overheads); transformers has no cache to flatter it
    n = len(clips) - 1  # the last clip is the warm-up one
    singles = [run([i]) for i in range(n)]
    batched = run(list(range(n)))
    return {
        "batch1": {
            "wall_s": sum(r["wall_s"] for r in singles),
            "ttft_s": sum(r["ttft_s"] for r in singles) / n,
            "tpot_s": sum(r["tpot_s"] for r in singles) / n,
            "tokens": [r["tokens"][0] for r in singles],
        },
        "batched": batched,
        "prompt_lens": [r["prompt_lens"][0] for r in singles],
    }


# ---------------------------------------------------------------------------------------------- vLLM


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_server(
    ckpt: Path, frames: int, media_dir: Path, port: int, log: Path, extra: list[str]
) -> subprocess.Popen:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1:port (+ ``extra``), once healthy."""
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(ckpt),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--media-io-kwargs", json.dumps({"video": {"num_frames": frames}}),
        "--allowed-local-media-path", str(media_dir), "--gpu-memory-utilization", "0.3",
        "--limit-mm-per-prompt", json.dumps({"video": 1, "image": 0}), *extra,
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    proc = subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while not _healthy(base):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(1.0)
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and the engine processes it started
        proc.wait(timeout=30)


def vllm_bench_serve(
    ckpt: Path, port: int, dataset: Path, n: int, new_tokens: int, result: Path
) -> dict[str, Any]:
    """``vllm bench serve`` over ``dataset``: ``n`` requests at once, greedy, exactly ``new_tokens`` each."""
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve",
        "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
        "--base-url", f"http://127.0.0.1:{port}", "--model", str(ckpt), "--tokenizer", str(ckpt),
        "--dataset-name", "sharegpt", "--dataset-path", str(dataset), "--num-prompts", str(n),
        "--sharegpt-output-len", str(new_tokens), "--ignore-eos", "--temperature", "0",
        "--max-concurrency", str(n), "--request-rate", "inf",
        "--ready-check-timeout-sec", "0", "--num-warmups", "0",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--disable-tqdm",
        "--save-result", "--save-detailed", "--result-dir", str(result.parent),
        "--result-filename", result.name,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(done.stdout[done.stdout.find("============ Serving Benchmark Result") :].rstrip())
    return json.loads(result.read_text())


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--model", type=Path, help="checkpoint (default: a tiny random one)")
    parser.add_argument("--server-args", default="", help="extra vLLM server options, one string")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from llava_next_video_hf import testing
    from llava_next_video_hf.vllm_plugin.testing import free_port

    n = args.requests
    tmp = Path(tempfile.mkdtemp(prefix="bench-vllm-serve-"))
    ckpt = args.model or testing.make_tiny_checkpoint(tmp / "ckpt")
    # timed clips use seeds 0..n-1, the warm-up clips n..2n-1 (other content, other hashes)
    clips = make_clips(2 * n, args.frames, tmp)
    timed, warm = clips[:n], clips[n:]
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    timed_set = write_dataset(tmp / "timed.json", timed, questions)
    warm_set = write_dataset(tmp / "warmup.json", warm, questions)

    hf = bench_hf(ckpt, [*timed, warm[0]], questions + [questions[0]], args.frames, args.new_tokens)

    port = free_port()
    start = time.perf_counter()
    server = start_server(ckpt, args.frames, tmp, port, tmp / "server.log", shlex.split(args.server_args))
    startup_s = time.perf_counter() - start
    try:
        vllm_bench_serve(ckpt, port, warm_set, n, args.new_tokens, tmp / "warmup-result.json")
        vllm = vllm_bench_serve(ckpt, port, timed_set, n, args.new_tokens, tmp / "timed-result.json")
    finally:
        stop_server(server)

    tokens = n * args.new_tokens
    assert vllm["completed"] == n and vllm["total_output_tokens"] == tokens, vllm
    b1, bn = hf["batch1"], hf["batched"]
    rows = {
        "hf batch 1": {"wall_s": b1["wall_s"], "ttft_ms": 1e3 * b1["ttft_s"], "tpot_ms": 1e3 * b1["tpot_s"]},
        f"hf batched ({n})": {"wall_s": bn["wall_s"], "ttft_ms": 1e3 * bn["ttft_s"], "tpot_ms": 1e3 * bn["tpot_s"]},
        "vllm serve (vllm bench serve)": {
            "wall_s": vllm["duration"],
            "ttft_ms": vllm["mean_ttft_ms"],
            "tpot_ms": vllm["mean_tpot_ms"],
        },
    }  # fmt: skip
    # the same requests on both sides: vLLM's prompt token counts (video tokens included) are ours
    # (sorted: the sharegpt dataset shuffles the requests)
    same_prompts = sorted(vllm.get("input_lens", [])) == sorted(hf["prompt_lens"])
    print(
        f"\n{n} concurrent video requests x {args.frames} frames, {args.new_tokens} new tokens each, float32, greedy"
    )
    print(
        f"{'engine':<32}{'wall s':>8}{'req/s':>8}{'out tok/s':>11}{'TTFT ms':>10}{'TPOT ms':>9}{'vs b1':>8}{'vs bN':>8}"
    )
    for name, row in rows.items():
        row.update(req_per_s=n / row["wall_s"], out_tok_per_s=tokens / row["wall_s"])
        row.update(vs_hf_batch1=b1["wall_s"] / row["wall_s"], vs_hf_batched=bn["wall_s"] / row["wall_s"])
        print(
            f"{name:<32}{row['wall_s']:8.2f}{row['req_per_s']:8.2f}{row['out_tok_per_s']:11.1f}"
            f"{row['ttft_ms']:10.0f}{row['tpot_ms']:9.1f}{row['vs_hf_batch1']:7.1f}x{row['vs_hf_batched']:7.1f}x"
        )
    print(
        f"server start-up (not timed): {startup_s:.1f} s; same prompt token counts on both sides: {same_prompts}"
    )
    if args.json:
        meta = {"requests": n, "frames": args.frames, "new_tokens": args.new_tokens, "startup_s": startup_s}
        meta.update(python=sys.version.split()[0], machine=platform.machine(), cpus=os.cpu_count())
        meta.update(same_prompt_lens=same_prompts, server_args=args.server_args, load_average=os.getloadavg())
        args.json.write_text(json.dumps({"meta": meta, "results": rows, "vllm_bench_serve": {
            k: v for k, v in vllm.items() if not isinstance(v, list)}}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
