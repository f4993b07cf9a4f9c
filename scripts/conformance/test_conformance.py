"""transformers' common model tests against our classes and transformers' LLaVA-NeXT-Video, side by side.

This module is copied by ``scripts/conformance/run.py`` into ``tests/models/llava_next_video_anyres/``
of the unpacked transformers source distribution (so the relative imports below reach transformers'
``tests/test_modeling_common.py``); it is not collected by our own test suite.

Every suite runs twice: the ``Transformers*`` classes on transformers'
``LlavaNextVideoModel``/``LlavaNextVideoForConditionalGeneration``, the ``AnyRes*`` classes on ours,
with the same tiny config (ours is derived from transformers' by the adapter) and the same inputs.
"""

from __future__ import annotations

import importlib.util
import sys
import unittest
from pathlib import Path

import torch
from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration, LlavaNextVideoModel
from transformers.testing_utils import torch_device

from ...generation.test_utils import GenerationTesterMixin
from ...test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor
from . import adapter

adapter.register_names()

# Tiny model: CLIP 16 px / patch 2 -> an 8x8 grid; AnyRes canvas 32x32 -> 4 tiles + the base view.
IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, FIRST_TEXT_ID = 1, 2, 3
NUM_PATCHES, NUM_FRAMES, TEXT_TOKENS = 5, 4, 7
# LLaVA-NeXT image tokens of a 16x16 image: base view 8*8 + the 2x2-tile canvas (16x16 features,
# nothing unpadded for a square image) with a newline per row: 64 + 16 * 17
IMAGE_TOKENS = 64 + 16 * 17
# video: 2x2 average pooling of each frame's 8x8 grid -> 16 tokens per frame, no newline
VIDEO_TOKENS = NUM_FRAMES * 16


class LlavaNextVideoTinyTester:
    """Config and inputs shared by both model families (the ``model_tester`` of the mixins)."""

    def __init__(self, parent: unittest.TestCase, anyres: bool):
        self.parent = parent
        self.anyres = anyres
        self.batch_size = 3
        self.is_training = True
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.hidden_size = 32
        self.vocab_size = 99
        self.image_size = 16
        self.patch_size = 2
        self.seq_length = TEXT_TOKENS + IMAGE_TOKENS + VIDEO_TOKENS
        self.encoder_seq_length = self.seq_length
        self.text_config = {
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_attention_heads,
            "intermediate_size": 37,
            "hidden_act": "gelu",
            "max_position_embeddings": 1024,
            "initializer_range": 0.02,
            "pad_token_id": 0,
            "bos_token_id": 0,
            "eos_token_id": 0,
        }
        self.vision_config = {
            "model_type": "clip_vision_model",
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": 3,
            "hidden_size": 32,
            "projection_dim": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "dropout": 0.1,
            "attention_dropout": 0.1,
            "initializer_range": 0.02,
        }

    def get_config(self):
        config = LlavaNextVideoConfig(
            text_config=dict(self.text_config),
            vision_config=dict(self.vision_config),
            image_token_index=IMAGE_TOKEN_ID,
            video_token_index=VIDEO_TOKEN_ID,
            projector_hidden_act="gelu",
            vision_feature_select_strategy="default",
            vision_feature_layer=-1,
            image_grid_pinpoints=[[32, 32]],
        )
        return adapter.anyres_config_from(config) if self.anyres else config

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        size = self.image_size
        pixel_values = floats_tensor([self.batch_size, NUM_PATCHES, 3, size, size])
        pixel_values_videos = floats_tensor([self.batch_size, NUM_FRAMES, 3, size, size])
        input_ids = (
            ids_tensor([self.batch_size, self.seq_length], self.vocab_size - FIRST_TEXT_ID) + FIRST_TEXT_ID
        )
        input_ids[:, 1 : 1 + IMAGE_TOKENS] = IMAGE_TOKEN_ID
        input_ids[:, 1 + IMAGE_TOKENS : 1 + IMAGE_TOKENS + VIDEO_TOKENS] = VIDEO_TOKEN_ID
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": pixel_values,
            "image_sizes": torch.tensor([[size, size]] * self.batch_size),
            "pixel_values_videos": pixel_values_videos,
        }
        return config, inputs


class TransformersLlavaNextVideoTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """transformers' own classes (the reference)."""

    all_model_classes = (LlavaNextVideoModel, LlavaNextVideoForConditionalGeneration)
    anyres = False
    _is_composite = True

    def setUp(self):
        self.model_tester = LlavaNextVideoTinyTester(self, anyres=self.anyres)


class AnyResLlavaNextVideoTest(TransformersLlavaNextVideoTest):
    """Ours, same config and inputs."""

    all_model_classes = (
        adapter.LlavaNextVideoAnyResModel,
        adapter.LlavaNextVideoAnyResForConditionalGeneration,
    )
    anyres = True


# ---- transformers' own LLaVA-NeXT-Video model tests, when the test tree has them ----------------
_MODEL_TESTS = Path(__file__).resolve().parents[1] / "llava_next_video" / "test_modeling_llava_next_video.py"


def _load(name: str, swap: bool):
    spec = importlib.util.spec_from_file_location(name, _MODEL_TESTS)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "tests.models.llava_next_video"
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if swap:
        adapter.swap_into(module)
    return module


if _MODEL_TESTS.is_file():
    for _prefix, _swap in (("Transformers", False), ("AnyRes", True)):
        _module = _load(f"tests.models.llava_next_video.conformance_{_prefix.lower()}", _swap)
        for _name, _cls in vars(_module).items():
            if isinstance(_cls, type) and issubclass(_cls, ModelTesterMixin) and _cls is not ModelTesterMixin:
                globals()[f"{_prefix}_{_name}"] = _cls
    del _module, _name, _cls, _prefix, _swap

_ = torch_device  # the mixins read it from transformers.testing_utils
