"""vLLM plugin: ``vllm serve <our checkpoint>`` without ``trust_remote_code``.

vLLM loads the ``vllm.general_plugins`` entry point ``llava_next_video_anyres`` (this package's
:func:`register`) in every process it starts: the API server, the engine core, each worker and a
model-inspection subprocess. :func:`register` therefore only fills registries: it is idempotent,
cheap and never touches CUDA; the model module is imported lazily by vLLM when it is needed.
"""

from __future__ import annotations

ARCHITECTURE = "LlavaNextVideoAnyResForConditionalGeneration"
MODEL_CLASS = "llava_next_video_hf.vllm_plugin.model:LlavaNextVideoAnyResForConditionalGeneration"

_registered = False


def register() -> None:
    """Register our config with transformers and our architecture with vLLM (idempotent).

    * ``AutoConfig.register("llava_next_video_anyres", ...)``: every vLLM process reads our
      config.json without ``trust_remote_code``.
    * ``ModelRegistry.register_model(ARCHITECTURE, "module:Class")``: lazy, so registering does not
      import the model (nor initialise CUDA).
    * Nothing for the maximum model length: the config keeps the trained context in
      ``max_position_embeddings`` and the factor in ``rope_parameters``, so vLLM's own rule
      (their product) gives the checkpoint's ``context_length`` as the default ``max_model_len``.
    * Our video loader (``video_loader``): requests for this model decode with
      ``video_io.load_video``, bounded by the frames that fit ``max_model_len``.
    * Our media connector (``media_connector``), which ``llava-next-video serve`` selects: vLLM's
      own, plus clear refusals of local files and internal URLs a network-facing server must not read.
    """
    global _registered
    if _registered:
        return
    from transformers import AutoConfig
    from vllm import ModelRegistry

    from ..configuration import LlavaNextVideoAnyResConfig

    AutoConfig.register(LlavaNextVideoAnyResConfig.model_type, LlavaNextVideoAnyResConfig, exist_ok=True)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    from .video_loader import register_video_loader

    register_video_loader()
    from .media_connector import register_media_connector

    register_media_connector()
    _registered = True


__all__ = ["ARCHITECTURE", "MODEL_CLASS", "register"]
