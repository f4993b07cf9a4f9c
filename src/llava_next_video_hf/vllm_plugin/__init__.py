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
    * The maximum model length rule: our config already stretches ``max_position_embeddings`` by
      the linear RoPE factor, which vLLM would apply a second time; the checkpoint's
      ``context_length`` becomes vLLM's default ``max_model_len``.
    * Our video loader (``video_loader``): requests for this model decode with
      ``video_io.load_video``, bounded by the frames that fit ``max_model_len``.
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
    _register_max_model_len(LlavaNextVideoAnyResConfig.model_type)
    from .video_loader import register_video_loader

    register_video_loader()
    _registered = True


def _register_max_model_len(model_type: str) -> None:
    """Make vLLM's default ``max_model_len`` the checkpoint's ``context_length``.

    vLLM derives the length from ``max_position_embeddings`` and multiplies it by the linear RoPE
    factor; our config's ``max_position_embeddings`` already includes that factor
    (``original_max_position_embeddings * factor``), so the convertor reports the unscaled length.
    """
    from vllm.transformers_utils import model_arch_config_convertor as convertors

    base = convertors.ModelArchConfigConvertorBase

    class LlavaNextVideoAnyResArchConfigConvertor(base):  # type: ignore[misc, valid-type]
        def derive_max_model_len_and_key(self) -> tuple[float, str | None]:
            length, key = super().derive_max_model_len_and_key()
            params = getattr(self.hf_text_config, "rope_parameters", None) or {}
            factor = params.get("factor") if params.get("rope_type") == "linear" else None
            if key == "max_position_embeddings" and factor:
                return length / float(factor), "max_position_embeddings / linear RoPE factor"
            return length, key

    convertors.MODEL_ARCH_CONFIG_CONVERTORS.setdefault(model_type, LlavaNextVideoAnyResArchConfigConvertor)


__all__ = ["ARCHITECTURE", "MODEL_CLASS", "register"]
