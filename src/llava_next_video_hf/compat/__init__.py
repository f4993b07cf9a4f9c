"""Reading llava-hf and lmms-lab checkpoints' settings: their config.json in our terms, their weight
names at load time, and the tokenizer. The layer between ``configuration`` and the model
(docs/ARCHITECTURE.md): it imports the config and the token math, and nothing above them.

* [`config_from_llava_hf`] / [`config_from_lmms_lab`]: our [`LlavaNextVideoAnyResConfig`] for a
  transformers ``LlavaNextVideo``/``LlavaNext`` config dict or an original LLaVA-NeXT one, with the
  user's [`Settings`] on top (frames, RoPE factor, pooling). [`linear_rope_factor`] finds a linear
  RoPE factor wherever a text config dict keeps it.
* [`register`] (run when the package registers with transformers): ``from_pretrained`` of our config
  translates a llava-hf ``config.json`` ([`config_dict_from_llava_hf`], through the config's
  ``FOREIGN_CONFIG_READERS`` table), and ``from_pretrained`` of our model reads llava-hf weight names
  ([`register_key_mapping`]).
"""

from .llava_hf import (
    LLAVA_HF_RULES,
    Rule,
    config_dict_from_llava_hf,
    config_from_llava_hf,
    config_from_llava_hf_folder,
    register,
    register_key_mapping,
)
from .lmms_lab import LMMS_LAB_TEXT, config_from_lmms_lab
from .settings import (
    ARCHITECTURE,
    PAPER_VIDEO_SETTINGS,
    Settings,
    build_config,
    linear_rope_factor,
    load_tokenizer,
    name_list,
    quiet_transformers,
)

__all__ = [
    "ARCHITECTURE",
    "LLAVA_HF_RULES",
    "LMMS_LAB_TEXT",
    "PAPER_VIDEO_SETTINGS",
    "Rule",
    "Settings",
    "build_config",
    "config_dict_from_llava_hf",
    "config_from_llava_hf",
    "config_from_llava_hf_folder",
    "config_from_lmms_lab",
    "linear_rope_factor",
    "load_tokenizer",
    "name_list",
    "quiet_transformers",
    "register",
    "register_key_mapping",
]
