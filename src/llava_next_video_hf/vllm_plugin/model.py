"""LLaVA-NeXT-Video (AnyRes) as a vLLM model.

Four small classes, as in vLLM's own ``model_executor/models/llava_next_video.py``: processing info,
dummy inputs and the multimodal processor live in [`processing`](processing.py); here is
[`LlavaNextVideoAnyResForConditionalGeneration`]: vLLM's CLIP/SigLIP tower and language model
(tensor parallelism, quantization, paged attention), our projector, the shared token layout
(``layout.VisualTokenLayout``: pooling and newline policy) and vLLM's encoder CUDA-graph protocol for videos.

Video data flow (shapes for the 7B: grid 24, stride 2, D 4096)::

    pixel_values_videos (sum_i T_i, 3, 336, 336)   one buffer of frames, video_num_frames (B,) on CPU
      -> vision tower, drop CLS          (N, 576, Dv)
      -> pool + projector (either order) (N, 144, D)
      -> per-frame newlines              (N, tokens_per_frame, D)   fixed per frame: graph friendly
      -> split per video, + one newline per video under ``one_token``  -> (num_video_tokens(T_i), D)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import get_pp_group
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.models.clip import CLIPVisionModel
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsEncoderCudaGraph,
    SupportsMultiModal,
    SupportsPP,
)
from vllm.model_executor.models.siglip import SiglipVisionModel
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    StageMissingLayer,
    WeightsMapper,
    get_layer_index,
    init_vllm_registered_model,
    maybe_prefix,
    no_init_weights,
)
from vllm.model_executor.models.vision import run_dp_sharded_vision_model
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from ..configuration import LlavaNextVideoAnyResConfig
from ..layout import VisualTokenLayout
from . import video_loader
from .processing import (
    LlavaNextVideoAnyResDummyInputsBuilder,
    LlavaNextVideoAnyResMultiModalProcessor,
    LlavaNextVideoAnyResProcessingInfo,
    tokens_per_frame,
)


def init_vision_tower(
    config: LlavaNextVideoAnyResConfig, quant_config: QuantizationConfig | None, prefix: str
) -> CLIPVisionModel | SiglipVisionModel:
    """vLLM's CLIP/SigLIP tower, built only up to the deepest ``vision_feature_layer`` (no post norm)."""
    vision, layers = config.vision_config, config.vision_feature_layer
    total = vision.num_hidden_layers
    depth = max(get_layer_index(i, total) for i in ([layers] if isinstance(layers, int) else layers))
    if "siglip" not in vision.model_type and "clip" not in vision.model_type:
        raise ValueError(f"unsupported vision tower {vision.model_type!r}: CLIP or SigLIP vision models only")
    tower_cls = SiglipVisionModel if "siglip" in vision.model_type else CLIPVisionModel
    return tower_cls(
        vision,
        quant_config=quant_config,
        num_hidden_layers_override=depth,
        require_post_norm=False,
        prefix=prefix,
    )


class LlavaNextVideoAnyResProjector(nn.Module):
    """Linear-act-Linear, names ``linear_1``/``linear_2`` as in HF: tensor-parallel (column then row),
    or replicated with ``disable_tp`` (``--mm-encoder-tp-mode data``: each rank projects its own items)."""

    def __init__(
        self,
        config: LlavaNextVideoAnyResConfig,
        quant_config: QuantizationConfig | None,
        prefix: str,
        disable_tp: bool = False,
    ):
        super().__init__()
        layers = config.vision_feature_layer
        in_dim = config.vision_config.hidden_size * (1 if isinstance(layers, int) else len(layers))
        dim, bias = config.text_config.hidden_size, config.multimodal_projector_bias
        self.linear_1 = ColumnParallelLinear(
            in_dim,
            dim,
            bias=bias,
            quant_config=quant_config,
            prefix=f"{prefix}.linear_1",
            disable_tp=disable_tp,
        )
        self.act = get_act_fn(config.projector_hidden_act)
        self.linear_2 = RowParallelLinear(
            dim, dim, bias=bias, quant_config=quant_config, prefix=f"{prefix}.linear_2", disable_tp=disable_tp
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.linear_1(features)
        hidden, _ = self.linear_2(self.act(hidden))
        return hidden


@MULTIMODAL_REGISTRY.register_processor(
    LlavaNextVideoAnyResMultiModalProcessor,
    info=LlavaNextVideoAnyResProcessingInfo,
    dummy_inputs=LlavaNextVideoAnyResDummyInputsBuilder,
)
class LlavaNextVideoAnyResForConditionalGeneration(
    VisualTokenLayout, nn.Module, SupportsMultiModal, SupportsPP, SupportsEncoderCudaGraph
):
    """LLaVA-NeXT-Video with AnyRes images, frame-as-tile videos and scaled RoPE, for vLLM.

    vLLM's own tower and language model; the token layout (pooling, newlines, AnyRes unpad) is
    [`VisualTokenLayout`], the very code of the transformers model.

    Weights load from our checkpoints (llava-hf names: ``model.vision_tower.*``,
    ``model.multi_modal_projector.*``, ``model.image_newline``, ``model.language_model.*``,
    ``lm_head.*``). Only the tower layers up to ``vision_feature_layer`` are built.

    Parallelism: under tensor parallelism the tower and projector are split like the language model
    (``--mm-encoder-tp-mode weights``, the default) or, with ``--mm-encoder-tp-mode data``, both are
    replicated and each rank runs the tower on its share of the frames/crops (gathered before the
    projector); vLLM's encoder CUDA-graph manager then hands each rank its own videos. Under
    pipeline parallelism only the first stage, which embeds the prompt, builds and loads the tower
    and projector; later stages hold placeholders and answer vLLM's encoder profiling with zero
    embeddings of the right shapes.
    """

    supports_encoder_tp_data = True

    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }
    hf_to_vllm_mapper = WeightsMapper(
        # transformers 5 saves towers flat (``vision_tower.encoder...``); older llava-hf files nest them
        orig_to_new_regex={
            re.compile(r"^model\.vision_tower\.(vision_model\.)?"): "vision_tower.vision_model."
        },
        orig_to_new_prefix={
            "model.language_model.": "language_model.model.",
            "model.multi_modal_projector.": "multi_modal_projector.",
            "model.image_newline": "image_newline",
            "lm_head.": "language_model.lm_head.",
        },
    )

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return "<image>"
        if modality.startswith("video"):
            return "<video>"
        raise ValueError(f"Only image and video inputs are supported, got {modality!r}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: LlavaNextVideoAnyResConfig = vllm_config.model_config.hf_config
        quant_config = vllm_config.quant_config
        self.config = config
        self.vllm_config = vllm_config
        layers = config.vision_feature_layer
        self.select_layers = None if isinstance(layers, int) else list(layers)
        self.tokens_per_frame = tokens_per_frame(config)
        self.configure_mm_token_handling(
            vocab_size=config.text_config.vocab_size,
            mm_token_ids=[config.image_token_id, config.video_token_id],
        )
        mm_config = vllm_config.model_config.multimodal_config
        self.encoder_data_parallel = mm_config is not None and mm_config.mm_encoder_tp_mode == "data"
        self.runs_vision = get_pp_group().is_first_rank  # the stage that embeds the prompt
        with self._mark_tower_model(vllm_config, {"image", "video"}):
            with self._vision_stage_only():
                self.vision_tower = init_vision_tower(
                    config, quant_config, maybe_prefix(prefix, "vision_tower")
                )
                self.multi_modal_projector = LlavaNextVideoAnyResProjector(
                    config,
                    quant_config,
                    maybe_prefix(prefix, "multi_modal_projector"),
                    disable_tp=self.encoder_data_parallel,
                )
            self.image_newline = nn.Parameter(torch.empty(config.text_config.hidden_size))  # (D,), tiny
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.text_config,
                prefix=maybe_prefix(prefix, "language_model"),
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def _vision_stage_only(self) -> Any:
        """Build normally on the first pipeline stage; elsewhere on ``meta``, as vLLM placeholders
        (``StageMissingLayer``: no memory, no weights loaded, an error if ever called)."""
        if self.runs_vision:
            return contextlib.nullcontext()
        return no_init_weights(self, lambda module: StageMissingLayer("vision_tower", module))

    # ---- vision -------------------------------------------------------------------------------
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> selected tower features (N, L, Dv * layers), CLS kept when the tower has one.

        Under ``--mm-encoder-tp-mode data`` each tensor-parallel rank runs its slice of the N
        crops/frames and the slices are gathered: (N, L, Dv) on every rank, as with one worker.
        """
        pixels = pixel_values.to(self.vision_tower.dtype)
        if self.encoder_data_parallel:
            return run_dp_sharded_vision_model(pixels, self._tower)
        return self._tower(pixels)

    def _tower(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_tower(pixels, select_layers=self.select_layers, feature_select_strategy=None)

    def encode_frames(self, frames: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """[`VisualTokenLayout.encode_frames`]; zeros of its shape on stages without the tower."""
        if self.runs_vision:
            return super().encode_frames(frames, features)
        dim = self.config.text_config.hidden_size
        return frames.new_zeros(frames.shape[0], self.tokens_per_frame, dim)

    def embed_images(
        self, crops: torch.Tensor, image_sizes: list[tuple[int, int]], features: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """[`VisualTokenLayout.embed_images`]; zeros of its shapes on stages without the tower."""
        if self.runs_vision:
            return super().embed_images(crops, image_sizes, features)
        dim = self.config.text_config.hidden_size
        return [crops.new_zeros(self.config.num_image_tokens(h, w), dim) for h, w in image_sizes]

    def embed_videos(self, frames: torch.Tensor, num_frames: Sequence[int]) -> list[torch.Tensor]:
        """One buffer of frames (sum T_i, 3, S, S) + frames per video -> per-video embeddings."""
        return self.split_videos(self.encode_frames(frames), num_frames)

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        """Embeddings of the images and/or videos in ``kwargs``, one (tokens, D) tensor per item.

        vLLM batches items of one modality per call, in prompt order.
        """
        out: list[torch.Tensor] = []
        crops = kwargs.get("pixel_values")
        if crops is not None:
            sizes = [(int(h), int(w)) for h, w in _cpu_long(kwargs["image_sizes"]).tolist()]
            out.extend(self.embed_images(_frames_buffer(crops), sizes))
        frames = kwargs.get("pixel_values_videos")
        if frames is not None:
            counts = [int(n) for n in _cpu_long(kwargs["video_num_frames"]).tolist()]
            out.extend(self.embed_videos(_frames_buffer(frames), counts))
        return out

    # ---- language model -----------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        """Language model over the merged embeddings (vLLM embeds the prompt before calling this)."""
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(
            input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds
        )

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)

    # ---- SupportsEncoderCudaGraph (videos) ----------------------------------------------------
    # One frames buffer per token budget: a budget of B tokens holds B // tokens_per_frame frames,
    # zero-padded on replay. Images (data-dependent unpadding) stay eager.

    def get_encoder_cudagraph_config(self) -> Any:
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderCudaGraphConfig

        return EncoderCudaGraphConfig(
            modalities=["video"],
            buffer_keys=["pixel_values_videos"],
            out_hidden_size=self.config.text_config.hidden_size,
            max_frames_per_video=self.get_max_frames_per_video(),
        )

    def get_input_modality(self, mm_kwargs: dict[str, Any]) -> str:
        return "video" if "pixel_values_videos" in mm_kwargs else "image"

    def get_max_frames_per_video(self) -> int:
        """Frames of the longest video a request may carry (the server's limit from ``max_model_len``)."""
        return max(1, video_loader.frames_that_fit(self.vllm_config.model_config.max_model_len, self.config))

    def get_encoder_cudagraph_budget_range(self, vllm_config: VllmConfig) -> tuple[int, int]:
        max_budget = min(
            vllm_config.scheduler_config.max_num_batched_tokens, vllm_config.model_config.max_model_len
        )
        return self.tokens_per_frame, max(max_budget, self.tokens_per_frame)

    def get_encoder_cudagraph_item_specs(self, mm_kwargs: dict[str, Any]) -> list[Any]:
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderItemSpec

        return [
            EncoderItemSpec(input_size=n, output_tokens=self.config.num_video_tokens(n))
            for n in _counts(mm_kwargs["video_num_frames"])
        ]

    def select_encoder_cudagraph_items(self, mm_kwargs: dict[str, Any], indices: list[int]) -> dict[str, Any]:
        frames, counts = mm_kwargs["pixel_values_videos"], _counts(mm_kwargs["video_num_frames"])
        starts = np.cumsum([0, *counts]).tolist()
        picked = [frames[starts[i] : starts[i + 1]] for i in indices]
        return {
            "pixel_values_videos": torch.cat(picked) if picked else frames[:0],
            "video_num_frames": torch.tensor([counts[i] for i in indices], dtype=torch.int64),
        }

    def prepare_encoder_cudagraph_capture_inputs(
        self,
        token_budget: int,
        max_batch_size: int,
        max_frames_per_batch: int,
        device: torch.device,
        dtype: torch.dtype,
        path: str = "default",
        axis_keys: tuple[Hashable, ...] | None = None,
    ) -> Any:
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderCudaGraphCaptureInputs

        size = self.config.vision_config.image_size
        frames = max(token_budget // self.tokens_per_frame, 1)
        buffer = torch.zeros(frames, 3, size, size, device=device, dtype=dtype)
        return EncoderCudaGraphCaptureInputs(values={"pixel_values_videos": buffer})

    def prepare_encoder_cudagraph_replay_buffers(
        self,
        mm_kwargs: dict[str, Any],
        max_batch_size: int,
        max_frames_per_batch: int,
        path: str = "default",
    ) -> Any:
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderCudaGraphReplayBuffers

        return EncoderCudaGraphReplayBuffers(values={"pixel_values_videos": mm_kwargs["pixel_values_videos"]})

    def encoder_cudagraph_forward(
        self, inputs: dict[str, torch.Tensor], path: str = "default"
    ) -> torch.Tensor:
        """The captured path: frames buffer (F, 3, S, S) -> (F * tokens_per_frame, D)."""
        return self._encode_local_frames(inputs["pixel_values_videos"])

    def encoder_eager_forward(self, mm_kwargs: dict[str, Any], path: str = "default") -> torch.Tensor:
        return self._encode_local_frames(_frames_buffer(mm_kwargs["pixel_values_videos"]))

    def _encode_local_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(F, 3, S, S) -> (F * tokens_per_frame, D) with this rank's tower only: under
        ``--mm-encoder-tp-mode data`` vLLM's encoder CUDA-graph manager already gives each rank its
        own videos and gathers the outputs, so splitting the frames again across ranks would mix
        different ranks' inputs."""
        features = self._tower(frames.to(self.vision_tower.dtype)) if self.runs_vision else None
        return self.encode_frames(frames, features).flatten(0, 1)

    def postprocess_encoder_output(
        self,
        outputs: dict[str, torch.Tensor],
        indices: list[int],
        per_item_out_tokens: list[int],
        dest: dict[int, torch.Tensor] | list[torch.Tensor | None],
        clone: bool = False,
        batch_mm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Slice the (padded) frame tokens per video; ``one_token`` appends the video's newline."""
        assert batch_mm_kwargs is not None
        counts = _counts(batch_mm_kwargs["video_num_frames"])
        per_frame = outputs["default"].unflatten(0, (-1, self.tokens_per_frame))
        used = per_frame[: sum(counts)]
        for idx, video in zip(indices, self.split_videos(used, counts), strict=True):
            dest[idx] = video.clone() if clone else video


def _cpu_long(x: object) -> torch.Tensor:
    """A host tensor of sizes/counts (they are kept on the CPU by the field config: no sync)."""
    if isinstance(x, torch.Tensor):
        return x.to("cpu", torch.int64)
    return torch.as_tensor(np.asarray(x), dtype=torch.int64)


def _counts(x: object) -> list[int]:
    return [int(n) for n in _cpu_long(x).reshape(-1).tolist()]


def _frames_buffer(x: object) -> torch.Tensor:
    """The flat frames/crops buffer (N, 3, S, S), whatever way vLLM batched it."""
    if isinstance(x, torch.Tensor):
        return x if x.dim() == 4 else x.flatten(0, x.dim() - 4)
    return torch.cat([_frames_buffer(t) for t in x])  # type: ignore[union-attr]


__all__ = [
    "LlavaNextVideoAnyResDummyInputsBuilder",
    "LlavaNextVideoAnyResForConditionalGeneration",
    "LlavaNextVideoAnyResMultiModalProcessor",
    "LlavaNextVideoAnyResProcessingInfo",
    "tokens_per_frame",
]
