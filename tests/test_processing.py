"""Processors: AnyRes images vs transformers, video pixels vs independent references, token expansion,
mixed batches, errors, save/load through the Auto classes and chat templates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, LlavaNextProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.auto.video_processing_auto import AutoVideoProcessor
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from llava_next_video_hf.errors import ContextLengthError, PlaceholderMismatchError
from llava_next_video_hf.processing import (
    LlavaNextVideoAnyResImageProcessor,
    LlavaNextVideoAnyResProcessor,
    LlavaNextVideoAnyResVideoProcessor,
    register_auto_classes,
)
from llava_next_video_hf.testing import make_processor, tiny_config

PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
MEAN = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
ONE_LEVEL = 1 / 255 / min(OPENAI_CLIP_STD)  # one uint8 step after normalisation


@pytest.fixture(scope="module")
def processor(tokenizer) -> LlavaNextVideoAnyResProcessor:
    return make_processor(tiny_config(tokenizer), tokenizer)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _frames(t: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _count(ids: torch.Tensor, token_id: int) -> list[int]:
    return (ids == token_id).sum(-1).tolist()


# ------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("width,height", [(500, 300), (300, 500), (336, 336), (1000, 200)])
def test_image_processor_matches_transformers(tokenizer, processor, width, height):
    image = _image(width, height)
    ref = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=PINPOINTS
    )
    expected = ref(image, return_tensors="pt")
    ours = LlavaNextVideoAnyResImageProcessor()(image, return_tensors="pt")
    assert ours["pixel_values"].shape == expected["pixel_values"].shape
    assert ours["pixel_values"].shape[-3:] == (3, 336, 336)
    torch.testing.assert_close(ours["pixel_values"], expected["pixel_values"], atol=1e-5, rtol=0)
    assert ours["image_sizes"].tolist() == expected["image_sizes"].tolist() == [[height, width]]

    # Token count: transformers' LlavaNextProcessor agrees with the model at num_additional_image_tokens=1.
    for strategy in ("default", "full"):
        hf = LlavaNextProcessor(
            image_processor=ref,
            tokenizer=tokenizer,
            patch_size=14,
            vision_feature_select_strategy=strategy,
            num_additional_image_tokens=1,
        )
        hf_ids = hf(images=image, text="<image>\nWhat is shown?", return_tensors="pt")["input_ids"]
        proc = (
            processor
            if strategy == "default"
            else make_processor(tiny_config(tokenizer, vision_feature_select_strategy="full"), tokenizer)
        )
        out = proc(text="<image>\nWhat is shown?", images=image)
        assert _count(out["input_ids"], tokenizer.image_token_id) == _count(hf_ids, tokenizer.image_token_id)
        assert out["input_ids"].tolist() == hf_ids.tolist()
        assert _count(out["input_ids"], tokenizer.image_token_id)[0] == proc.num_image_tokens(height, width)
    assert processor.num_image_tokens(height, width) == tiny_config(tokenizer).num_image_tokens(height, width)


def test_image_batch_pads_patches(processor):
    images = [_image(500, 300), _image(700, 700)]  # base + 2 tiles (336x672 canvas), base + 4 (672x672)
    out = processor.image_processor(images, return_tensors="pt")
    pv = out["pixel_values"]
    assert pv.shape[:2] == (2, 5)
    assert out["image_sizes"].tolist() == [[300, 500], [700, 700]]
    assert torch.count_nonzero(pv[0, 3:]) == 0


# ------------------------------------------------------------------------------------------ video tokens

# Numbers written out by hand: side = floor(24 / stride) (average pooling, as the original), per frame side^2.
HAND_COUNTS = [
    # stride, frames, no_token, one_token, frame, grid
    (2, 8, 1152, 1153, 8 * 145, 8 * 12 * 13),  # 144 per frame
    (1, 2, 1152, 1153, 2 * 577, 2 * 24 * 25),  # 576 per frame
    (3, 4, 256, 257, 4 * 65, 4 * 8 * 9),  # 64 per frame
    (4, 3, 108, 109, 3 * 37, 3 * 6 * 7),  # 36 per frame
    (5, 1, 16, 17, 17, 4 * 5),  # floor(24 / 5) = 4: the partial last window is dropped
]


@pytest.mark.parametrize("stride,frames,no_token,one_token,frame,grid", HAND_COUNTS)
def test_video_token_counts(tokenizer, stride, frames, no_token, one_token, frame, grid):
    expected = {"no_token": no_token, "one_token": one_token, "frame": frame, "grid": grid}
    video = _frames(frames, 24, 32)
    for position, count in expected.items():
        config = tiny_config(tokenizer, spatial_pool_stride=stride, video_newline_position=position)
        proc = make_processor(config, tokenizer)
        out = proc(text="USER: <video>\nWhat happens? ASSISTANT:", videos=video)
        assert out["video_num_frames"].tolist() == [frames]
        assert _count(out["input_ids"], tokenizer.video_token_id) == [count], (stride, position)
        assert proc.num_video_tokens(frames) == config.num_video_tokens(frames) == count


# ------------------------------------------------------------------------------------------ video pixels


def _reference_pixels(frames: np.ndarray, *, round_uint8: bool) -> torch.Tensor:
    """Straightforward float pipeline: shortest side 336 (bicubic, antialias), crop 336, /255, CLIP norm."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    new_h, new_w = (336, int(336 * w / h)) if h <= w else (int(336 * h / w), 336)
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    if round_uint8:
        x = x.clamp(0, 255).round()
    top, left = int((new_h - 336) / 2), int((new_w - 336) / 2)
    x = x[..., top : top + 336, left : left + 336]
    return (x / 255 - MEAN) / STD


def _pil_pixels(frames: np.ndarray) -> torch.Tensor:
    """The original LLaVA preprocessing: PIL bicubic resize per frame, crop, /255, CLIP norm."""
    out = []
    for f in frames:
        h, w = f.shape[:2]
        new_w, new_h = (int(336 * w / h), 336) if h <= w else (336, int(336 * h / w))
        r = np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.BICUBIC))
        top, left = int((new_h - 336) / 2), int((new_w - 336) / 2)
        out.append(torch.from_numpy(r[top : top + 336, left : left + 336].copy()).permute(2, 0, 1).float())
    return (torch.stack(out) / 255 - MEAN) / STD


def _smooth_frames(t: int, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = [
        np.stack([60 + 60 * np.sin(xx / 23 + k), 120 + 50 * np.cos(yy / 17), 90 + 0.2 * (xx + yy)], -1)
        for k in range(t)
    ]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def test_video_pixels_match_independent_references():
    from llava_next_video_hf.testing.synthetic import make_frames

    vp = LlavaNextVideoAnyResVideoProcessor()
    # Float input: no rounding anywhere, so ours must equal the plain float pipeline.
    smooth = _smooth_frames(3, 200, 360)
    ours = vp(torch.from_numpy(smooth).float())["pixel_values_videos"][0]
    torch.testing.assert_close(ours, _reference_pixels(smooth, round_uint8=False), atol=1e-4, rtol=0)

    # uint8 input on CPU, resize_backend="torch": torchvision's native uint8 kernel (as transformers'
    # video processor), which differs from float-then-round by at most one level on smooth content...
    ours = vp(smooth, resize_backend="torch")["pixel_values_videos"][0]
    assert ours.shape == (3, 3, 336, 336) and ours.dtype == torch.float32
    assert (ours - _reference_pixels(smooth, round_uint8=True)).abs().max() <= ONE_LEVEL + 1e-5

    # ... and matches PIL's bicubic (the original LLaVA preprocessing, our default: exact, see
    # test_fidelity.py) to one level on a real clip.
    clip = make_frames(4, height=360, width=640)  # portrait and landscape handled alike
    for frames in (clip, clip.transpose(0, 2, 1, 3).copy()):
        ours = vp(frames, resize_backend="torch")["pixel_values_videos"][0]
        diff = (ours - _pil_pixels(frames)).abs()
        assert diff.max() <= ONE_LEVEL + 1e-5
        assert (diff > 1e-4).float().mean() < 0.01


def test_video_input_forms_agree():
    vp = LlavaNextVideoAnyResVideoProcessor()
    frames = _frames(3, 40, 60)
    ref = vp(frames)["pixel_values_videos"]
    same = [
        torch.from_numpy(frames),  # (T, H, W, C) tensor
        torch.from_numpy(frames).permute(0, 3, 1, 2),  # (T, C, H, W) tensor
        [Image.fromarray(f) for f in frames],  # list of PIL frames
        [list(frames)],  # nested list of (H, W, 3) frames
    ]
    for video in same:
        assert torch.equal(vp(video)["pixel_values_videos"], ref)
    out = vp(frames, return_tensors="np")
    assert isinstance(out["pixel_values_videos"], np.ndarray) and out["video_num_frames"].dtype == np.int64


def test_video_frame_sampling_of_arrays():
    vp = LlavaNextVideoAnyResVideoProcessor(num_frames=4)
    frames = np.stack([np.full((24, 32, 3), 20 * i, dtype=np.uint8) for i in range(10)])
    assert vp(frames)["video_num_frames"].tolist() == [10]  # arrays are used as given by default
    out = vp(frames, num_frames=4)  # linspace(0, 9, 4) = [0, 3, 6, 9]: first and last included
    assert out["video_num_frames"].tolist() == [4]
    firsts = out["pixel_values_videos"][0, :, 0, 0, 0]
    expected = (torch.tensor([0, 60, 120, 180]) / 255 - OPENAI_CLIP_MEAN[0]) / OPENAI_CLIP_STD[0]
    torch.testing.assert_close(firsts, expected.float(), atol=1e-5, rtol=0)
    assert vp(frames, do_sample_frames=True)["video_num_frames"].tolist() == [4]
    capped = LlavaNextVideoAnyResVideoProcessor(num_frames=8, max_frames=5)
    assert capped(frames, do_sample_frames=True)["video_num_frames"].tolist() == [5]
    with pytest.raises(ValueError, match="mutually exclusive"):
        vp(frames, num_frames=4, fps=1.0)


# ------------------------------------------------------------------------------------------ batches


def test_mixed_batch(tokenizer, processor):
    prompts = [
        "USER: <video>\nWhat happens? ASSISTANT:",
        "USER: <video>\nAnd here? ASSISTANT:",
        "USER: <image>\nWhat is shown? ASSISTANT:",
        "USER: Hello there ASSISTANT:",
    ]
    videos = [_frames(8, 48, 64, seed=1), _frames(4, 64, 48, seed=2)]
    image = _image(500, 300)
    out = processor(text=prompts, images=[image], videos=videos)

    assert out["pixel_values_videos"].shape == (2, 8, 3, 336, 336)
    assert out["pixel_values_videos"].dtype == torch.float32
    assert out["video_num_frames"].tolist() == [8, 4] and out["video_num_frames"].dtype == torch.int64
    assert torch.count_nonzero(out["pixel_values_videos"][1, 4:]) == 0
    assert torch.count_nonzero(out["pixel_values_videos"][1, :4]) > 0
    assert out["pixel_values"].shape == (1, 3, 3, 336, 336)
    assert out["image_sizes"].tolist() == [[300, 500]]

    ids, mask = out["input_ids"], out["attention_mask"]
    n_image = processor.num_image_tokens(300, 500)
    assert _count(ids, tokenizer.video_token_id) == [1152, 576, 0, 0]
    assert _count(ids, tokenizer.image_token_id) == [0, 0, n_image, 0]
    lengths = mask.sum(-1)
    assert ids.shape[1] == lengths.max()
    # Left padding (generation): zeros on the left, ones to the end, pad ids under the zeros.
    assert mask[:, -1].all()
    for row, n in zip(mask, lengths.tolist(), strict=True):
        assert row[: row.numel() - n].sum() == 0 and row[row.numel() - n :].all()
    assert (ids[mask == 0] == tokenizer.pad_token_id).all()
    # Each prompt decodes back to its text once placeholders are dropped.
    for row, r_mask, prompt in zip(ids, mask, prompts, strict=True):
        kept = [
            int(i) for i, m in zip(row, r_mask, strict=True) if m and int(i) not in processor.video_token_ids
        ]
        kept = [i for i in kept if i != tokenizer.image_token_id]
        text = processor.decode(kept, skip_special_tokens=True)
        assert text == prompt.replace("<video>", "").replace("<image>", "")

    right = processor(text=prompts, images=[image], videos=videos, padding_side="right")
    assert right["attention_mask"][:, 0].all()
    assert right["attention_mask"].sum(-1).tolist() == lengths.tolist()


def test_interleaved_media_follow_placeholder_order(tokenizer, processor):
    out = processor(
        text=["<video> then <image> then <video>", "<image>"],
        images=[_image(300, 500), _image(336, 336)],
        videos=[_frames(2), _frames(3)],
    )
    ids = out["input_ids"][0][out["attention_mask"][0].bool()].tolist()
    runs, prev = [], None
    for i in ids:
        if i in (tokenizer.video_token_id, tokenizer.image_token_id):
            if i != prev:
                runs.append([i, 0])
            runs[-1][1] += 1
        prev = i
    assert runs == [
        [tokenizer.video_token_id, 288],
        [tokenizer.image_token_id, processor.num_image_tokens(500, 300)],
        [tokenizer.video_token_id, 432],
    ]
    assert _count(out["input_ids"], tokenizer.image_token_id)[1] == processor.num_image_tokens(336, 336)


# ------------------------------------------------------------------------------------------ errors


def test_placeholder_mismatch(processor):
    with pytest.raises(PlaceholderMismatchError, match=r"2 <video> placeholder.*but 1 video"):
        processor(text="<video> and <video>", videos=[_frames(2)])
    with pytest.raises(PlaceholderMismatchError, match=r"0 <image> placeholder.*but 1 image"):
        processor(text="no placeholder", images=[_image(64, 64)])
    with pytest.raises(PlaceholderMismatchError, match=r"1 <video> placeholder.*but 0 video"):
        processor(text="<video> alone")


def test_too_long_prompt_names_the_fix(tokenizer, processor):
    prompt = "USER: <video>\nWhat happens? ASSISTANT:"
    n_text = len(tokenizer(prompt)["input_ids"]) - 1  # every token but the placeholder (with <s>)
    total = n_text + 64 * 144  # 64 frames x 144 tokens at stride 2
    fit = (4096 - n_text) // 144  # frames that fit the 4096-position context with this text
    factor = math.ceil(total / 4096)
    assert factor == 3
    video = _frames(64, 16, 16)
    with pytest.raises(ContextLengthError) as info:
        processor(text=prompt, videos=video)
    msg = str(info.value)
    assert f"prompt 0 is {total} tokens long" in msg
    assert "context is 4096 positions" in msg
    assert f"at most {fit} frames" in msg and f"num_frames={fit}" in msg
    assert f"rope_scaling_factor={factor}" in msg and "max_frames=64, rope_scaling_factor='auto'" in msg
    # The advertised fixes work: fewer frames, or a config with the RoPE factor.
    assert processor(text=prompt, videos=video, num_frames=fit)["input_ids"].shape[1] <= 4096
    with pytest.raises(ContextLengthError):
        processor(text=prompt, videos=video, num_frames=fit + 1)
    scaled = make_processor(tiny_config(tokenizer, max_frames=64, rope_scaling_factor="auto"), tokenizer)
    assert scaled.context_length == 3 * 4096 and scaled.original_context_length == 4096
    out = scaled(text=prompt, videos=video)
    assert out["input_ids"].shape[1] == total  # nothing truncated
    with pytest.raises(ValueError, match="truncation"):
        processor(text=prompt, videos=video[:2], truncation=True)


def test_too_long_prompt_with_two_videos_names_frames_per_video(tokenizer, processor):
    prompt = "USER: <video> then <video>\nSame scene? ASSISTANT:"
    n_text = len(tokenizer(prompt)["input_ids"]) - 2  # every token but the two placeholders
    per_video = (4096 - n_text) // (2 * 144)  # frames per video: both clips sampled alike, 144 tokens each
    videos = [_frames(32, 16, 16), _frames(32, 16, 16, seed=1)]
    with pytest.raises(ContextLengthError) as info:
        processor(text=prompt, videos=videos)
    assert f"at most {per_video} frames per video (2 videos)" in str(info.value)
    # the advice is exact: that many frames fit, one more does not
    out = processor(text=prompt, videos=videos, num_frames=per_video)
    assert out["input_ids"].shape[1] == n_text + 2 * 144 * per_video <= 4096
    with pytest.raises(ContextLengthError):
        processor(text=prompt, videos=videos, num_frames=per_video + 1)


# ------------------------------------------------------------------------------------------ save / load


def test_save_and_auto_load_round_trip(tmp_path, tokenizer, processor):
    register_auto_classes()
    register_auto_classes()  # idempotent
    processor.save_pretrained(tmp_path / "proc")
    saved = json.loads((tmp_path / "proc" / "processor_config.json").read_text())
    assert saved["processor_class"] == "LlavaNextVideoAnyResProcessor"
    assert saved["video_processor"]["num_frames"] == 8 and "max_frames" in saved["video_processor"]
    assert saved["context_length"] == 4096 and saved["num_additional_image_tokens"] == 1

    loaded = AutoProcessor.from_pretrained(tmp_path / "proc")
    assert type(loaded) is LlavaNextVideoAnyResProcessor
    assert type(loaded.image_processor) is LlavaNextVideoAnyResImageProcessor
    assert type(loaded.video_processor) is LlavaNextVideoAnyResVideoProcessor
    assert loaded.chat_template == processor.chat_template
    assert loaded.model_input_names == processor.model_input_names
    args = {
        "text": ["<video> what?", "<image> and text"],
        "videos": [_frames(3, 40, 50)],
        "images": [_image(200, 120)],
    }
    a, b = processor(**args), loaded(**args)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    image_proc = AutoImageProcessor.from_pretrained(tmp_path / "proc")
    video_proc = AutoVideoProcessor.from_pretrained(tmp_path / "proc")
    assert type(image_proc) is LlavaNextVideoAnyResImageProcessor
    assert type(video_proc) is LlavaNextVideoAnyResVideoProcessor
    # Stand-alone saves (preprocessor_config.json / video_preprocessor_config.json) load too.
    processor.video_processor.save_pretrained(tmp_path / "video")
    processor.image_processor.save_pretrained(tmp_path / "image")
    assert (tmp_path / "video" / "video_preprocessor_config.json").exists()
    video_proc = AutoVideoProcessor.from_pretrained(tmp_path / "video")
    assert torch.equal(video_proc(args["videos"])["pixel_values_videos"], a["pixel_values_videos"])
    image_proc = AutoImageProcessor.from_pretrained(tmp_path / "image")
    assert torch.equal(image_proc(args["images"], return_tensors="pt")["pixel_values"], a["pixel_values"])


# ------------------------------------------------------------------------------------------ chat template


def test_apply_chat_template_video_path_and_image(tmp_path, tokenizer, processor):
    from llava_next_video_hf.testing.synthetic import make_video

    path = make_video(tmp_path / "clip.mp4", num_frames=20, fps=10, width=128, height=96)
    messages = [
        {
            "role": "user",
            "content": [{"type": "video", "path": str(path)}, {"type": "text", "text": "What colour?"}],
        }
    ]
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=True, num_frames=8
    )
    assert out["video_num_frames"].tolist() == [8]
    assert out["pixel_values_videos"].shape == (1, 8, 3, 336, 336)
    assert _count(out["input_ids"], tokenizer.video_token_id) == [1152]
    text = processor.decode(out["input_ids"][0][out["input_ids"][0] != tokenizer.video_token_id])
    assert text.startswith("<s>A chat between") and text.endswith("USER: \nWhat colour? ASSISTANT:")

    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=True, fps=2
    )
    assert out["video_num_frames"].tolist() == [4]  # 2 s at 10 fps, one frame every 5

    image = _image(500, 300)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": _frames(5, 48, 64)},
                {"type": "image", "image": image},
                {"type": "text", "text": "Same scene?"},
            ],
        }
    ]
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=True)
    assert out["video_num_frames"].tolist() == [5]
    assert out["image_sizes"].tolist() == [[300, 500]]
    assert _count(out["input_ids"], tokenizer.video_token_id) == [5 * 144]
    assert _count(out["input_ids"], tokenizer.image_token_id) == [processor.num_image_tokens(300, 500)]
    ids = processor.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    assert torch.equal(ids, out["input_ids"])
    assert processor.batch_decode(ids[:, :3]) == [processor.decode(ids[0, :3])]


# ------------------------------------------------------------------------------------------ misc


def test_outputs_feed_the_model(tokenizer):
    from llava_next_video_hf.testing import make_tiny_model

    model = make_tiny_model(
        tokenizer=tokenizer,
        video_newline_position="frame",
        vision_feature_select_strategy="full",
        spatial_pool_stride=3,
    )
    proc = make_processor(model.config, tokenizer)
    out = proc(
        text=["<video> a", "<video> b", "<image> c", "d"],
        videos=[_frames(3, 40, 60), _frames(2, 60, 40)],
        images=[_image(500, 300)],
    )
    with torch.no_grad():
        logits = model(**out).logits  # the model checks features against placeholders
    assert logits.shape[:2] == out["input_ids"].shape


def test_helpers_and_call_forms(tokenizer, processor):
    data = processor._get_num_multimodal_tokens(image_sizes=[[300, 500]], video_num_frames=[8, 4])
    assert data.num_image_tokens == [processor.num_image_tokens(300, 500)]
    assert data.num_video_tokens == [1152, 576]
    assert processor.model_input_names == [
        "input_ids", "attention_mask", "pixel_values", "image_sizes", "pixel_values_videos", "video_num_frames"
    ]  # fmt: skip
    image = _image(200, 100)
    a = processor(text="<image> hi", images=image)
    b = processor(image, "<image> hi")  # transformers' positional order (images, text)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    lists = processor(text="<video> hi", videos=_frames(2), return_tensors=None)
    assert isinstance(lists["input_ids"], list) and isinstance(lists["input_ids"][0], int)
    media_only = processor(videos=[_frames(2), _frames(1)])
    assert "input_ids" not in media_only and media_only["video_num_frames"].tolist() == [2, 1]
