"""transformers' ``image-text-to-text`` pipeline takes our model with video and image chat messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

from llava_next_video_hf import testing


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe") / "clip.mp4"
    return testing.make_video(path, num_frames=30, fps=10, width=160, height=120)


def _direct_answer(ckpt, messages, max_new_tokens: int) -> str:
    processor = AutoProcessor.from_pretrained(ckpt)
    model = AutoModelForImageTextToText.from_pretrained(ckpt)
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("kind", ["video", "image"])
def test_image_text_to_text_pipeline_answers_like_generate(tiny_ckpt, clip, kind):
    media = (
        {"type": "video", "path": str(clip)}
        if kind == "video"
        else {"type": "image", "image": Image.fromarray(np.full((300, 500, 3), 90, np.uint8))}
    )
    messages = [{"role": "user", "content": [media, {"type": "text", "text": "What is shown?"}]}]
    pipe = pipeline("image-text-to-text", model=str(tiny_ckpt))
    out = pipe(text=messages, max_new_tokens=6, do_sample=False)
    answer = out[0]["generated_text"][-1]["content"]
    assert answer == _direct_answer(tiny_ckpt, messages, 6)
    assert answer  # the tiny random model says *something*
