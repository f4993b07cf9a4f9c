"""The web app's video cache: time to answer a question about a video the first time (decode +
encode + generate) and the second time (cached features + generate), against the anchor measured
in the same run: transformers' own path for the same prompt (``apply_chat_template`` with the video
file, then ``generate`` with the pixels), which decodes and encodes on every question.

    PYTHONPATH=src .venv/bin/python bench/app_cache.py [--repeats 5]

Prints medians (s) and the ratios anchor / first and anchor / second. No Gradio involved: the app's
engine (``app.backend.HfBackend``) is called directly, on the embedded tiny checkpoint.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from llava_next_video_hf.app.backend import HfBackend, Sampling
from llava_next_video_hf.cli import default_checkpoint
from llava_next_video_hf.testing import make_video, tasks

QUESTION = "What colour is the moving square?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    backend = HfBackend(default_checkpoint())
    folder = Path(tempfile.mkdtemp(prefix="bench-app-"))
    tasks.make_demo_clip(folder / "demo.mp4")
    clips = {
        "demo clip 112x112, 22 frames": folder / "demo.mp4",
        "640x360, 60 s at 30 fps": make_video(folder / "long.mp4", num_frames=1800, width=640, height=360),
    }
    print(
        f"checkpoint {default_checkpoint().name}, 8 frames, {args.max_new_tokens} new tokens, 1 torch thread"
    )
    print(f"{'clip':32} {'anchor':>8} {'first':>8} {'second':>8} {'anchor/first':>13} {'anchor/second':>14}")
    for name, path in clips.items():
        data = path.read_bytes()
        anchor, first, second = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "video", "path": str(path)}, {"type": "text", "text": QUESTION}],
                }
            ]
            inputs = backend.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
                num_frames=8,
            )  # fmt: skip
            with torch.inference_mode():
                backend.model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
            anchor.append(time.perf_counter() - start)

            backend.cache._items.clear()
            for bucket in (first, second):
                start = time.perf_counter()
                video, _ = backend.prepare(data, Sampling(8))
                backend.budget(video, [], QUESTION, [])  # as the page does before answering
                for _text in backend.answer(video, [], QUESTION, [], args.max_new_tokens):
                    pass
                bucket.append(time.perf_counter() - start)
        a, f, s = (statistics.median(x) for x in (anchor, first, second))
        print(f"{name:32} {a:8.3f} {f:8.3f} {s:8.3f} {a / f:13.2f} {a / s:14.2f}")


if __name__ == "__main__":
    main()
