"""Train the shipped tiny video-QA model on a CPU: SFT, then DPO, on the synthetic task (~22 min, 1 thread).

    .venv/bin/python bench/train_tiny.py                 # -> src/llava_next_video_hf/assets/tiny-video-qa
    .venv/bin/python bench/train_tiny.py --out /tmp/tiny --sft-out /tmp/tiny-sft   # elsewhere, keep the SFT model
    .venv/bin/python bench/train_tiny.py --from /tmp/tiny-sft --sft-epochs 0 --out /tmp/tiny2   # DPO only

The model is an ordinary checkpoint of our format (fp32, 2 MB): a CLIP tower at 336 px / patch 14
(hidden 32, features of the embedding layer, ``vision_feature_layer=-2``), 6x6 average pooling
before the projector (16 tokens per frame, ``no_token``), and a 2-layer Llama (hidden 128, 4 heads of
32, RoPE theta 500, 256 trained positions), 8 frames per clip. The tower stays frozen at its seeded
random init, except that its position table is a fixed 2D sine-cosine pattern (amplitude 0.3) instead
of CLIP's 0.02-std noise, so that the pooled features say *where* a square is (random 0.02 noise
averages out over a 6x6 pooling window and direction of motion is not learnable).

How it trains fast: the tower is frozen, so each clip's pooled tower features are computed once
(through the normal processor: ``VideoSFTCollator`` for the token ids and labels, the video
processor for the pixels) and reused every epoch; only the projector and the language model run per
step (``train.embed_with_cached_video``, whose parity with the normal forward is tested).

1. SFT: ``--sft-clips`` clips (2,400; direction and colour twice as often as order and count),
   ``--sft-epochs`` epochs (40; OneCycle to 2e-3). Direction of motion, the one question that needs
   the order of frames, is learned last: it stays at chance for ~15 epochs, then rises to ~0.85. Fewer
   clips seen more often learned it; 4,800 clips x 12-14 epochs or a direction-only first stage did not.
2. DPO against the frozen SFT model on fresh clips, every (right answer, wrong answer) pair of each
   clip: the task's checker plays the AI judge of LLaVA-NeXT-Video-DPO. Loss = sigmoid DPO (beta 0.1)
   + NLL of the chosen answer (weight 1; TRL: ``loss_type=["sigmoid", "sft"]``). Plain DPO on the SFT
   model's favourite wrong answer alone lowered accuracy (0.895 -> 0.835) in an earlier run.
3. Held-out metrics through the normal path (``generate`` with the processor; ``tasks.evaluate``) and
   preference accuracy (log p(right) > log p(the SFT model's favourite wrong answer)) on held-out clips.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llava_next_video_hf import testing  # noqa: E402
from llava_next_video_hf.configuration import LlavaNextVideoAnyResConfig  # noqa: E402
from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration  # noqa: E402
from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor  # noqa: E402
from llava_next_video_hf.testing import tasks  # noqa: E402
from llava_next_video_hf.train import (  # noqa: E402
    IGNORE_INDEX,
    VideoSFTCollator,
    cache_video_features,
    completion_logprobs,
    embed_with_cached_video,
)

DEFAULT_OUT = ROOT / "src" / "llava_next_video_hf" / "assets" / "tiny-video-qa"
# the temporal questions (which square moves, where to) take longest to learn: show them more often
SFT_MIX = ("colour", "direction", "direction", "colour", "order", "count")


# ---------------------------------------------------------------------------- the model
def tiny_video_qa_config(tokenizer) -> LlavaNextVideoAnyResConfig:
    """The shipped model's architecture (see the module docstring)."""
    return testing.tiny_config(
        tokenizer,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1,
                           projection_dim=32),
        text_config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, head_dim=32, max_position_embeddings=256,
                         rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
        vision_feature_layer=-2,
        spatial_pool_stride=6,
        num_frames=tasks.DESIGN_FRAMES,
    )  # fmt: skip


def sincos_positions(grid: int, dim: int, amplitude: float = 0.3) -> torch.Tensor:
    """(grid*grid, dim) table: rows in dims 0-7 and columns in dims 8-15 as sin/cos of 4 wavelengths."""
    i = torch.arange(grid, dtype=torch.float32)
    waves = [grid * 2.0**k for k in range(4)]
    axis = torch.cat(
        [torch.stack([torch.sin(2 * math.pi * i / w), torch.cos(2 * math.pi * i / w)], -1) for w in waves], -1
    )
    table = torch.zeros(grid, grid, dim)
    table[:, :, :8] = axis[:, None, :]  # row
    table[:, :, 8:16] = axis[None, :, :]  # column
    return amplitude * table.reshape(grid * grid, dim)


def init_model(seed: int):
    tokenizer = testing.make_tokenizer()
    config = tiny_video_qa_config(tokenizer)
    torch.manual_seed(seed)
    model = LlavaNextVideoAnyResForConditionalGeneration(config)
    tower = model.model.vision_tower
    grid = config.vision_config.image_size // config.vision_config.patch_size
    with torch.no_grad():
        table = tower.embeddings.position_embedding.weight  # (1 + grid*grid, Dv): CLS first
        table.zero_()
        table[1:] = sincos_positions(grid, table.shape[1])
    tower.requires_grad_(False)
    processor = LlavaNextVideoAnyResProcessor.from_model_config(config, tokenizer)
    return model, processor


def load(path: Path):
    """A saved checkpoint (e.g. ``--sft-out`` of an earlier run) with its processor, tower frozen."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from llava_next_video_hf.processing import register_auto_classes

    register_auto_classes()
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    model.model.vision_tower.requires_grad_(False)
    return model, AutoProcessor.from_pretrained(path)


# ---------------------------------------------------------------------------- cached data
def sequence_table(processor, kinds=tasks.KINDS) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    """Token ids and labels of every (kind, answer) conversation, built by the SFT collator.

    The ids of a conversation do not depend on the clip (its video tokens are placeholders), so one
    rendered clip per kind gives them all.
    """
    collator = VideoSFTCollator(processor)
    rng = np.random.default_rng(0)
    table = {}
    for kind in kinds:
        frames = tasks.sample_example(rng, kind).frames()
        for answer in tasks.ANSWERS[kind]:
            msgs = [
                {"role": "user", "content": tasks.QUESTIONS[kind]},
                {"role": "assistant", "content": answer},
            ]
            out = collator([{"frames": frames, "messages": msgs}])
            table[kind, answer] = {k: out[k][0] for k in ("input_ids", "attention_mask", "labels")}
    return table


def pad_stack(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    length = max(len(r) for r in rows)
    return torch.stack([torch.nn.functional.pad(r, (0, length - len(r)), value=value) for r in rows])


def cache_clips(model, processor, examples, batch_size: int = 32) -> torch.Tensor:
    """Pooled tower features of every clip: (N, T, tokens_per_frame, Dv)."""
    feats = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        pixels = processor.video_processor([ex.frames() for ex in chunk])
        feats += cache_video_features(model, pixels["pixel_values_videos"], pixels["video_num_frames"])
    return torch.stack(feats)


def sequences(table, examples, answers=None) -> dict[str, torch.Tensor]:
    answers = answers or [ex.answer for ex in examples]
    rows = [table[ex.kind, a] for ex, a in zip(examples, answers, strict=True)]
    pad = 3  # <pad>
    return {
        "input_ids": pad_stack([r["input_ids"] for r in rows], pad),
        "attention_mask": pad_stack([r["attention_mask"] for r in rows], 0),
        "labels": pad_stack([r["labels"] for r in rows], IGNORE_INDEX),
    }


def cached_inputs(model, seqs, feats, idx) -> dict[str, torch.Tensor]:
    embeds = embed_with_cached_video(model, seqs["input_ids"][idx], list(feats[idx]))
    return {"inputs_embeds": embeds, "attention_mask": seqs["attention_mask"][idx]}


@torch.no_grad()
def answer_logprobs(model, table, examples, feats, batch_size: int = 64) -> torch.Tensor:
    """log p(answer) of each of the 4 candidate answers: (N, 4), in ``tasks.ANSWERS`` order."""
    model.eval()
    out = torch.zeros(len(examples), 4)
    for j in range(4):
        seqs = sequences(table, examples, [tasks.ANSWERS[ex.kind][j] for ex in examples])
        for start in range(0, len(examples), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(examples)))
            out[idx, j] = completion_logprobs(
                model, cached_inputs(model, seqs, feats, idx), seqs["labels"][idx]
            )
    return out


def cached_accuracy(model, table, examples, feats) -> tuple[float, dict[str, float]]:
    """Accuracy of the most likely of the 4 answers, overall and per kind."""
    scores = answer_logprobs(model, table, examples, feats)
    right = torch.tensor([tasks.ANSWERS[ex.kind].index(ex.answer) for ex in examples])
    ok = (scores.argmax(-1) == right).numpy()
    kinds = np.array([ex.kind for ex in examples])
    return float(ok.mean()), {k: round(float(ok[kinds == k].mean()), 2) for k in tasks.KINDS}


def hardest_wrong(scores: torch.Tensor, examples) -> list[str]:
    """The most likely wrong answer of each example under ``scores`` (N, 4)."""
    out = []
    for row, ex in zip(scores, examples, strict=True):
        right = tasks.ANSWERS[ex.kind].index(ex.answer)
        row = row.clone()
        row[right] = -math.inf
        out.append(tasks.ANSWERS[ex.kind][int(row.argmax())])
    return out


# ---------------------------------------------------------------------------- SFT and DPO loops
def train_sft(model, table, train, feats, val, val_feats, *, epochs, lr, batch_size, log) -> None:
    seqs = sequences(table, train)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = epochs * (len(train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        model.train()
        perm, total = torch.randperm(len(train), generator=gen), 0.0
        for start in range(0, len(train) - batch_size + 1, batch_size):
            idx = perm[start : start + batch_size]
            loss = model(**cached_inputs(model, seqs, feats, idx), labels=seqs["labels"][idx]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(), opt.zero_grad(), sched.step()
            total += float(loss.detach())
        acc, per_kind = cached_accuracy(model, table, val, val_feats)
        log(
            f"sft epoch {epoch + 1}/{epochs}: loss {total / (len(train) // batch_size):.4f}  "
            f"val accuracy {acc:.3f} {per_kind}"
        )


def train_dpo(model, table, examples, feats, ref, *, epochs, lr, beta, sft_weight, batch_size, log) -> None:
    """DPO on every (right answer, wrong answer) pair of each clip, against the frozen SFT model.

    ``ref`` (N, 4): the SFT model's log p of each answer. Loss per batch, as TRL's
    ``DPOConfig(loss_type=["sigmoid", "sft"], loss_weights=[1, sft_weight], beta=beta)``:
    ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` + ``sft_weight`` x NLL per chosen token.
    """
    clip, right, wrong = [], [], []
    for i, ex in enumerate(examples):
        answers = tasks.ANSWERS[ex.kind]
        for w in ex.wrong_answers:
            clip.append(i), right.append(answers.index(ex.answer)), wrong.append(answers.index(w))
    clip_t = torch.tensor(clip)
    pairs = [examples[i] for i in clip]
    chosen = sequences(table, pairs)
    rejected = sequences(
        table, pairs, [tasks.ANSWERS[ex.kind][w] for ex, w in zip(pairs, wrong, strict=True)]
    )
    ref_c, ref_r = ref[clip_t, torch.tensor(right)], ref[clip_t, torch.tensor(wrong)]
    pair_feats = feats[clip_t]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    for epoch in range(epochs):
        model.train()
        perm, total, hits = torch.randperm(len(pairs), generator=gen), 0.0, 0.0
        for start in range(0, len(pairs) - batch_size + 1, batch_size):
            idx = perm[start : start + batch_size]
            pc = completion_logprobs(
                model, cached_inputs(model, chosen, pair_feats, idx), chosen["labels"][idx]
            )
            pr = completion_logprobs(
                model, cached_inputs(model, rejected, pair_feats, idx), rejected["labels"][idx]
            )
            margin = beta * ((pc - ref_c[idx]) - (pr - ref_r[idx]))
            nll = -pc.sum() / (chosen["labels"][idx][:, 1:] != IGNORE_INDEX).sum()
            loss = -torch.nn.functional.logsigmoid(margin).mean() + sft_weight * nll
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(), opt.zero_grad()
            total += float(loss.detach())
            hits += float((margin > 0).float().mean())
        n = len(pairs) // batch_size
        log(f"dpo epoch {epoch + 1}/{epochs}: loss {total / n:.4f}  reward accuracy {hits / n:.3f}")


def pair_scores(model, table, examples, rejected, feats) -> torch.Tensor:
    """(N, 2) log p(chosen), log p(rejected)."""
    scores = answer_logprobs(model, table, examples, feats)
    out = torch.zeros(len(examples), 2)
    for i, (ex, rej) in enumerate(zip(examples, rejected, strict=True)):
        answers = tasks.ANSWERS[ex.kind]
        out[i] = torch.stack([scores[i, answers.index(ex.answer)], scores[i, answers.index(rej)]])
    return out


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--from", dest="start", type=Path, help="start from this checkpoint instead of a fresh init"
    )
    p.add_argument("--sft-clips", type=int, default=2400)
    p.add_argument("--sft-epochs", type=int, default=40)
    p.add_argument("--sft-out", type=Path, help="also save the SFT model (before DPO) here")
    p.add_argument("--sft-lr", type=float, default=2e-3)
    p.add_argument("--dpo-clips", type=int, default=1200)
    p.add_argument("--dpo-epochs", type=int, default=2)
    p.add_argument("--dpo-lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--dpo-sft-weight", type=float, default=1.0, help="weight of the NLL on chosen answers")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--heldout", type=int, default=200, help="held-out clips for the reported metrics")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    log = lambda msg: print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)  # noqa: E731

    model, processor = init_model(args.seed) if args.start is None else load(args.start)
    table = sequence_table(processor)
    if args.sft_epochs:
        train = tasks.make_dataset(args.sft_clips, seed=1, kinds=SFT_MIX)
        val = tasks.make_dataset(200, seed=3)
        feats, val_feats = cache_clips(model, processor, train), cache_clips(model, processor, val)
        log(f"cached tower features of {len(train) + len(val)} clips")
        train_sft(model, table, train, feats, val, val_feats, epochs=args.sft_epochs, lr=args.sft_lr,
                  batch_size=args.batch_size, log=log)  # fmt: skip
    if args.sft_out:
        model.save_pretrained(args.sft_out)
        processor.save_pretrained(args.sft_out)

    heldout = tasks.heldout_set(args.heldout)
    sft_accuracy = tasks.evaluate(model, processor, heldout)
    log(f"SFT held-out accuracy (generate): {sft_accuracy:.3f}")

    # DPO: pairs judged by the task's checker (the AI judge of LLaVA-NeXT-Video-DPO); the SFT model is the
    # frozen reference. Held-out preference pairs: the right answer against the SFT model's favourite wrong one.
    dpo_clips = tasks.make_dataset(args.dpo_clips, seed=2)
    dpo_feats = cache_clips(model, processor, dpo_clips)
    ref = answer_logprobs(model, table, dpo_clips, dpo_feats)
    held_feats = cache_clips(model, processor, heldout)
    held_rejected = hardest_wrong(answer_logprobs(model, table, heldout, held_feats), heldout)
    sft_pairs = pair_scores(model, table, heldout, held_rejected, held_feats)
    train_dpo(model, table, dpo_clips, dpo_feats, ref, epochs=args.dpo_epochs, lr=args.dpo_lr, beta=args.beta,
              sft_weight=args.dpo_sft_weight, batch_size=args.batch_size, log=log)  # fmt: skip
    dpo_pairs = pair_scores(model, table, heldout, held_rejected, held_feats)
    dpo_accuracy = tasks.evaluate(model, processor, heldout)
    summary = {
        "heldout_clips": len(heldout),
        "sft_heldout_accuracy": sft_accuracy,
        "dpo_heldout_accuracy": dpo_accuracy,
        "sft_preference_accuracy": float((sft_pairs[:, 0] > sft_pairs[:, 1]).float().mean()),
        "dpo_preference_accuracy": float((dpo_pairs[:, 0] > dpo_pairs[:, 1]).float().mean()),
        "sft_mean_margin": float((sft_pairs[:, 0] - sft_pairs[:, 1]).mean()),
        "dpo_mean_margin": float((dpo_pairs[:, 0] - dpo_pairs[:, 1]).mean()),
        "per_kind_dpo_accuracy": {
            kind: tasks.evaluate(model, processor, [ex for ex in heldout if ex.kind == kind])
            for kind in tasks.KINDS
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
        "train_seconds": round(time.time() - t0),
    }
    log(json.dumps(summary, indent=1))

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    log(f"saved to {args.out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
