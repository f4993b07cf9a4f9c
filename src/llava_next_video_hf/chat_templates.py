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

# Vicuna v1 (conv_vicuna_v1): "{system} USER: <video>\n{q} ASSISTANT: {a}</s>USER: ..."
VICUNA_V1 = (
    "{%- set ns = namespace(system='" + VICUNA_V1_SYSTEM.replace("'", "\\'") + "') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set ns.system = messages[0]['content'] -%}"
    "{%- else -%}{%- set ns.system = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join(' ') -%}{%- endif -%}"
    "{%- set messages = messages[1:] -%}{%- endif -%}"
    "{{- ns.system + ' ' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for c in message['content'] -%}"
    "{%- if c['type'] == 'image' -%}{{- '<image>\\n' -}}{%- elif c['type'] == 'video' -%}{{- '<video>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{{- message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -}}"
    "{%- endif -%}{{- ' ' -}}"
    "{%- else -%}{{- 'ASSISTANT: ' -}}{% generation %}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{{- message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -}}"
    "{%- endif -%}{{- '</s>' -}}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

TEMPLATES = {"vicuna_v1": VICUNA_V1}
