"""LLaVA-NeXT-Video for transformers and vLLM."""
