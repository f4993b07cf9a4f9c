"""Checkpoint conversion: parity with transformers' reference classes for the three layouts, the round
trip through llava-hf, carried settings, the CLI's errors, atomic publishing, streaming memory and the
direct load of llava-hf folders.

References are transformers' own ``LlavaNextVideoForConditionalGeneration`` / ``LlavaNextForConditionalGeneration``
with random weights; for the original (lmms-lab) layout, the same weights are loaded into transformers'
class through a key map written out by hand below. Logits must agree within 1e-4 (fp32).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import llava_next_video_hf  # noqa: F401  (registers the Auto classes)
from llava_next_video_hf import cli, convert, rope, testing
from llava_next_video_hf.chat_templates import TEMPLATES
from llava_next_video_hf.errors import ConversionError

ATOL = 1e-4
FRAMES = 3
IMAGE_SIZE = (300, 500)  # (height, width): wide, so AnyRes unpads rows


# ---------------------------------------------------------------- helpers


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["convert", *map(str, argv), "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def _load(path: Path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path).eval()


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def _ids(token_id: int, n: int) -> torch.Tensor:
    """BOS, a few text ids, ``n`` placeholders, a few more text ids (ids below every tiny vocab)."""
    return torch.tensor([[1, 40, 41, 42] + [token_id] * n + [43, 44, 45, 46]])


def _video() -> torch.Tensor:
    return torch.randn(1, FRAMES, 3, 336, 336, generator=torch.Generator().manual_seed(1))


def _image():
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    proc = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    pixels = np.random.RandomState(0).randint(0, 256, (*IMAGE_SIZE, 3), dtype=np.uint8)
    return proc(Image.fromarray(pixels), return_tensors="pt")


def _logits(model, video_id: int | None = None, image_id: int | None = None) -> torch.Tensor:
    with torch.no_grad():
        if video_id is not None:
            ids = _ids(video_id, FRAMES * 144)  # 24x24 patches pooled 2x2, no newline
            return model(input_ids=ids, pixel_values_videos=_video()).logits
        image = _image()
        n = rope.num_image_tokens(*IMAGE_SIZE)  # base view + unpadded tiles with row newlines
        return model(
            input_ids=_ids(image_id, n), pixel_values=image.pixel_values, image_sizes=image.image_sizes
        ).logits


def _assert_close(expected: torch.Tensor, got: torch.Tensor, vocab: int | None = None) -> None:
    vocab = vocab or expected.shape[-1]
    assert got.shape[:-1] == expected.shape[:-1]
    assert (expected[..., :vocab] - got[..., :vocab]).abs().max().item() <= ATOL


def _grow_vocab(state: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """The reference's embedding and LM head with zero rows appended (placeholder rows are overwritten by
    visual features, and the logits of new tokens are not compared)."""
    state = dict(state)
    for name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        t = state[name]
        state[name] = torch.cat([t, t.new_zeros(rows - t.shape[0], t.shape[1])])
    return state


def _reference_video_model(vision: dict, text: dict, image_id: int, video_id: int, state: dict):
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    config = LlavaNextVideoConfig(
        vision_config=vision, text_config=text, image_token_index=image_id, video_token_index=video_id
    )
    model = LlavaNextVideoForConditionalGeneration(config).eval()
    model.load_state_dict(state, strict=True)
    return model


def _rewrite_weights(folder: Path, edit) -> None:
    """Apply ``edit(state) -> state`` to the single-file safetensors checkpoint in ``folder``."""
    file = folder / "model.safetensors"
    save_file(edit(load_file(file)), str(file), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def hf_video(tmp_path_factory) -> Path:
    return testing.make_llava_hf_checkpoint(tmp_path_factory.mktemp("hf") / "video", "video")


@pytest.fixture(scope="module")
def hf_video_ref(tokenizer):
    return testing.make_llava_hf_video_model(0, tokenizer)  # the weights of hf_video


# ---------------------------------------------------------------- parity per layout


def test_llava_hf_video_converts_to_equal_logits(hf_video, hf_video_ref, tmp_path, capsys):
    code, out, _ = _run(capsys, "--from", "llava-hf", hf_video, tmp_path / "out")
    assert code == 0 and "llava-hf" in out and "vicuna_v1" in out
    ours = _load(tmp_path / "out")
    assert type(ours).__name__ == "LlavaNextVideoAnyResForConditionalGeneration"
    _assert_close(_logits(hf_video_ref, video_id=5), _logits(ours, video_id=5))
    _assert_close(_logits(hf_video_ref, image_id=4), _logits(ours, image_id=4))
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "processor_config.json"} <= files
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= files
    assert (tmp_path / "out" / "chat_template.jinja").read_text() == TEMPLATES["vicuna_v1"]


def test_llava_hf_settings_carry_over(tokenizer, tmp_path, capsys):
    pinpoints = [[336, 672], [672, 336], [672, 672]]
    ref = testing.make_llava_hf_video_model(
        0, tokenizer, spatial_pool_mode="max", spatial_pool_stride=3, vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )  # fmt: skip
    ref.save_pretrained(tmp_path / "src")
    tokenizer.save_pretrained(tmp_path / "src")
    assert _run(capsys, tmp_path / "src", tmp_path / "out")[0] == 0
    ours = _load(tmp_path / "out")
    c = ours.config
    assert (c.spatial_pool_mode, c.spatial_pool_stride, c.spatial_pool_position) == (
        "max",
        3,
        "before_projector",
    )
    assert (c.vision_feature_layer, c.video_newline_position, c.image_grid_pinpoints) == (
        -1,
        "no_token",
        pinpoints,
    )
    video = _video()
    ids = _ids(5, FRAMES * 8 * 8)  # stride 3: 24 / 3 = 8 per side
    with torch.no_grad():
        _assert_close(
            ref(input_ids=ids, pixel_values_videos=video).logits,
            ours(input_ids=ids, pixel_values_videos=video).logits,
        )


def test_llava_hf_image_becomes_video_model_with_added_video_token(tmp_path, capsys):
    tok = testing.make_plain_tokenizer(extra_tokens=("<image>",))  # 513 tokens, <image> = 512, no <video>
    ref = testing.make_llava_hf_image_model(0, tok)
    ref.save_pretrained(tmp_path / "src")
    tok.save_pretrained(tmp_path / "src")
    code, out, _ = _run(capsys, "--from", "llava-hf-image", tmp_path / "src", tmp_path / "out")
    assert code == 0 and "added <video>" in out and "513 to 514 rows" in out
    ours = _load(tmp_path / "out")
    c = ours.config
    assert (c.image_token_id, c.video_token_id, c.text_config.vocab_size) == (512, 513, 514)
    assert (c.spatial_pool_stride, c.spatial_pool_mode, c.spatial_pool_position, c.video_newline_position) == (
        2, "average", "before_projector", "no_token",
    )  # fmt: skip
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "out").convert_tokens_to_ids("<video>") == 513
    # image prompt: the image model itself
    _assert_close(_logits(ref, image_id=512), _logits(ours, image_id=512), vocab=513)
    # video prompt: the zero-shot path = transformers' LLaVA-NeXT-Video class on the image weights
    video_ref = _reference_video_model(
        testing.tiny_vision_config(),
        testing.tiny_text_config(514),
        512,
        513,
        _grow_vocab(ref.state_dict(), 514),
    )
    _assert_close(_logits(video_ref, video_id=513), _logits(ours, video_id=513), vocab=513)
    # the new rows are the mean of the old ones (documented)
    embed = ref.state_dict()["model.language_model.embed_tokens.weight"]
    got = ours.state_dict()["model.language_model.embed_tokens.weight"]
    assert torch.allclose(got[513], embed.mean(0), atol=1e-6) and torch.equal(got[:513], embed)


# hand-written map: original (lmms-lab) names -> transformers' LlavaNextVideo names
_LMMS_TO_HF = [
    ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.image_newline", "model.image_newline"),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.", "lm_head."),
]


def _hand_mapped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        prefix, new = next((p, n) for p, n in _LMMS_TO_HF if name.startswith(p))
        out[new + name[len(prefix) :]] = tensor
    return out


def test_lmms_lab_converts_to_equal_logits(tmp_path, capsys):
    src = testing.make_lmms_lab_checkpoint(tmp_path / "src")
    code, out, _ = _run(capsys, src, tmp_path / "out")  # --from auto
    assert code == 0 and "(lmms-lab)" in out and "added <video> and <image>" in out
    ours = _load(tmp_path / "out")
    c = ours.config
    assert (c.video_token_id, c.image_token_id, c.text_config.vocab_size) == (512, 513, 514)
    assert c.vision_config.num_attention_heads == 1 and c.vision_feature_select_strategy == "default"
    assert (c.spatial_pool_position, c.video_newline_position) == ("before_projector", "no_token")
    state = _grow_vocab(_hand_mapped(_tensors(src)), 514)
    ref = _reference_video_model(
        testing.tiny_vision_config(num_attention_heads=1), testing.tiny_text_config(514), 513, 512, state
    )
    _assert_close(_logits(ref, video_id=512), _logits(ours, video_id=512), vocab=512)
    _assert_close(_logits(ref, image_id=513), _logits(ours, image_id=513), vocab=512)


def test_lmms_lab_settings_carry_over(tmp_path, capsys):
    src = testing.make_lmms_lab_checkpoint(
        tmp_path / "src",
        text_model="mistral",
        mm_resampler_type=None,  # OneVision-era code: pooled after the projector, newline policy stated
        mm_newline_position="grid",
        mm_spatial_pool_mode="bilinear",
        mm_spatial_pool_stride=2,
        mm_vision_select_layer=-3,
        mm_vision_select_feature="cls_patch",
        image_grid_pinpoints=[[336, 672], [672, 336]],  # (width, height) in the original
        rope_scaling={"type": "linear", "factor": 2.0},
    )
    assert _run(capsys, src, tmp_path / "out")[0] == 0
    c = json.loads((tmp_path / "out" / "config.json").read_text())
    assert c["text_config"]["model_type"] == "mistral"
    assert (c["spatial_pool_position"], c["video_newline_position"]) == ("after_projector", "grid")
    assert (c["spatial_pool_mode"], c["spatial_pool_stride"]) == ("bilinear", 2)
    assert (c["vision_feature_layer"], c["vision_feature_select_strategy"]) == (-3, "full")
    assert c["image_grid_pinpoints"] == [[672, 336], [336, 672]]  # ours are [height, width]
    assert c["text_config"]["rope_parameters"]["rope_type"] == "linear"
    assert c["text_config"]["rope_parameters"]["factor"] == 2.0
    assert c["text_config"]["max_position_embeddings"] == 4096  # trained; x factor 2 = 8192 usable
    assert "original_max_position_embeddings" not in c  # the context is stored once
    assert (tmp_path / "out" / "chat_template.jinja").read_text() == TEMPLATES["mistral_instruct"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mm_projector_type": "linear"}, "mm_projector_type 'linear' is not supported"),
        ({"mm_patch_merge_type": "flat"}, "mm_patch_merge_type 'flat' is not supported"),
        ({"mm_resampler_type": "perceiver"}, "mm_resampler_type 'perceiver' is not supported"),
        ({"add_faster_video": True}, "add_faster_video"),
        ({"mm_spatial_pool_mode": "bilinear"}, "mm_spatial_pool_mode 'bilinear' with the spatial_pool"),
        (
            {"mm_resampler_type": None, "mm_newline_position": "grid", "mm_spatial_pool_stride": 3},
            "mm_spatial_pool_stride 3",
        ),
        (
            {"mm_resampler_type": None, "mm_newline_position": "grid", "mm_spatial_pool_mode": "conv"},
            "mm_spatial_pool_mode 'conv'",
        ),
        ({"image_aspect_ratio": "pad"}, "image_aspect_ratio 'pad' is not supported"),
        (
            {"image_aspect_ratio": "anyres_max_9", "image_grid_pinpoints": "(1x1),...,(6x6)"},
            "image_aspect_ratio 'anyres_max_9'",
        ),
        ({"image_grid_pinpoints": "1x1 to 6x6"}, "image_grid_pinpoints '1x1 to 6x6' is neither"),
        ({"mm_vision_tower": "google/siglip-so400m-patch14-384"}, "SigLIP towers"),
        (
            {"architectures": ["LlavaMixtralForCausalLM"], "model_type": "llava_mixtral"},
            "unsupported base LLM",
        ),
    ],
)
def test_lmms_lab_unsupported_settings_are_named(tmp_path, capsys, overrides, message):
    src = testing.make_lmms_lab_checkpoint(tmp_path / "src", **overrides)
    code, _, err = _run(capsys, "--from", "lmms-lab", src, tmp_path / "out")
    assert code == 1 and message in err and not (tmp_path / "out").exists()


def test_vision_config_and_video_settings_can_be_given(tmp_path, capsys):
    src = testing.make_lmms_lab_checkpoint(tmp_path / "src")
    vision = tmp_path / "clip.json"  # a full CLIP config: the tower's part is taken
    vision.write_text(json.dumps({"model_type": "clip", "vision_config": testing.tiny_vision_config()}))
    argv = [
        "--vision-config",
        vision,
        "--pool-position",
        "after_projector",
        "--newline",
        "frame",
        "--pool-mode",
        "max",
    ]
    assert _run(capsys, src, tmp_path / "out", *argv)[0] == 0
    c = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (
        c["vision_config"]["num_attention_heads"] == 2
        and c["vision_config"]["model_type"] == "clip_vision_model"
    )
    assert (c["spatial_pool_position"], c["video_newline_position"], c["spatial_pool_mode"]) == (
        "after_projector", "frame", "max",
    )  # fmt: skip
    # ours -> ours changes settings and keeps every tensor
    assert (
        _run(capsys, tmp_path / "out", tmp_path / "again", "--newline", "grid", "--rope-factor", "2")[0] == 0
    )
    c = json.loads((tmp_path / "again" / "config.json").read_text())
    assert (c["video_newline_position"], c["text_config"]["rope_parameters"]["factor"]) == ("grid", 2.0)
    a, b = _tensors(tmp_path / "out"), _tensors(tmp_path / "again")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- RoPE


def _rope(folder: Path) -> tuple[dict, int, int]:
    """(rope_parameters, usable context, trained context) of a converted checkpoint."""
    c = json.loads((folder / "config.json").read_text())
    params, trained = c["text_config"]["rope_parameters"], c["text_config"]["max_position_embeddings"]
    factor = params.get("factor", 1.0) if params.get("rope_type") == "linear" else 1.0
    return params, int(round(trained * factor)), trained


def test_factor_at_the_top_of_text_config_is_carried(hf_video, tmp_path, capsys):
    """transformers' 7B conversion writes factor/type next to the text config's fields (and then ignores them)."""
    src = tmp_path / "src"
    shutil.copytree(hf_video, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["text_config"].update(factor=2.0, type="linear")
    (src / "config.json").write_text(json.dumps(cfg))
    assert _run(capsys, src, tmp_path / "out")[0] == 0
    params, context, original = _rope(tmp_path / "out")
    assert (params["rope_type"], params["factor"], context, original) == ("linear", 2.0, 8192, 4096)
    text = json.loads((tmp_path / "out" / "config.json").read_text())["text_config"]
    assert "factor" not in text and "type" not in text
    assert (
        _load(tmp_path / "out").config.num_frames
        == json.loads((tmp_path / "out" / "config.json").read_text())["num_frames"]
    )


def test_rope_flags_override_the_checkpoint(hf_video, tmp_path, capsys):
    assert _run(capsys, hf_video, tmp_path / "a", "--max-frames", 64)[0] == 0
    params, context, original = _rope(tmp_path / "a")
    # ceil((64 frames * 144 tokens + 1000 text) / 4096) = ceil(10216 / 4096) = 3
    assert (params["factor"], context, original) == (3.0, 3 * 4096, 4096)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["max_frames"] == 64
    assert _run(capsys, hf_video, tmp_path / "b", "--rope-factor", "4")[0] == 0
    params, context, _ = _rope(tmp_path / "b")
    assert (params["rope_type"], params["factor"], context) == ("linear", 4.0, 16384)


def test_default_frame_count_fits_an_unscaled_context(hf_video, tmp_path, capsys):
    code, out, _ = _run(capsys, hf_video, tmp_path / "out", "--num-frames", 32)
    assert code == 0 and json.loads((tmp_path / "out" / "config.json").read_text())["num_frames"] == 32
    code, out, _ = _run(capsys, hf_video, tmp_path / "fit")
    frames = json.loads((tmp_path / "fit" / "config.json").read_text())["num_frames"]
    assert frames <= (4096 - 1000) // 144  # 21 frames of 144 tokens plus 1000 tokens of text


# ---------------------------------------------------------------- round trip through llava-hf


def test_round_trip_through_llava_hf_is_bit_identical(tmp_path, capsys):
    from transformers import LlavaNextVideoForConditionalGeneration

    ours = testing.make_tiny_checkpoint(tmp_path / "ours", seed=3, rope_scaling_factor=2)
    code, out, _ = _run(capsys, "--to", "llava-hf", ours, tmp_path / "hf")
    assert code == 0 and "(llava-hf)" in out
    names = set(_tensors(tmp_path / "hf"))
    assert "language_model.lm_head.weight" in names and "image_newline" in names
    assert any(n.startswith("vision_tower.vision_model.") for n in names)
    hf, info = LlavaNextVideoForConditionalGeneration.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    assert hf.config.text_config.rope_parameters["factor"] == 2.0
    _assert_close(_logits(hf.eval(), video_id=5), _logits(_load(ours), video_id=5))

    assert _run(capsys, "--from", "llava-hf", tmp_path / "hf", tmp_path / "back")[0] == 0
    before, after = _tensors(ours), _tensors(tmp_path / "back")
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), name
    a, b = (json.loads((p / "config.json").read_text()) for p in (ours, tmp_path / "back"))
    assert a["text_config"]["max_position_embeddings"] == b["text_config"]["max_position_embeddings"]
    for key in ("image_token_id", "video_token_id", "spatial_pool_mode"):
        assert a[key] == b[key]
    assert a["text_config"]["rope_parameters"] == b["text_config"]["rope_parameters"]


def test_to_llava_hf_refuses_settings_transformers_cannot_hold(tmp_path, capsys):
    ours = testing.make_tiny_checkpoint(tmp_path / "ours", spatial_pool_position="after_projector")
    code, _, err = _run(capsys, "--to", "llava-hf", ours, tmp_path / "hf")
    assert code == 1 and "spatial_pool_position=after_projector" in err and not (tmp_path / "hf").exists()


# ---------------------------------------------------------------- errors


def test_unknown_layout(tmp_path, capsys):
    src = tmp_path / "bert"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 2)}, str(src / "model.safetensors"))
    code, _, err = _run(capsys, src, tmp_path / "out")
    assert code == 1 and "unknown checkpoint layout" in err and "'bert'" in err


def test_from_must_match_the_checkpoint(hf_video, tmp_path, capsys):
    code, _, err = _run(capsys, "--from", "lmms-lab", hf_video, tmp_path / "out")
    assert code == 1 and "--from lmms-lab does not match" in err
    code, _, err = _run(capsys, "--from", "llava-hf-image", hf_video, tmp_path / "out")
    assert code == 1 and "llava_next_video" in err


def test_missing_extra_and_misshaped_tensors_are_all_listed(hf_video, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(hf_video, src)

    def damage(state):
        del state["language_model.model.norm.weight"]
        state["language_model.model.extra.weight"] = torch.zeros(2)
        state["something.else"] = torch.zeros(2)
        state["multi_modal_projector.linear_2.bias"] = torch.zeros(3)
        return state

    _rewrite_weights(src, damage)
    code, _, err = _run(capsys, src, tmp_path / "out")
    assert code == 1 and not (tmp_path / "out").exists()
    assert "1 tensor(s) missing: model.language_model.norm.weight" in err
    assert "2 unexpected tensor(s): language_model.model.extra.weight, something.else" in err
    assert "multi_modal_projector.linear_2.bias [3] (expected [64])" in err


def test_existing_destination_needs_overwrite(hf_video, tmp_path, capsys):
    dst = testing.make_tiny_checkpoint(tmp_path / "out")  # --overwrite replaces checkpoint folders only
    (dst / "keep.txt").write_text("old")
    code, _, err = _run(capsys, hf_video, dst)
    assert (
        code == 1
        and "already exists and is not empty; pass --overwrite" in err
        and (dst / "keep.txt").is_file()
    )
    code, _, _ = _run(capsys, hf_video, dst, "--overwrite")
    assert code == 0 and not (dst / "keep.txt").exists() and (dst / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folders left


def test_source_problems(tmp_path, capsys, monkeypatch):
    code, _, err = _run(capsys, tmp_path / "nowhere", tmp_path / "out")
    assert code == 1 and "does not exist" in err
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, _, err = _run(capsys, "llava-hf/LLaVA-NeXT-Video-7B-hf", tmp_path / "out")
    assert code == 1 and "Hub is offline" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    code, _, err = _run(capsys, tmp_path / "empty", tmp_path / "out")
    assert code == 1 and "holds no weights" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--shard-size", "5XB"],
        ["--max-frames", "8", "--rope-factor", "2"],
        ["--rope-factor", "0.5"],
        ["--from", "somewhere"],
    ],
)
def test_usage_errors_exit_2(hf_video, tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["convert", str(hf_video), str(tmp_path / "out"), *argv])
    assert exc.value.code == 2
    assert not (tmp_path / "out").exists()


def test_interrupted_conversion_leaves_no_destination(hf_video, tmp_path, monkeypatch):
    real = convert.write_safetensors
    calls = []

    def crash_on_second_shard(path, entries, produce):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way
        real(path, entries, produce)

    monkeypatch.setattr(convert, "write_safetensors", crash_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        convert.convert(hf_video, tmp_path / "out", shard_size="200KB", progress=False)
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []  # no DST, no partial folder

    old = tmp_path / "old"
    testing.make_tiny_checkpoint(old)
    before = _tensors(old)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        convert.convert(hf_video, old, shard_size="200KB", overwrite=True, progress=False)
    after = _tensors(old)  # the previous DST is untouched and still complete
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]


def test_pickled_weights_load_without_code(hf_video, tmp_path, capsys):
    src = tmp_path / "bin"
    shutil.copytree(hf_video, src)
    torch.save(load_file(src / "model.safetensors"), src / "pytorch_model.bin")
    (src / "model.safetensors").unlink()
    assert _run(capsys, src, tmp_path / "from_bin")[0] == 0
    assert _run(capsys, hf_video, tmp_path / "from_st")[0] == 0
    a, b = _tensors(tmp_path / "from_bin"), _tensors(tmp_path / "from_st")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- output format


def test_shards_index_and_dtype(hf_video, tmp_path, capsys):
    assert _run(capsys, hf_video, tmp_path / "out", "--shard-size", "300KB", "--dtype", "bfloat16")[0] == 0
    out = tmp_path / "out"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) > 2 and set(index["weight_map"].values()) == set(files)
    assert all(re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", f) for f in files)
    sizes = {f: sum(t.numel() * t.element_size() for t in load_file(out / f).values()) for f in files}
    largest_tensor = 512 * 64 * 2  # embeddings in bf16
    assert all(size <= max(300_000, largest_tensor) for size in sizes.values())
    assert index["metadata"]["total_size"] == sum(sizes.values())
    tensors = _tensors(out)
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(out / files[0]), framework="pt") as f:  # readable by the reference reader
        assert f.metadata() == {"format": "pt"}


def test_output_loads_with_auto_classes_and_renders_the_template(hf_video, tmp_path, capsys):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    assert _run(capsys, hf_video, tmp_path / "out")[0] == 0
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    assert type(processor).__name__ == "LlavaNextVideoAnyResProcessor" and model.config.video_token_id == 5
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith(" USER: <video>\nWhat happens? ASSISTANT:")


# ---------------------------------------------------------------- chat templates


_CONVERSATION = [
    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A dog runs."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And here?"}]},
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [  # as llava/conversation.py's get_prompt() renders them (with <video>/<image> placeholders);
        # "<s>" where the original's tokenizer adds a BOS (vLLM tokenizes chat prompts without one)
        (
            "vicuna_v1",  # TWO style, sep " ", sep2 "</s>"
            "<s>A chat between a curious user and an artificial intelligence assistant. The assistant gives "
            "helpful, detailed, and polite answers to the user's questions. USER: <video>\nWhat happens? "
            "ASSISTANT: A dog runs.</s>USER: <image>\nAnd here? ASSISTANT:",
        ),
        (
            "mistral_instruct",  # LLAMA_2 style, sep "", sep2 "</s>", no system
            "<s>[INST] <video>\nWhat happens? [/INST] A dog runs. </s>[INST] <image>\nAnd here? [/INST]",
        ),
        (
            "chatml_direct",  # MPT style: system + sep, role + message + sep
            "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<video>\nWhat happens?<|im_end|>"
            "<|im_start|>assistant\nA dog runs.<|im_end|><|im_start|>user\n<image>\nAnd here?<|im_end|>"
            "<|im_start|>assistant\n",
        ),
        (
            "qwen_1_5",  # CHATML style: every turn ends with sep + "\n"
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<video>\nWhat happens?"
            "<|im_end|>\n<|im_start|>assistant\nA dog runs.<|im_end|>\n<|im_start|>user\n<image>\nAnd here?"
            "<|im_end|>\n<|im_start|>assistant\n",
        ),
    ],
)
def test_chat_templates_render_the_original_formats(tokenizer, name, expected):
    got = tokenizer.apply_chat_template(
        _CONVERSATION, chat_template=TEMPLATES[name], tokenize=False, add_generation_prompt=True
    )
    assert got == expected


def test_system_prompts_can_be_replaced(tokenizer):
    system = [{"role": "system", "content": "Be brief."}, _CONVERSATION[0]]
    render = lambda name: tokenizer.apply_chat_template(  # noqa: E731
        system, chat_template=TEMPLATES[name], tokenize=False, add_generation_prompt=True
    )
    assert (
        render("mistral_instruct")
        == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<video>\nWhat happens? [/INST]"
    )
    assert render("vicuna_v1") == "<s>Be brief. USER: <video>\nWhat happens? ASSISTANT:"
    assert render("chatml_direct").startswith("<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\n")
    assert render("qwen_1_5").startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


def test_chat_template_follows_the_base_llm():
    plain = testing.make_plain_tokenizer()
    yi = testing.make_plain_tokenizer(extra_tokens=("<|im_start|>", "<|im_end|>"))
    assert convert.detect_chat_template("llama", plain) == "vicuna_v1"
    assert convert.detect_chat_template("mistral", plain) == "mistral_instruct"
    assert convert.detect_chat_template("llama", yi) == "chatml_direct"  # Yi-34B / Nous-Hermes-2-Yi
    assert convert.detect_chat_template("qwen2", yi) == "qwen_1_5"


def test_chat_template_override_and_qwen_detection(tmp_path, capsys):
    src = testing.make_lmms_lab_checkpoint(tmp_path / "src", text_model="qwen2")
    assert _run(capsys, src, tmp_path / "auto")[0] == 0
    assert (tmp_path / "auto" / "chat_template.jinja").read_text() == TEMPLATES["qwen_1_5"]
    assert _run(capsys, src, tmp_path / "forced", "--chat-template", "chatml_direct")[0] == 0
    assert (tmp_path / "forced" / "chat_template.jinja").read_text() == TEMPLATES["chatml_direct"]


# ---------------------------------------------------------------- direct load of llava-hf folders


def _hub_names(state):  # as llava-hf checkpoints on the Hub name the CLIP tower
    return {k.replace("vision_tower.", "vision_tower.vision_model.", 1): v for k, v in state.items()}


def _transformers5_names(state):
    out = {}
    for name, tensor in state.items():
        for old, new in (
            ("language_model.lm_head.", "lm_head."),
            ("language_model.model.", "model.language_model."),
        ):
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        else:
            name = "model." + name
        out[name] = tensor
    return out


@pytest.mark.parametrize("names", ["legacy", "hub", "transformers5"])
def test_llava_hf_folder_loads_directly(hf_video, hf_video_ref, tmp_path, names):
    src = tmp_path / names
    shutil.copytree(hf_video, src)
    edit = {"legacy": lambda s: s, "hub": _hub_names, "transformers5": _transformers5_names}[names]
    _rewrite_weights(src, edit)
    with pytest.warns(UserWarning, match="config was derived from a llava-hf llava_next_video checkpoint"):
        model = convert.load_llava_hf(src)
    assert type(model).__name__ == "LlavaNextVideoAnyResForConditionalGeneration"
    _assert_close(_logits(hf_video_ref, video_id=5), _logits(model.eval(), video_id=5))
    _assert_close(_logits(hf_video_ref, image_id=4), _logits(model, image_id=4))
    model.save_pretrained(tmp_path / "saved")  # saving writes our names, not the ones it was read from
    assert all(k.startswith(("model.", "lm_head.")) for k in _tensors(tmp_path / "saved"))


def test_direct_load_of_image_checkpoint_without_video_token_says_convert(tmp_path):
    tok = testing.make_plain_tokenizer(extra_tokens=("<image>",))
    testing.make_llava_hf_image_model(0, tok).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ConversionError, match="--from llava-hf-image"):
        convert.load_llava_hf(tmp_path)


def test_key_mapping_leaves_our_own_checkpoints_alone(tmp_path):
    convert.register_key_mapping()
    model = testing.make_tiny_model(0)
    model.save_pretrained(tmp_path)
    assert all(k.startswith(("model.", "lm_head.")) for k in _tensors(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = type(model).from_pretrained(tmp_path)
    assert not [w for w in caught if "derived" in str(w.message)]  # our own format needs no derivation
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- memory


_MEASURE = textwrap.dedent(
    """
    import json, re, sys
    from pathlib import Path

    def status():
        text = open("/proc/self/status").read()
        return {k: int(re.search(k + r":\\s+(\\d+)", text).group(1)) * 1024 for k in ("VmHWM", "VmRSS")}

    from llava_next_video_hf import convert, testing
    work = Path(sys.argv[1])
    convert.convert(work / "warm", work / "warm_out", progress=False)  # imports and caches first
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = status()["VmRSS"]
    result = convert.convert(work / "src", work / "out", shard_size="1MB", progress=False)
    peak = status()["VmHWM"] - before
    largest = max(p.stat().st_size for p in (work / "out").glob("*.safetensors"))
    print(json.dumps({"model": result.total_bytes, "shards": result.num_shards, "largest_shard": largest,
                      "peak_increase": peak}))
    """
)


def test_conversion_streams_peak_memory_stays_near_a_shard(tokenizer, tmp_path):
    """~21 MB model, 1 MB shards: the peak RSS increase of converting stays near one shard, far from the model."""
    big = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=6, num_attention_heads=4,
               num_key_value_heads=4, head_dim=64)  # fmt: skip
    model = testing.make_llava_hf_video_model(0, tokenizer, text_config=big)
    model.save_pretrained(tmp_path / "src")
    tokenizer.save_pretrained(tmp_path / "src")
    del model
    testing.make_llava_hf_checkpoint(tmp_path / "warm")
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    stats = json.loads(run.stdout.strip().splitlines()[-1])
    print(
        f"\nmodel {stats['model'] / 1e6:.1f} MB in {stats['shards']} shards (largest {stats['largest_shard'] / 1e6:.2f} MB): "
        f"peak RSS +{stats['peak_increase'] / 1e6:.2f} MB = {stats['peak_increase'] / stats['largest_shard']:.2f}x "
        f"the largest shard, {stats['peak_increase'] / stats['model']:.3f}x the model"
    )
    assert stats["model"] > 20e6 and stats["shards"] >= 20
    assert stats["peak_increase"] < 4 * stats["largest_shard"]
    assert stats["peak_increase"] < 0.25 * stats["model"]
