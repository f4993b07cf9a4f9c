"""Light imports: what each entry point pulls in, and the Auto-class contract in every import order.

Each check runs in a fresh interpreter (this test process has torch and transformers loaded already)
and looks at ``sys.modules``: importing ``llava_next_video_hf`` or its ``video_io`` and printing the
CLI's help must not import torch or transformers; ``import llava_next_video_hf`` must still make
transformers' Auto classes load our checkpoints, whether transformers comes first, second, or is
first imported by one of our own modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import llava_next_video_hf
from llava_next_video_hf import cli

HEAVY = ("torch", "transformers", "vllm")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _modules_after(statement: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after running ``statement`` in a fresh interpreter."""
    code = f"""
        import json, sys
        try:
            {statement}
        except SystemExit:
            pass
        print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
    """
    return set(json.loads(_run(code).stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    [
        "import llava_next_video_hf",
        "import llava_next_video_hf.video_io",
        "from llava_next_video_hf.video_io import load_video, sample_indices",
        "from llava_next_video_hf import VideoLoadError, __version__",
        "from llava_next_video_hf.cli import main; main(['--help'])",
    ],
)
def test_light_entry_points_import_no_torch_nor_transformers(statement):
    loaded = _modules_after(statement)
    assert "llava_next_video_hf" in loaded
    assert not loaded & set(HEAVY), f"{statement!r} imported {sorted(loaded & set(HEAVY))}"


def test_decoding_a_video_needs_only_pyav_and_numpy(tmp_path):
    """A real decode through video_io, then the same check: torch and transformers stay out."""
    from llava_next_video_hf import testing

    clip = testing.make_video(tmp_path / "clip.mp4", num_frames=12, fps=10, width=64, height=48)
    code = """
        import json, sys
        from llava_next_video_hf.video_io import load_video
        out = load_video(sys.argv[1], num_frames=4)
        frames = out[0] if isinstance(out, tuple) else out
        print(json.dumps([list(frames.shape), sorted(m for m in ("torch", "transformers") if m in sys.modules)]))
    """
    shape, heavy = json.loads(_run(code, str(clip)).stdout.strip().splitlines()[-1])
    assert shape == [4, 48, 64, 3]
    assert heavy == []


def test_subcommand_help_imports_only_its_module():
    """``export --help`` loads hub_cards (no torch); the other commands' modules stay unimported."""
    code = """
        import json, sys
        from llava_next_video_hf.cli import main
        try:
            main(["export", "--help"])
        except SystemExit:
            pass
        print(json.dumps(sorted(name for name in sys.modules if name.startswith(("llava", "torch", "transformers")))))
    """
    loaded = set(json.loads(_run(code).stdout.strip().splitlines()[-1]))
    assert "llava_next_video_hf.hub_cards" in loaded
    assert not {"llava_next_video_hf.convert", "llava_next_video_hf.train", "torch"} & loaded


# the Auto-class contract, in a fresh interpreter per import order
_AUTO_CHECK = """
    import sys
    {imports}
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
    ckpt = sys.argv[1]
    config = AutoConfig.from_pretrained(ckpt)
    assert type(config).__name__ == "LlavaNextVideoAnyResConfig", type(config)
    model = AutoModelForImageTextToText.from_pretrained(ckpt)
    assert type(model).__name__ == "LlavaNextVideoAnyResForConditionalGeneration", type(model)
    base = AutoModel.from_pretrained(ckpt)
    assert type(base).__name__ == "LlavaNextVideoAnyResModel", type(base)
    processor = AutoProcessor.from_pretrained(ckpt)
    assert type(processor).__name__ == "LlavaNextVideoAnyResProcessor", type(processor)
    assert type(processor.video_processor).__name__ == "LlavaNextVideoAnyResVideoProcessor"
    print("ok")
"""

IMPORT_ORDERS = {
    "transformers first": "import transformers\nimport llava_next_video_hf",
    "package first": "import llava_next_video_hf\nimport transformers",
    # transformers is first imported by one of our modules: registration waits until that module is done
    "our modeling module first": "from llava_next_video_hf.modeling import LlavaNextVideoAnyResModel",
}


@pytest.mark.parametrize("order", sorted(IMPORT_ORDERS))
def test_auto_classes_load_our_checkpoint_in_any_import_order(order, tiny_ckpt):
    code = textwrap.dedent(_AUTO_CHECK).replace("{imports}", IMPORT_ORDERS[order].replace("\n", "; "))
    assert _run(code, str(tiny_ckpt)).stdout.strip().endswith("ok")


def test_auto_classes_fail_without_the_package(tiny_ckpt):
    """The control: without importing our package, transformers does not know the model type."""
    code = """
        import sys
        from transformers import AutoConfig
        try:
            AutoConfig.from_pretrained(sys.argv[1])
        except (ValueError, KeyError) as err:
            print("refused", "llava_next_video_anyres" in str(err))
        else:
            print("loaded")
    """
    assert _run(code, str(tiny_ckpt)).stdout.strip().splitlines()[-1] == "refused True"


def test_public_names_resolve_lazily():
    for name in llava_next_video_hf.__all__:
        value = getattr(llava_next_video_hf, name)
        assert value.__name__ == name
    assert set(llava_next_video_hf.__all__) <= set(dir(llava_next_video_hf))
    with pytest.raises(AttributeError, match="NoSuchThing"):
        llava_next_video_hf.NoSuchThing  # noqa: B018


def test_command_table_matches_the_full_parser():
    """Every subcommand the modules add is in ``cli.COMMANDS``, with the same module and help."""
    full = cli.build_parser()
    sub = next(a for a in full._actions if a.dest == "command")
    listed = {choice.dest: choice.help for choice in sub._choices_actions}
    assert listed == {name: help_ for name, (_, help_) in cli.COMMANDS.items()}
    for name, (module, _) in cli.COMMANDS.items():
        parser = cli.build_parser(name)
        chosen = next(a for a in parser._actions if a.dest == "command").choices[name]
        assert len(chosen._actions) > 1, f"{name}: {module}.add_cli did not add its arguments"
    stubs = next(a for a in cli.build_parser("")._actions if a.dest == "command").choices
    assert list(stubs) == list(cli.COMMANDS)


@pytest.mark.vllm
def test_vllm_plugin_register_imports_only_what_registration_needs():
    """vLLM calls ``register()`` in every process it starts: the model module stays lazy (vLLM imports
    it when it builds the model) and nothing of the CLI, training or Hub code comes along."""
    code = """
        import json, sys
        from llava_next_video_hf.vllm_plugin import register
        register()
        from vllm import ModelRegistry
        from llava_next_video_hf.vllm_plugin import ARCHITECTURE
        assert ARCHITECTURE in ModelRegistry.get_supported_archs()
        print(json.dumps(sorted(name for name in sys.modules if name.startswith("llava_next_video_hf"))))
    """
    loaded = set(json.loads(_run(code).stdout.strip().splitlines()[-1]))
    unused = {
        "vllm_plugin.model",
        "vllm_plugin.offline",
        "cli",
        "train",
        "hub_cards",
        "testing.tasks",
        "testing.synthetic",
    }
    assert not {f"llava_next_video_hf.{name}" for name in unused} & loaded
    assert "llava_next_video_hf.configuration" in loaded
