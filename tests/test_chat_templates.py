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


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_is_the_file_without_its_layout(name):
    template = TEMPLATES[name]
    assert "\n" not in template and template == template.strip()
    assert template == "".join(line.strip() for line in _file_text(name).splitlines())


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
