"""`llava-next-video train` under torchrun / accelerate launch on CPU (gloo DDP), with no hidden
environment variables: ranks split every global batch, the loss per step equals one process at the
same global batch, and the final checkpoint is written once, by the main process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llava_next_video_hf import testing
from llava_next_video_hf.testing import tasks
from llava_next_video_hf.vllm_plugin.testing import free_port

pytestmark = pytest.mark.scale

OVERRIDES = dict(spatial_pool_stride=6, num_frames=4)
SAVED = "saved the fine-tuned checkpoint to"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny checkpoint and 8 SFT lines over small synthetic clips (two of each question kind).

    The answers supervise clearly different numbers of tokens (about 2 + 5 i for line i), so that a
    loss averaged over each rank's tokens and then over the ranks differs from the loss averaged over
    all the step's tokens, which is what one process computes."""
    root = tmp_path_factory.mktemp("ddp")
    ckpt = testing.make_tiny_checkpoint(root / "base", **OVERRIDES)
    lines = []
    for i in range(8):
        ex = tasks.sample_example(np.random.default_rng(i), tasks.KINDS[i % len(tasks.KINDS)])
        clip = tasks.write_mp4(ex.frames(tasks.file_frames(1), size=64), root / f"{i}.mp4")
        answer = " ".join([ex.answer] + [f"The square is {ex.answer}."] * i)
        messages = [{"role": "user", "content": ex.question}, {"role": "assistant", "content": answer}]
        lines.append({"video": str(clip), "messages": messages})
    (root / "sft.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root, ckpt


def clean_env() -> dict[str, str]:
    """This environment without any accelerate/torch.distributed settings: nothing hidden helps."""
    hidden = ("ACCELERATE_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_", "TORCHELASTIC")
    env = {k: v for k, v in os.environ.items() if not k.startswith(hidden)}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def train(launcher: list[str], root: Path, ckpt: Path, out: str, *extra: str) -> str:
    cmd = [
        *launcher, "-m", "llava_next_video_hf.cli", "train", "sft", "--model", str(ckpt),
        "--data", str(root / "sft.jsonl"), "--out", str(root / out), "--max-steps", "2",
        "--save-steps", "2", "--logging-steps", "1", "--lr", "1e-3", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(free_port())]  # fmt: skip


def log_history(folder: Path) -> list[dict]:
    state = json.loads((folder / "checkpoint-2" / "trainer_state.json").read_text())
    return [h for h in state["log_history"] if "loss" in h]


def test_torchrun_ddp_matches_one_process_at_the_same_global_batch(run_dir):
    root, ckpt = run_dir
    ddp_log = train(torchrun(), root, ckpt, "ddp", "--no-lora", "--batch-size", "1")
    train([sys.executable], root, ckpt, "single", "--no-lora", "--batch-size", "2")

    assert ddp_log.count(SAVED) == 1  # the main process reports (and writes) the result, once
    ddp, single = log_history(root / "ddp"), log_history(root / "single")
    # two ranks x 1 example = the single process's 2 per step: same examples, same epoch fraction
    assert [h["epoch"] for h in ddp] == [h["epoch"] for h in single] == [0.25, 0.5]
    assert [h["num_tokens"] for h in ddp] == [h["num_tokens"] for h in single]
    for d, s in zip(ddp, single, strict=True):
        assert d["loss"] == pytest.approx(s["loss"], rel=1e-5)
        assert d["grad_norm"] == pytest.approx(s["grad_norm"], rel=1e-4)
    assert {p.name for p in (root / "ddp" / "checkpoint-2").glob("rng_state_*.pth")} == {
        "rng_state_0.pth",
        "rng_state_1.pth",
    }  # both ranks took part

    tuned, alone = (
        load_file(root / "ddp" / "model.safetensors"),
        load_file(root / "single" / "model.safetensors"),
    )
    base = load_file(ckpt / "model.safetensors")
    assert tuned.keys() == alone.keys() == base.keys()
    assert max((tuned[k] - alone[k]).abs().max().item() for k in tuned) < 1e-6
    assert not torch.equal(tuned["lm_head.weight"], base["lm_head.weight"])


def test_accelerate_launch_lora_matches_one_process_at_the_same_global_batch(run_dir):
    """2-process LoRA (accelerate launch, 1 example per rank) trains what one process does with 2 per
    step: same losses and gradient norms, same adapter, same merged model (LoRA dropout off: each
    rank draws its own dropout masks). The merge is checked by hand: W + B A alpha / r."""
    from transformers import AutoModelForImageTextToText

    from llava_next_video_hf.processing import register_auto_classes

    root, ckpt = run_dir
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port())]  # fmt: skip
    log = train(launcher, root, ckpt, "lora", "--batch-size", "1", "--lora-dropout", "0")
    train([sys.executable], root, ckpt, "lora-single", "--batch-size", "2", "--lora-dropout", "0")
    assert log.count(SAVED) == 1
    out, alone = root / "lora", root / "lora-single"
    ddp, single = log_history(out), log_history(alone)
    assert [h["epoch"] for h in ddp] == [h["epoch"] for h in single] == [0.25, 0.5]  # 2 ranks x 1
    assert [h["num_tokens"] for h in ddp] == [h["num_tokens"] for h in single]
    for d, s in zip(ddp, single, strict=True):
        assert d["loss"] == pytest.approx(s["loss"], rel=1e-5)
        assert d["grad_norm"] == pytest.approx(s["grad_norm"], rel=1e-4)

    adapter, adapter_alone = (
        load_file(out / "adapter" / "adapter_model.safetensors"),
        load_file(alone / "adapter" / "adapter_model.safetensors"),
    )
    assert adapter.keys() == adapter_alone.keys() and len(adapter) > 0
    assert max((adapter[k] - adapter_alone[k]).abs().max().item() for k in adapter) < 1e-6
    merged, merged_alone = load_file(out / "model.safetensors"), load_file(alone / "model.safetensors")
    assert max((merged[k] - merged_alone[k]).abs().max().item() for k in merged) < 1e-6

    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    base = load_file(ckpt / "model.safetensors")
    lm = "model.language_model.layers.0.self_attn.q_proj"
    (a_key,) = [k for k in adapter if k.endswith("layers.0.self_attn.q_proj.lora_A.weight")]
    b_key = a_key.replace("lora_A", "lora_B")
    by_hand = base[f"{lm}.weight"] + scale * adapter[b_key] @ adapter[a_key]
    assert not torch.equal(merged[f"{lm}.weight"], base[f"{lm}.weight"])  # the adapter is merged ...
    torch.testing.assert_close(merged[f"{lm}.weight"], by_hand, rtol=0, atol=1e-6)  # ... as W + BA a/r
    assert all(torch.equal(v, base[k]) for k, v in merged.items() if "vision_tower" in k)
    register_auto_classes()
    assert AutoModelForImageTextToText.from_pretrained(out) is not None  # a checkpoint that loads


@pytest.mark.skipif(torch.accelerator.is_available(), reason="the refusal is for CPU-only machines")
@pytest.mark.parametrize("option", [["--fsdp", "full_shard auto_wrap"], ["--deepspeed", "ds.json"]])
def test_fsdp_and_deepspeed_are_refused_on_cpu_rather_than_silently_ddp(run_dir, option, capsys):
    from llava_next_video_hf import cli

    root, ckpt = run_dir
    argv = [
        "train",
        "sft",
        "--model",
        str(ckpt),
        "--data",
        str(root / "sft.jsonl"),
        "--out",
        str(root / "x"),
        *option,
    ]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert option[0] in err and "needs a GPU" in err and "DDP" in err
    assert not (root / "x").exists()
