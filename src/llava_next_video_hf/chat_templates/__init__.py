"""Chat templates that reproduce the original LLaVA conversation formats.

transformers' own LLaVA-NeXT-Video templates drop the system prompts the models were trained
with; these keep them (a ``system`` message replaces the default). Media placeholders come first
in a turn, each followed by a newline, as the original ``<image>\\n{question}`` layout.

Each template is a ``<name>.jinja`` file beside this module, written one tag per line and indented
for reading. The template string is the file with every line's surrounding whitespace and every line
break removed: the templates put out no text between their tags (a newline they render is written
``'\\n'`` inside a Jinja string), and each line break sits next to a whitespace-control ``-``, so
the file as written renders the same text as the joined string.

The formats (``{q}`` a question, ``{a}`` an answer):

- ``vicuna_v1`` (conv_vicuna_v1): ``<s>{system} USER: <video>\\n{q} ASSISTANT: {a}</s>USER: ...``
- ``mistral_instruct`` (conv_mistral_instruct, LLAMA_2 style, empty default system):
  ``[INST] <video>\\n{q} [/INST] {a} </s>[INST] ...``; a system prompt goes inside the first
  ``[INST]`` as ``<<SYS>>``.
- ``chatml_direct`` (Yi-34B, conv_chatml_direct, MPT style: no newline between turns):
  ``<|im_start|>system\\nAnswer the questions.<|im_end|><|im_start|>user\\n<video>\\n{q}<|im_end|>...``
- ``qwen_1_5`` (conv_qwen, CHATML style: a newline after every ``<|im_end|>``):
  ``<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<video>\\n{q}...``

Templates of LLMs whose tokenizer adds a BOS start with ``bos_token``: vLLM renders chat requests
without special tokens, and transformers adds no second BOS to a text that starts with one.
Assistant turns are wrapped in ``{% generation %}`` for transformers' assistant-token masks.
"""

from __future__ import annotations

from importlib.resources import files

#: default system prompts (each is also written in its template's ``namespace(system=...)``)
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
CHATML_DIRECT_SYSTEM = "Answer the questions."
QWEN_SYSTEM = "You are a helpful assistant."


def load_template(name: str) -> str:
    """The chat template ``<name>.jinja`` of this package as one string (line breaks and indentation removed)."""
    text = files(__name__).joinpath(f"{name}.jinja").read_text(encoding="utf-8")
    return "".join(line.strip() for line in text.splitlines())


VICUNA_V1 = load_template("vicuna_v1")
MISTRAL_INSTRUCT = load_template("mistral_instruct")
CHATML_DIRECT = load_template("chatml_direct")
QWEN_1_5 = load_template("qwen_1_5")

#: the templates by the name of the original conversation format
TEMPLATES = {
    "vicuna_v1": VICUNA_V1,
    "mistral_instruct": MISTRAL_INSTRUCT,
    "chatml_direct": CHATML_DIRECT,
    "qwen_1_5": QWEN_1_5,
}
