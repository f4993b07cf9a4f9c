"""Video decoding and frame sampling: seek to the sampled frames, never decode the whole clip.

:func:`load_video` turns a video (path, URL, bytes, file object, array, tensor or list of
frames) into ``uint8`` frames ``(T, H, W, 3)`` plus a :class:`VideoMetadata`. The frames to
keep are chosen by :func:`sample_indices`, the single implementation of the sampling rules
(the original LLaVA-NeXT ones):

* ``num_frames=N``: ``np.linspace(0, total - 1, N, dtype=int)`` (first and last frame
  included). A clip with fewer than ``N`` frames yields all of its frames, each once (no
  repeats); ``metadata.requested_num_frames`` keeps ``N``.
* ``fps=F``: one frame every ``round(source_fps / F)`` frames starting at frame 0; if that
  gives more than ``max_frames`` frames, ``np.linspace(0, total - 1, max_frames, dtype=int)``.
* neither: every frame, or ``linspace`` over ``max_frames`` frames when the clip is longer.
  Without ``max_frames`` a long clip is decoded in full and memory grows with its length
  (bounded by :data:`MAX_OUTPUT_BYTES`).

Encoded videos are decoded with PyAV. Frame ``i`` is the i-th frame a player shows (presentation
order), whatever the timestamps look like (variable frame rates, duplicate timestamps, gaps, a
late first timestamp, concatenated MPEG-TS files whose timestamps restart). The frames are
indexed before anything is decoded:

* mp4/mov streams without frame reordering: the container's sample table (read with the header,
  no pass over the file);
* everything else: one demuxing pass over the packets (no decoding), sorted by presentation time
  within each timestamp segment.

``total_num_frames`` is then an exact count, the samples are spread over the frames that are
really there, and every decoded frame's timestamp is checked against the index. For each sampled
frame the decoder seeks to the keyframe before it and decodes forward only up to it (or decodes
forward from the previous sample when that is cheaper). The samples are split into contiguous
groups, each decoded by its own container on its own thread (PyAV releases the GIL), as many as
the cores allow (``threads=``); tiny requests stay on one thread. Only the sampled frames are
converted to RGB, so memory grows with the number of samples, not with the clip's length.

Frames are rotated as the stream's display matrix says (as FFmpeg-based players and OpenCV show
them; multiples of 90 degrees), and frames after a mid-stream resolution change are scaled to the
stream's first size. Files that cannot be indexed (packets without timestamps) or whose decoded
frames disagree with the index are decoded sequentially instead (frame ``i`` = the i-th frame the
decoder gives), still keeping only the sampled frames; ``metadata.decode_mode``, ``index``,
``fallback_reason``, ``rotation``, ``resized_frames``, ``segments`` and ``threads`` say what was
done. ``decode_mode="sequential"`` gives the same frames as the seek path.

URLs are downloaded into memory within :data:`URL_DEADLINE_S` seconds in total (each read within
:data:`URL_TIMEOUT_S`) and at most :data:`MAX_URL_BYTES` bytes.

Every failure is a :class:`~llava_next_video_hf.errors.VideoLoadError` naming the source and
the problem; PyAV/FFmpeg exceptions never escape, whatever the bytes (every attribute a damaged
stream may leave unset is checked; a last-resort backstop turns anything unforeseen into a
``VideoLoadError`` too, and the fuzz harness in ``llava_next_video_hf.testing.fuzz`` counts those
as escapes). Damaged and cut files:

* a container whose frames fall clearly short of what it declares (its frame count or duration;
  for MPEG-TS, which declares neither, data that ends mid-packet) is refused ("truncated: found
  X of ... declared"); ``allow_truncated=True`` decodes the frames that are there (leaving out the
  last, partial packet), sets ``metadata.truncated``/``truncation`` and warns
  (:class:`~llava_next_video_hf.errors.TruncatedVideoWarning`);
* ``deadline_s=`` bounds the wall time of indexing and decoding (checked on every packet and
  frame);
* :class:`DecodePool` (``isolated``) runs ``load_video`` in worker processes: a decoder that
  crashes (a segfault in FFmpeg) or hangs costs that one job a ``VideoLoadError``
  (:class:`DecoderCrashError`, :class:`DecodeDeadlineError`) and the worker is replaced. ``vllm
  serve`` decodes this way; ``load_video`` itself stays in-process for library users.

The package is split by concept (each module's docstring says more):

* :func:`sample_indices` lives in ``llava_next_video_hf.frame_sampling`` (the model core uses it too);
* ``metadata``: :class:`VideoMetadata`;
* ``sources``: paths, URLs, bytes and file objects, with the byte and download limits;
* ``frames``: videos given as frames, with the pixel and output limits;
* ``stream``, ``index``, ``output``, ``decoder``: reading the header, the presentation-order
  indexes, the result buffer and the (threaded) seeking decoder;
* ``load``: :func:`load_video`;
* ``isolated``: :class:`DecodePool`, decoding in worker processes.

The limits are re-exported here for reading; they are looked up in ``sources`` and ``frames``.
"""

from __future__ import annotations

from ..frame_sampling import sample_indices
from .frames import MAX_OUTPUT_BYTES, MAX_PIXELS
from .isolated import DEFAULT_DECODE_DEADLINE_S, DecodeDeadlineError, DecodePool, DecoderCrashError
from .load import load_video
from .metadata import VideoMetadata
from .sources import MAX_SOURCE_BYTES, MAX_URL_BYTES, URL_DEADLINE_S, URL_TIMEOUT_S

__all__ = [
    "DEFAULT_DECODE_DEADLINE_S",
    "DecodeDeadlineError",
    "DecodePool",
    "DecoderCrashError",
    "MAX_OUTPUT_BYTES",
    "MAX_PIXELS",
    "MAX_SOURCE_BYTES",
    "MAX_URL_BYTES",
    "URL_DEADLINE_S",
    "URL_TIMEOUT_S",
    "VideoMetadata",
    "load_video",
    "sample_indices",
]
