"""Limits on decoded media, shared by video decoding (``video_io``) and image loading
(``image_processing``). Part of the model core that Hub exports ship as remote code."""

#: Largest frame or image (width * height) that will be decoded; guards against decompression bombs.
MAX_PIXELS = 8192 * 8192

__all__ = ["MAX_PIXELS"]
