"""GPU benchmark: the video encoder captured as one CUDA graph per frame bucket, eager vs replayed.

Usage:
    python bench/gpu_encoder.py [--models tiny,clip-l336] [--buckets 1,2,4,8,16,32] [--repeats 20]
                                [--dtype bfloat16] [--json out.json]

Needs only this repository, torch and transformers (vLLM is not installed on the GPU machine). vLLM
captures our video encoder through ``SupportsEncoderCudaGraph``
(``vllm_plugin/model.py``): one graph per token budget, whose input is a zero-filled frames buffer
``(budget // tokens_per_frame, 3, S, S)`` and whose body is ``encode_frames(buffer).flatten(0, 1)``;
on replay the manager zeroes the buffer, copies the batch's frames in, replays, and
``postprocess_encoder_output`` slices the real frames' tokens per video (``split_videos``). The vLLM
model cannot be built here, so this harness runs the very same protocol on the transformers model,
whose ``encode_frames``/``split_videos`` are the same code (``layout.VisualTokenLayout``, shared by
both models); only the tower differs (transformers' CLIP instead of vLLM's).

Models (random weights): ``tiny`` (the test model: 2-layer CLIP-shaped tower at 336 px) and
``clip-l336`` (a CLIP-L/14-336 tower: 24 layers, width 1024, 577 tokens per frame, and a projector to
a 4096-wide LLM, as LLaVA-NeXT-Video-7B; the language model is one thin layer since it does not run).

For each bucket of F frames: the batch is two videos filling F frames (F - 1 when F > 1, so the last
frame of the buffer is zero padding, as on replay), and the script reports

* eager: ``get_video_features`` on exactly the batch's frames (what runs without graphs);
* replayed: the captured graph (buffer copy + ``graph.replay()`` + per-video slicing);
* the max abs difference between the two, per bucket.

On a machine without CUDA it is a dry run: the same buffers, padding and slicing, with the graph's
body called directly instead of captured and replayed, so the script and the protocol stay correct;
no latency of it means anything for a GPU. Latencies: median over ``--repeats`` runs after warm-up,
CUDA-synchronised.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

CLIP_L336 = dict(
    model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
    num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
)  # fmt: skip
THIN_7B_TEXT = dict(
    hidden_size=4096, intermediate_size=256, num_hidden_layers=1, num_attention_heads=32,
    num_key_value_heads=32, head_dim=128,
)  # fmt: skip


def build(name: str, device: torch.device, dtype: torch.dtype) -> Any:
    """``LlavaNextVideoAnyResModel`` (the VisualTokenLayout host) with random weights, eval mode."""
    from llava_next_video_hf import testing
    from llava_next_video_hf.modeling import LlavaNextVideoAnyResModel

    overrides: dict[str, Any] = {}
    if name == "clip-l336":
        overrides = {"vision_config": dict(CLIP_L336), "text_config": dict(THIN_7B_TEXT)}
        overrides["vision_feature_layer"] = -2  # LLaVA's choice
    elif name != "tiny":
        raise SystemExit(f"unknown model {name!r}: tiny or clip-l336")
    config = testing.tiny_config(**overrides)
    torch.manual_seed(0)
    return LlavaNextVideoAnyResModel(config).to(device, dtype).eval()


def _timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, Any]:
    """Median seconds of ``fn`` over ``repeats`` runs (after one warm-up), and its last result."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    out = fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


class BucketGraph:
    """One captured encoder graph for ``frames`` frames, driven as vLLM's encoder CUDA-graph manager does."""

    def __init__(self, model: Any, frames: int, device: torch.device, dtype: torch.dtype, capture: bool):
        config = model.config
        size = config.vision_config.image_size
        self.model = model
        # tokens each frame yields (the vLLM model's ``tokens_per_frame``): the slope of num_video_tokens
        self.tokens_per_frame = config.num_video_tokens(2) - config.num_video_tokens(1)
        self.buffer = torch.zeros(frames, 3, size, size, device=device, dtype=dtype)  # capture inputs
        with torch.inference_mode():
            out = self.forward()  # warm-up run before capture (allocations, kernels selection)
        self.output = torch.empty_like(out)
        self.graph = None
        if capture:
            self.graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(self.graph):
                self.output.copy_(self.forward())

    def forward(self) -> torch.Tensor:
        """``encoder_cudagraph_forward``: frames buffer (F, 3, S, S) -> (F * tokens_per_frame, D)."""
        return self.model.encode_frames(self.buffer).flatten(0, 1)

    def replay(self, frames: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        """Zero-padded copy into the buffer, replay, and ``postprocess_encoder_output``'s slicing."""
        self.buffer.zero_()
        self.buffer[: frames.shape[0]].copy_(frames)
        with torch.inference_mode():
            if self.graph is not None:
                self.graph.replay()
            else:  # dry run: the graph's body, called directly
                self.output.copy_(self.forward())
            per_frame = self.output.unflatten(0, (-1, self.tokens_per_frame))
            return self.model.split_videos(per_frame[: sum(counts)], counts)


def bench_model(
    name: str, buckets: list[int], repeats: int, device: torch.device, dtype: torch.dtype
) -> list[dict]:
    model = build(name, device, dtype)
    size = model.config.vision_config.image_size
    rows = []
    for frames in buckets:
        capture = device.type == "cuda"
        graph = BucketGraph(model, frames, device, dtype, capture)
        used = frames - 1 if frames > 1 else 1  # leave one padded frame when there is room
        counts = [used - used // 2, used // 2] if used > 1 else [1]
        gen = torch.Generator(device="cpu").manual_seed(frames)
        batch = torch.randn(used, 3, size, size, generator=gen).to(device, dtype)
        videos = list(torch.split(batch, counts))
        with torch.inference_mode():
            eager_s, out = _timed(partial(model.get_video_features, videos), repeats, device)
        eager = out.pooler_output  # one (tokens, D) tensor per video
        replay_s, replayed = _timed(partial(graph.replay, batch, counts), repeats, device)
        assert [v.shape for v in replayed] == [v.shape for v in eager]
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(replayed, eager, strict=True))
        row = {
            "model": name,
            "bucket_frames": frames,
            "real_frames": used,
            "videos": len(counts),
            "tokens": sum(v.shape[0] for v in eager),
            "eager_ms": 1e3 * eager_s,
            "replay_ms": 1e3 * replay_s,
            "speedup": eager_s / replay_s,
            "max_abs_diff": diff,
            "captured": capture,
        }
        rows.append(row)
        print(
            f"{name:<10}{frames:>7}{used:>6}{row['tokens']:>8}{row['eager_ms']:>11.2f}{row['replay_ms']:>12.2f}"
            f"{row['speedup']:>8.2f}x{diff:>12.2e}",
            flush=True,
        )
        del graph
    return rows


def main() -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,clip-l336", help="comma-separated: tiny, clip-l336")
    parser.add_argument("--buckets", default="1,2,4,8,16,32" if cuda else "1,2,3", help="frames per graph")
    parser.add_argument("--repeats", type=int, default=20 if cuda else 1)
    parser.add_argument("--dtype", default="bfloat16" if cuda else "float32")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, args.dtype)
    buckets = [int(b) for b in args.buckets.split(",")]
    what = (
        torch.cuda.get_device_name(device)
        if cuda
        else "CPU (dry run: no capture, graph body called directly)"
    )
    print(f"device: {what}; dtype {args.dtype}; torch {torch.__version__}; repeats {args.repeats}")
    print(
        f"{'model':<10}{'bucket':>7}{'real':>6}{'tokens':>8}{'eager ms':>11}{'replayed ms':>12}{'speed':>9}{'max |diff|':>12}"
    )
    rows = [
        row
        for name in args.models.split(",")
        for row in bench_model(name, buckets, args.repeats, device, dtype)
    ]
    if args.json:
        meta = {"device": what, "dtype": args.dtype, "torch": torch.__version__, "repeats": args.repeats}
        meta.update(dry_run=not cuda, python=sys.version.split()[0], machine=platform.machine())
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
