"""The chat templates as shipped ``.jinja`` files: the string each loads to, and the file as written.

The rendered formats themselves are checked against the original LLaVA conversations in
test_convert.py; here, that a file's line breaks and indentation are only layout.
"""

from __future__ import annotations

from importlib.resources import files

import pytest

from llava_next_video_hf import chat_templates
from llava_next_video_hf.chat_templates import TEMPLATES

_CONVERSATIONS = [
    [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A dog runs."}]},
        {"role": "user", "content": "And here?"},
    ],
    [
        {"role": "system", "content": [{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}],
        },
        {"role": "assistant", "content": "No."},
    ],
]


def _file_text(name: str) -> str:
    return files(chat_templates.__name__).joinpath(f"{name}.jinja").read_text(encoding="utf-8")


# The first conversation above with a generation prompt, written out from the original
# conversation formats (conversation.py: conv_vicuna_v1 TWO, conv_mistral_instruct LLAMA_2 with sep "",
# conv_chatml_direct MPT, conv_qwen CHATML), never rendered by the code under test.
_VICUNA = (
    "<s>A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions. USER: <video>\nWhat happens? "
    "ASSISTANT: A dog runs.</s>USER: And here? ASSISTANT:"
)
_MISTRAL = "<s>[INST] <video>\nWhat happens? [/INST] A dog runs. </s>[INST] And here? [/INST]"
_CHATML = (
    "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<video>\nWhat happens?<|im_end|>"
    "<|im_start|>assistant\nA dog runs.<|im_end|><|im_start|>user\nAnd here?<|im_end|><|im_start|>assistant\n"
)
_QWEN = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<video>\nWhat happens?"
    "<|im_end|>\n<|im_start|>assistant\nA dog runs.<|im_end|>\n<|im_start|>user\nAnd here?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
_ORIGINAL = {"vicuna_v1": _VICUNA, "mistral_instruct": _MISTRAL, "chatml_direct": _CHATML, "qwen_1_5": _QWEN}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_renders_the_original_conversation(tokenizer, name):
    """Each loaded template (and the name it is served under) renders the original format: a template
    loaded from the wrong file, or one whose loading changed its text, renders something else."""
    assert sorted(_ORIGINAL) == sorted(TEMPLATES)
    rendered = tokenizer.apply_chat_template(
        _CONVERSATIONS[0], chat_template=TEMPLATES[name], tokenize=False, add_generation_prompt=True
    )
    assert rendered == _ORIGINAL[name]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_file_as_written_renders_like_the_template(tokenizer, name, add_generation_prompt):
    for conversation in _CONVERSATIONS:
        rendered = [
            tokenizer.apply_chat_template(
                conversation,
                chat_template=template,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
            for template in (_file_text(name), TEMPLATES[name])
        ]
        assert rendered[0] == rendered[1]


def test_default_system_prompts_are_in_their_templates():
    vicuna = chat_templates.VICUNA_V1_SYSTEM.replace("'", "\\'")  # quoted inside a Jinja string
    assert f"namespace(system='{vicuna}')" in TEMPLATES["vicuna_v1"]
    assert f"namespace(system='{chat_templates.CHATML_DIRECT_SYSTEM}')" in TEMPLATES["chatml_direct"]
    assert f"namespace(system='{chat_templates.QWEN_SYSTEM}')" in TEMPLATES["qwen_1_5"]
    assert "namespace(system='')" in TEMPLATES["mistral_instruct"]
