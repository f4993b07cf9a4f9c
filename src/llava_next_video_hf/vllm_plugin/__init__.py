"""vLLM plugin entry point."""


def register() -> None:
    """Register the model with vLLM (filled by the vLLM issue)."""
