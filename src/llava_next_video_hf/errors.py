"""The package's exception family: every user-facing failure is one of these."""

from __future__ import annotations


class LlavaNextVideoError(Exception):
    """Base class of every error raised on purpose by llava_next_video_hf."""


class VideoLoadError(LlavaNextVideoError, ValueError):
    """A video could not be read or sampled (missing, empty, truncated, not a video, no frames)."""


class TruncatedVideoWarning(UserWarning):
    """A video's container declares more than was found; only the frames found were decoded."""


class ImageLoadError(LlavaNextVideoError, ValueError):
    """An image could not be read (missing, corrupt, not an image, over the pixel limit)."""


class ContextLengthError(LlavaNextVideoError, ValueError):
    """The prompt plus its visual tokens do not fit the model's context at its RoPE factor."""


class PlaceholderMismatchError(LlavaNextVideoError, ValueError):
    """The number of ``<image>``/``<video>`` placeholders does not match the media given."""


class ConversionError(LlavaNextVideoError, ValueError):
    """A checkpoint could not be converted (unknown layout, missing/extra tensors, bad shapes)."""


class UnsupportedModelError(LlavaNextVideoError, TypeError):
    """A patch or export was asked of a model class it does not know."""
