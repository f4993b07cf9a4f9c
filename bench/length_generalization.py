"""Length generalization at small scale: a model trained on N frames, asked about 2N and 4N frames,
with and without linear RoPE scaling (the paper's second contribution).

    .venv/bin/python bench/length_generalization.py [--model CKPT] [--clips 128]

The model is the shipped tiny video-QA checkpoint (``bench/train_tiny.py``): trained on 8-frame clips
(182-token prompts) with 256 positions (``max_position_embeddings``). At 16 and 32 frames the prompts
are 310 and 566 tokens, past every position the model was trained on. Each condition loads the
checkpoint with ``rope_scaling_factor=f`` (linear position interpolation: positions are divided by
``f``; ``f = 1`` leaves RoPE as trained) and answers the same held-out questions
(``tasks.heldout_set``, never trained on) with greedy ``generate``. The clips are rendered at the
requested number of frames from the same continuous-time scenes, so the right answer does not change
with the frame count (a flash spans 2 frames at 16 and 4 at 32). The processor's context check is
off for the unscaled rows, which deliberately overrun the trained context.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes  # noqa: E402
from llava_next_video_hf.testing import tasks  # noqa: E402

DEFAULT_MODEL = ROOT / "src" / "llava_next_video_hf" / "assets" / "tiny-video-qa"


def conditions(trained_frames: int) -> list[tuple[int, float]]:
    """(frames, linear RoPE factor): N, 2N and 4N frames, unscaled and scaled by the frame ratio
    (and, at 4N, by 3 = ceil(566 / 256), the smallest factor whose context holds the prompt)."""
    n = trained_frames
    return [(n, 1.0), (n, 2.0), (2 * n, 1.0), (2 * n, 2.0), (4 * n, 1.0), (4 * n, 3.0), (4 * n, 4.0)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--clips", type=int, default=128, help="held-out questions per condition")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    register_auto_classes()
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    base = AutoModelForImageTextToText.from_pretrained(args.model)
    trained_frames = base.config.num_frames
    trained_context = base.config.trained_context_length
    heldout = tasks.heldout_set(args.clips)
    kinds = np.array([ex.kind for ex in heldout])
    answers = np.array([ex.answer for ex in heldout])

    rows = []
    for frames in sorted({f for f, _ in conditions(trained_frames)}):
        factors = [f for fr, f in conditions(trained_frames) if fr == frames]
        models = {
            f: AutoModelForImageTextToText.from_pretrained(args.model, rope_scaling_factor=f).eval()
            for f in factors
        }
        # context_length=None: no length check, so the unscaled rows can overrun the trained context
        processor = LlavaNextVideoAnyResProcessor.from_model_config(
            base.config, tokenizer, context_length=None
        )
        predictions: dict[float, list[str]] = {f: [] for f in factors}
        lengths = []
        for start in range(0, len(heldout), args.batch_size):
            chunk = heldout[start : start + args.batch_size]
            inputs = processor.apply_chat_template(
                [ex.prompt(ex.frames(frames)) for ex in chunk],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                padding_side="left",
            )
            lengths += inputs["attention_mask"].sum(-1).tolist()
            for f, model in models.items():
                with torch.inference_mode():
                    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
                new = out[:, inputs["input_ids"].shape[1] :]
                predictions[f] += [
                    tasks.parse_answer(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)
                ]
        for f in factors:
            right = np.array(predictions[f]) == answers
            rows.append(
                dict(
                    frames=frames,
                    tokens=int(max(lengths)),
                    factor=f,
                    context=int(trained_context * f),
                    accuracy=right.mean(),
                    **{k: right[kinds == k].mean() for k in tasks.KINDS},
                )
            )
        print(f"[{time.time() - t0:5.0f}s] {frames} frames done", file=sys.stderr, flush=True)

    print(
        f"Model: {args.model.name} (trained on {trained_frames} frames, {trained_context} positions); "
        f"{len(heldout)} held-out questions per row; greedy generate.\n"
    )
    head = "| frames | prompt tokens | RoPE factor | positions (trained x factor) | accuracy | " + " | ".join(
        tasks.KINDS
    )
    print(head + " |")
    print("|" + "---|" * (5 + len(tasks.KINDS)))
    for r in rows:
        kinds_cells = " | ".join(f"{r[k]:.2f}" for k in tasks.KINDS)
        factor = "1 (none)" if r["factor"] == 1 else f"{r['factor']:g} (linear)"
        print(
            f"| {r['frames']} | {r['tokens']} | {factor} | {r['context']} | **{r['accuracy']:.3f}** | {kinds_cells} |"
        )
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
