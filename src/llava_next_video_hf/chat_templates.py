"""Chat templates that reproduce the original LLaVA conversation formats.

transformers' own LLaVA-NeXT-Video templates drop the system prompts the models were trained
with; these keep them (a ``system`` message replaces the default). Media placeholders come first
in a turn, each followed by a newline, as the original ``<image>\\n{question}`` layout.
"""

from __future__ import annotations

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# ---- shared pieces -------------------------------------------------------------------------------


def _system_block(default: str) -> str:
    """Jinja that sets ``ns.system`` (a leading ``system`` message replaces ``default``) and drops it."""
    return (
        "{%- set ns = namespace(system='" + default.replace("'", "\\'") + "') -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- if messages[0]['content'] is string -%}{%- set ns.system = messages[0]['content'] -%}"
        "{%- else -%}{%- set ns.system = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
        " | map(attribute='text') | join(' ') -%}{%- endif -%}"
        "{%- set messages = messages[1:] -%}{%- endif -%}"
    )


# a user turn: every image/video placeholder first, each followed by "\n", then the text parts
_USER_CONTENT = (
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for c in message['content'] -%}"
    "{%- if c['type'] == 'image' -%}{{- '<image>\\n' -}}{%- elif c['type'] == 'video' -%}{{- '<video>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{{- message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -}}"
    "{%- endif -%}"
)
_ASSISTANT_TEXT = (
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{{- message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -}}"
    "{%- endif -%}"
)


# Vicuna v1 (conv_vicuna_v1): "<s>{system} USER: <video>\n{q} ASSISTANT: {a}</s>USER: ..."
# Templates of LLMs whose tokenizer adds a BOS start with ``bos_token``: vLLM renders chat requests
# without special tokens, and transformers adds no second BOS to a text that starts with one.
VICUNA_V1 = (
    "{{- bos_token -}}" + _system_block(VICUNA_V1_SYSTEM) + "{{- ns.system + ' ' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' -}}" + _USER_CONTENT + "{{- ' ' -}}"
    "{%- else -%}{{- 'ASSISTANT: ' -}}{% generation %}"
    + _ASSISTANT_TEXT
    + "{{- '</s>' -}}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

# Mistral instruct (conv_mistral_instruct, LLAMA_2 style, empty default system):
# "[INST] <video>\n{q} [/INST] {a} </s>[INST] ..."; a system prompt goes inside the first [INST] as <<SYS>>.
MISTRAL_INSTRUCT = (
    "{{- bos_token -}}" + _system_block("") + "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- '[INST] ' -}}"
    "{%- if loop.first and ns.system -%}{{- '<<SYS>>\\n' + ns.system + '\\n<</SYS>>\\n\\n' -}}{%- endif -%}"
    + _USER_CONTENT
    + "{{- ' [/INST]' -}}"
    "{%- else -%}{{- ' ' -}}{% generation %}" + _ASSISTANT_TEXT + "{{- ' </s>' -}}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

CHATML_DIRECT_SYSTEM = "Answer the questions."

# Yi-34B (conv_chatml_direct, MPT style: no newline between turns):
# "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<video>\n{q}<|im_end|><|im_start|>assistant\n"
CHATML_DIRECT = (
    _system_block(CHATML_DIRECT_SYSTEM) + "{{- '<|im_start|>system\\n' + ns.system + '<|im_end|>' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- '<|im_start|>user\\n' -}}"
    + _USER_CONTENT
    + "{{- '<|im_end|>' -}}"
    "{%- else -%}{{- '<|im_start|>assistant\\n' -}}{% generation %}"
    + _ASSISTANT_TEXT
    + "{{- '<|im_end|>' -}}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

QWEN_SYSTEM = "You are a helpful assistant."

# Qwen (conv_qwen, CHATML style: a newline after every <|im_end|>):
# "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<video>\n{q}<|im_end|>\n<|im_start|>assistant\n"
QWEN_1_5 = (
    _system_block(QWEN_SYSTEM) + "{{- '<|im_start|>system\\n' + ns.system + '<|im_end|>\\n' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- '<|im_start|>user\\n' -}}"
    + _USER_CONTENT
    + "{{- '<|im_end|>\\n' -}}"
    "{%- else -%}{{- '<|im_start|>assistant\\n' -}}{% generation %}"
    + _ASSISTANT_TEXT
    + "{{- '<|im_end|>' -}}{% endgeneration %}{{- '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

TEMPLATES = {
    "vicuna_v1": VICUNA_V1,
    "mistral_instruct": MISTRAL_INSTRUCT,
    "chatml_direct": CHATML_DIRECT,
    "qwen_1_5": QWEN_1_5,
}
