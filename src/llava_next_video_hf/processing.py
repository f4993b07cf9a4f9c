"""Processors of LLaVA-NeXT-Video (AnyRes): images, videos and the text side (token expansion).

Three classes, all usable without torchvision:

* [`LlavaNextVideoAnyResImageProcessor`]: AnyRes images, bit-for-bit transformers' LLaVA-NeXT
  image processor (PIL backend, the one transformers itself falls back to without torchvision).
* [`LlavaNextVideoAnyResVideoProcessor`]: frames -> shortest side 336 (bicubic, antialias) ->
  center crop 336 -> CLIP normalisation, by default bit-equal to the original's per-frame PIL
  ``CLIPImageProcessor`` (a torch path is an option), with the original frame sampling rules
  of [`video_io`](video_io.py) (``linspace`` including the last frame, fps with a frame budget).
* [`LlavaNextVideoAnyResProcessor`]: expands every ``<image>``/``<video>`` placeholder to exactly
  the number of features the model produces (the arithmetic lives in [`rope`](rope.py) only),
  refuses prompts longer than the model's context (never truncates) and says what would fit;
  tokenizes like the original LLaVA code by default ([`tokenize_like_original`]).

Notes on transformers 5.19 machinery (why the classes look the way they do):

* ``BaseVideoProcessor`` inherits ``TorchvisionBackend`` and is marked as requiring torchvision;
  ``transformers.AutoVideoProcessor`` is a dummy placeholder without torchvision. The real class
  lives in ``transformers.models.auto.video_processing_auto`` and is what ``ProcessorMixin`` uses
  to load a ``video_processor`` attribute. Its ``from_pretrained`` reads ``video_processor_type``
  from ``processor_config.json`` (nested) or ``video_preprocessor_config.json`` and resolves the
  name through the runtime registry for the requested backend (default key ``"torchvision"``, a
  plain dict key: no torchvision import happens). So the video processor subclasses the
  torchvision-free ``VideoProcessorMixin`` (load/save/to_dict/from_dict) and is registered under
  the ``"torchvision"`` key (and ``"torch"``/``"pil"`` for callers that ask for those).
* ``ProcessorMixin.check_argument_for_proper_class`` looks up ``transformers.VideoProcessorMixin``,
  which is not exported, then walks ``transformers.VIDEO_PROCESSOR_MAPPING`` (a dummy without
  torchvision: AttributeError) and registries whose values are backend dicts (AttributeError
  ``'dict' object has no attribute '__name__'``): the processor checks its video processor itself.
* ``ProcessorMixin.apply_chat_template`` does not load videos: it collects the ``video``/``url``/
  ``path`` values of ``{"type": "video"}`` blocks (and ``image``/``url``/``path``/``base64`` of image
  blocks), one list per conversation, renders the template and calls ``self(text=..., images=...,
  videos=..., **processor_kwargs)``. Our ``__call__`` flattens those lists and decodes files with
  ``video_io.load_video`` (never transformers' torchcodec loader).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PILImageResampling,
    SizeDict,
    load_image,
)
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, TextKwargs, VideosKwargs
from transformers.utils import logging
from transformers.video_processing_utils import VideoProcessorMixin

from . import rope
from .configuration import DEFAULT_GRID_PINPOINTS
from .errors import ContextLengthError, ImageLoadError, PlaceholderMismatchError, VideoLoadError

logger = logging.get_logger(__name__)

DEFAULT_IMAGE_SIZE = 336
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

__all__ = [
    "LlavaNextVideoAnyResImageProcessor",
    "LlavaNextVideoAnyResProcessor",
    "LlavaNextVideoAnyResVideoProcessor",
    "register_auto_classes",
]


# ============================================================================ images


class LlavaNextVideoAnyResImageProcessor(LlavaNextImageProcessorPil):
    r"""AnyRes image processor: transformers' ``LlavaNextImageProcessorPil`` with 336 px defaults.

    Each image becomes ``1 + tiles`` crops of 336x336 (the resized base view first, then the tiles
    of the best ``image_grid_pinpoints`` canvas), CLIP-normalised.

    Output: ``pixel_values`` (num_images, max_patches, 3, 336, 336), zero-padded over patches,
    and ``image_sizes`` (num_images, 2) as (height, width) of the original images.
    """

    size = {"shortest_edge": DEFAULT_IMAGE_SIZE}
    crop_size = {"height": DEFAULT_IMAGE_SIZE, "width": DEFAULT_IMAGE_SIZE}
    image_grid_pinpoints = [list(p) for p in DEFAULT_GRID_PINPOINTS]


# ============================================================================ videos


class LlavaNextVideoAnyResVideoProcessorKwargs(VideosKwargs, total=False):
    r"""Video kwargs plus ``max_frames`` (the frame budget), ``source_fps`` (rate of array inputs) and
    ``resize_backend`` (``"pil"`` or ``"torch"``)."""

    max_frames: int | None
    source_fps: float | None
    resize_backend: str | None


_INTERPOLATION = {
    PILImageResampling.NEAREST: "nearest",
    PILImageResampling.BILINEAR: "bilinear",
    PILImageResampling.BICUBIC: "bicubic",
}
_ENCODED_TYPES = (str, bytes, bytearray, memoryview, os.PathLike)


def _is_encoded(video: Any) -> bool:
    """Whether ``video`` is something to decode (path, URL, bytes, file object) rather than frames."""
    return isinstance(video, _ENCODED_TYPES) or hasattr(video, "read")


def _is_frame(x: Any) -> bool:
    return isinstance(x, PIL.Image.Image) or (isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim in (2, 3))


def flatten_videos(videos: Any) -> list[Any]:
    """Flatten any nesting of videos (per prompt, per conversation, ...) into a flat list of videos.

    A video is an encoded source (path/URL/bytes/file object), a 4D array/tensor, a 3D array/tensor
    or PIL image (a one-frame video), or a list of frames (PIL images or 3D arrays). A 5D
    array/tensor is a batch of equally long videos. Empty lists contribute nothing.
    """
    if videos is None:
        return []
    if _is_encoded(videos):
        return [videos]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim == 5:
            return list(videos)
        if videos.ndim in (3, 4):
            return [videos]
        raise ValueError(f"a video array must have 3, 4 or 5 dimensions, got shape {tuple(videos.shape)}")
    if isinstance(videos, PIL.Image.Image):
        return [[videos]]
    if isinstance(videos, (list, tuple)):
        if len(videos) > 0 and all(_is_frame(v) for v in videos):
            return [list(videos)]  # one video given as its frames
        out: list[Any] = []
        for item in videos:
            out.extend(flatten_videos(item))
        return out
    raise TypeError(
        f"unsupported video of type {type(videos).__name__}: expected a path, URL, bytes, file object, "
        "a (T, H, W, 3) array/tensor or a list of frames"
    )


def _to_clip(video: Any, index: int) -> torch.Tensor:
    """Frames of an already decoded video as a (T, C=3, H, W) tensor (dtype kept: uint8 or float)."""
    if isinstance(video, (list, tuple)):
        frames = []
        for f in video:
            if isinstance(f, PIL.Image.Image):
                frames.append(torch.from_numpy(np.array(f if f.mode == "RGB" else f.convert("RGB"))))
            else:
                f = torch.as_tensor(f)
                frames.append(f[..., None] if f.ndim == 2 else f)
        if len({tuple(f.shape) for f in frames}) > 1:
            raise VideoLoadError(f"video {index}: its frames have different shapes")
        clip = torch.stack(frames)
    elif isinstance(video, np.ndarray):
        clip = torch.from_numpy(np.ascontiguousarray(video))
    else:
        clip = video
    if clip.ndim == 3:  # a single frame
        clip = clip[None]
    if clip.ndim != 4:
        raise VideoLoadError(f"video {index}: expected (T, H, W, C) frames, got shape {tuple(clip.shape)}")
    if clip.shape[0] == 0:
        raise VideoLoadError(f"video {index}: has no frames")
    # (T, H, W, C) -> (T, C, H, W); channels-last is what decoders give, so it wins ties.
    if clip.shape[-1] in (1, 3, 4):
        clip = clip.permute(0, 3, 1, 2)
    elif clip.shape[1] not in (1, 3, 4):
        raise VideoLoadError(f"video {index}: cannot find the channel axis in shape {tuple(clip.shape)}")
    if clip.shape[1] == 1:
        clip = clip.expand(-1, 3, -1, -1)
    elif clip.shape[1] == 4:  # RGBA: drop alpha
        clip = clip[:, :3]
    return clip  # may be a view of channels-last memory: the PIL path reads frames from it without a copy


RESIZE_BACKENDS = ("pil", "torch")


def _check_resize_backend(backend: str) -> str:
    if backend not in RESIZE_BACKENDS:
        raise ValueError(f"resize_backend must be one of {RESIZE_BACKENDS}, got {backend!r}")
    return backend


def _resize_output_size(height: int, width: int, size: SizeDict) -> tuple[int, int]:
    """Output (height, width) of transformers' resize (``get_resize_output_image_size`` semantics)."""
    if size.shortest_edge:
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size.shortest_edge, int(size.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    if size.height and size.width:
        return size.height, size.width
    raise ValueError(f"size must have 'shortest_edge' or 'height' and 'width', got {size}")


def _check_frame_args(what: str, num_frames: Any, fps: Any, max_frames: Any) -> None:
    """Refuse a frame setting out of range, naming the argument that was given."""
    for name, value in (("num_frames", num_frames), ("max_frames", max_frames)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral) or value < 1):
            raise VideoLoadError(f"{what}{name} must be an integer >= 1, got {value!r}")
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, Real) or not np.isfinite(fps) or fps <= 0
    ):
        raise VideoLoadError(f"{what}fps must be a finite number > 0, got {fps!r}")


def _meta(metadata: Any, key: str) -> Any:
    """``metadata[key]`` for a dict, a dataclass or transformers' ``VideoMetadata`` (``None`` if absent)."""
    if metadata is None:
        return None
    if isinstance(metadata, dict):
        return metadata.get(key)
    return getattr(metadata, key, None)


def _per_video_metadata(video_metadata: Any, num_videos: int) -> list[Any]:
    """One metadata entry per video (``None`` where none was given)."""
    if video_metadata is None:
        return [None] * num_videos
    metas = list(video_metadata) if isinstance(video_metadata, (list, tuple)) else [video_metadata]
    if len(metas) == 1 and isinstance(metas[0], (list, tuple)):
        metas = list(metas[0])  # one list per prompt, as apply_chat_template nests them
    if len(metas) != num_videos:
        raise ValueError(
            f"video_metadata has {len(metas)} entries for {num_videos} video(s): give one per video"
        )
    return metas


class LlavaNextVideoAnyResVideoProcessor(VideoProcessorMixin):
    r"""Torchvision-free video processor of LLaVA-NeXT-Video.

    Per frame: resize the shortest side to ``size["shortest_edge"]`` (bicubic, antialias), center
    crop ``crop_size``, scale by 1/255 and normalise with ``image_mean``/``image_std``.

    ``resize_backend="pil"`` (default): bit for bit what the original LLaVA-NeXT code feeds the
    weights, i.e. transformers' PIL ``CLIPImageProcessor`` run on every frame (PIL bicubic resize of
    the uint8 frame, then ``float64`` rescale cast to ``float32`` and ``(x - mean) / std`` in
    ``float32``); frames given as floats, or living on an accelerator, take the torch path.
    ``resize_backend="torch"``: torchvision's ``resize`` semantics (what transformers' own
    ``LlavaNextVideoVideoProcessor`` does): on CPU a uint8 clip is resized by torch's native uint8
    antialiased kernel, elsewhere in float32 then clamped to [0, 255] and rounded, the whole clip in
    one ``interpolate`` call, then a fused rescale + normalise. The two differ by one uint8 level
    on a fraction of a percent of the pixels.

    Frame sampling (transformers' ``BaseVideoProcessor`` contract, see [`sample_frames`]):

    * ``do_sample_frames=True`` samples every video; ``do_sample_frames=False`` (in the call)
      samples none, even when ``num_frames``/``fps`` are given: arrays are used as given and
      encoded videos decode every frame (within ``video_io``'s size limits).
    * ``do_sample_frames`` not given in the call: encoded videos (paths, URLs, bytes, file
      objects) are sampled with ``video_io.load_video``; frames given as arrays, tensors or PIL
      lists are sampled only when the call passes ``num_frames``/``fps``/``max_frames`` (or the
      processor's saved ``do_sample_frames`` is true), else used as given.
    * ``num_frames``: uniform ``linspace`` with the first and last frame. A clip with fewer frames
      than asked gives all of its frames, never repeated (transformers raises ``ValueError``
      there; the original LLaVA-NeXT code keeps the short clip, and so do we: check
      ``video_num_frames``). ``fps``: one frame every ``round(source_fps / fps)``, falling back to
      ``max_frames`` uniform frames when that is more; the source rate comes from the container,
      ``source_fps=`` or ``video_metadata=`` (one ``VideoMetadata``/dict per video, its ``fps``).
    * ``return_metadata=True`` adds ``video_metadata``: one transformers ``VideoMetadata`` per
      video with the ``frames_indices`` kept.

    Output: ``pixel_values_videos`` (num_videos, T_max, 3, H, W) float32, zero-padded over frames,
    and ``video_num_frames`` (num_videos,) int64, always.
    """

    model_input_names = ["pixel_values_videos", "video_num_frames"]
    valid_kwargs = LlavaNextVideoAnyResVideoProcessorKwargs

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": DEFAULT_IMAGE_SIZE}
    default_to_square = False
    crop_size = {"height": DEFAULT_IMAGE_SIZE, "width": DEFAULT_IMAGE_SIZE}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = None  # None: the per-call rule above; True/False: always/never
    num_frames = 32
    fps = None
    max_frames = None
    resize_backend = "pil"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._set_attributes(**kwargs)
        _check_resize_backend(self.resize_backend)
        _check_frame_args("video processor setting ", self.num_frames, self.fps, self.max_frames)

    def to_dict(self) -> dict[str, Any]:
        """Serializable settings; the frame settings are always written (even when ``None``)."""
        out = super().to_dict()
        for key in ("num_frames", "fps", "max_frames", "resize_backend"):
            out[key] = getattr(self, key, None)
        return out

    # ---------------------------------------------------------------- frame selection
    def _sampling_args(
        self, num_frames: int | None, fps: float | None, max_frames: int | None
    ) -> dict[str, int | float | None]:
        """The ``num_frames``/``fps``/``max_frames`` to sample with, call values over defaults."""
        _check_frame_args("", num_frames, fps, max_frames)
        if num_frames is not None and fps is not None:
            raise ValueError("num_frames and fps are mutually exclusive: pass only one of them")
        if fps is not None:
            return {"fps": fps, "max_frames": max_frames if max_frames is not None else self.max_frames}
        if num_frames is not None:
            return {"num_frames": num_frames, "max_frames": max_frames}
        budget = max_frames if max_frames is not None else self.max_frames
        if self.fps is not None:
            return {"fps": self.fps, "max_frames": budget}
        default = self.num_frames if budget is None else min(self.num_frames, budget)
        return {"num_frames": default, "max_frames": None}

    def sample_frames(
        self,
        metadata: Any,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Indices of the frames to keep from a video described by ``metadata`` (``BaseVideoProcessor`` API).

        Args:
            metadata: a transformers or ``video_io`` ``VideoMetadata``, or a dict, with
                ``total_num_frames`` and (for ``fps`` sampling) ``fps``.
            num_frames / fps / max_frames: as in the call; unset ones fall back to the processor's.
            kwargs: ``source_fps`` overrides ``metadata``'s rate; other keys are ignored (transformers
                passes every preprocessing kwarg here).

        Returns:
            sorted int64 indices without repeats; fewer than ``num_frames`` for a shorter clip.

        Raises:
            ValueError (``VideoLoadError``): ``num_frames`` and ``fps`` together, zero frames,
                ``fps`` without a known source rate, out-of-range arguments.
        """
        from .video_io import sample_indices

        total = _meta(metadata, "total_num_frames")
        if total is None:
            raise ValueError("metadata must give total_num_frames")
        source_fps = kwargs.get("source_fps") or _meta(metadata, "fps")
        sampling = self._sampling_args(num_frames, fps, max_frames)
        return np.asarray(sample_indices(int(total), source_fps=source_fps, **sampling), dtype=np.int64)

    def load_clips(
        self,
        videos: Any,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        do_sample_frames: bool | None = None,
        source_fps: float | None = None,
        video_metadata: Any = None,
        metadata_out: list | None = None,
    ) -> list[torch.Tensor]:
        """Decode/sample every video of ``videos`` (any nesting) into (T, 3, H, W) tensors.

        ``video_metadata``: one metadata (or dict) per video, or one for a single video; its
        ``fps`` is the source rate of array inputs. ``metadata_out``: a list that receives one
        transformers ``VideoMetadata`` per video (frames kept in ``frames_indices``).
        """
        from transformers.video_utils import VideoMetadata as HFVideoMetadata

        flat = flatten_videos(videos)
        metas = _per_video_metadata(video_metadata, len(flat))
        asked = any(v is not None for v in (num_frames, fps, max_frames))
        if do_sample_frames is None:
            sample_arrays, sample_encoded = bool(self.do_sample_frames) or asked, True
        else:
            sample_arrays = sample_encoded = bool(do_sample_frames)
        sampling = self._sampling_args(num_frames, fps, max_frames)
        clips = []
        for i, (video, meta) in enumerate(zip(flat, metas, strict=True)):
            if _is_encoded(video):
                from .video_io import load_video  # lazy: PyAV is only needed for encoded videos

                # do_sample_frames=False: every frame, as transformers decodes without a sampler
                frames, info = load_video(video, **(sampling if sample_encoded else {}))  # (T, H, W, 3)
                clips.append(_to_clip(frames, i))
                if metadata_out is not None:
                    metadata_out.append(info.to_transformers())
                continue
            clip = _to_clip(video, i)
            rate = source_fps if source_fps is not None else _meta(meta, "fps")
            n_source = int(clip.shape[0])
            idx = list(range(n_source))
            if sample_arrays:
                from .video_io import sample_indices

                idx = sample_indices(clip.shape[0], source_fps=rate, **sampling)
                clip = clip[torch.as_tensor(idx, dtype=torch.long)]
            clips.append(clip)
            if metadata_out is not None:
                metadata_out.append(
                    HFVideoMetadata(
                        total_num_frames=n_source,
                        fps=rate,
                        width=int(clip.shape[-1]),
                        height=int(clip.shape[-2]),
                        frames_indices=[int(j) for j in idx],
                    )
                )
        return clips

    # ---------------------------------------------------------------- pixel pipeline
    @staticmethod
    def _resize(clip: torch.Tensor, out_hw: tuple[int, int], resample: Any) -> torch.Tensor:
        """torchvision ``resize`` semantics for a (T, C, H, W) clip, in one ``interpolate`` call."""
        if tuple(clip.shape[-2:]) == tuple(out_hw):
            return clip
        mode = _INTERPOLATION.get(PILImageResampling(resample), None) if resample is not None else "bilinear"
        if mode is None:
            raise ValueError(f"unsupported resample {resample!r}: use BICUBIC, BILINEAR or NEAREST")
        kwargs: dict[str, Any] = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
        native = clip.dtype == torch.uint8 and (
            mode == "nearest"
            or (
                clip.device.type == "cpu"
                and (mode == "bicubic" or "AVX2" in torch.backends.cpu.get_cpu_capability())
            )
        )
        if native or clip.is_floating_point():
            return F.interpolate(clip, size=list(out_hw), mode=mode, **kwargs)
        out = F.interpolate(clip.float(), size=list(out_hw), mode=mode, **kwargs)
        if mode == "bicubic":
            out = out.clamp_(0, 255)
        return out.round_().to(clip.dtype)

    @staticmethod
    def _resize_pil(clip: torch.Tensor, out_hw: tuple[int, int], resample: Any) -> torch.Tensor:
        """PIL resize of every uint8 frame of a (T, C, H, W) CPU clip, as transformers' PIL backend.

        Frames are resized on a few threads (PIL releases the GIL while it resamples)."""
        if tuple(clip.shape[-2:]) == tuple(out_hw):
            return clip
        resample = PILImageResampling(resample if resample is not None else PILImageResampling.BILINEAR)
        frames = clip.permute(0, 2, 3, 1).numpy()  # (T, H, W, C)
        out = np.empty((frames.shape[0], out_hw[0], out_hw[1], frames.shape[3]), dtype=np.uint8)

        def resize(i: int) -> None:
            image = PIL.Image.fromarray(np.ascontiguousarray(frames[i]))
            out[i] = np.asarray(image.resize((out_hw[1], out_hw[0]), resample=resample, reducing_gap=None))

        workers = min(len(frames), os.cpu_count() or 1, 8)
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(resize, range(len(frames))))
        else:
            for i in range(len(frames)):
                resize(i)
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    @staticmethod
    def _rescale_normalize_pil(clip: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        """uint8 (T, C, H, W) -> float32 exactly as transformers' PIL backend computes it.

        That backend rescales in float64 (``x * factor``), casts to float32, then normalises in float32
        (``(x - mean) / std`` with float32 mean/std). A uint8 pixel has 256 values, so the same
        operations are done once per value and channel into a (C, 256) table and the frames are looked
        up in it: identical floats, a fraction of the work.
        """
        channels = int(clip.shape[1])
        values = np.arange(256, dtype=np.float64)
        if options["do_rescale"]:
            base = (values * options["rescale_factor"]).astype(np.float32)
        else:
            base = values.astype(np.float32)
        if options["do_normalize"]:
            mean = np.asarray(options["image_mean"], dtype=np.float32).reshape(-1, 1)
            std = np.asarray(options["image_std"], dtype=np.float32).reshape(-1, 1)
            table = (base[None, :] - mean) / std
            if table.shape[0] != channels:
                raise ValueError(f"image_mean/image_std have {table.shape[0]} values for {channels} channels")
        else:
            table = np.broadcast_to(base, (channels, 256))
        pixels = np.ascontiguousarray(clip.numpy())
        out = np.empty(pixels.shape, dtype=np.float32)
        for c in range(channels):
            np.take(table[c], pixels[:, c], out=out[:, c])
        return torch.from_numpy(out)

    @staticmethod
    def _center_crop(clip: torch.Tensor, crop: SizeDict) -> torch.Tensor:
        """Center crop (zero-padding first when the clip is smaller), as transformers does."""
        h, w = clip.shape[-2:]
        ch, cw = crop.height, crop.width
        if ch > h or cw > w:
            pad_l, pad_t = max(cw - w, 0) // 2, max(ch - h, 0) // 2
            pad_r, pad_b = (max(cw - w, 0) + 1) // 2, (max(ch - h, 0) + 1) // 2
            clip = F.pad(clip, (pad_l, pad_r, pad_t, pad_b), value=0)
            h, w = clip.shape[-2:]
        top, left = int((h - ch) / 2.0), int((w - cw) / 2.0)
        return clip[..., top : top + ch, left : left + cw]

    def _pixels(self, clip: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        """(T, 3, H, W) uint8/float frames -> (T, 3, crop_h, crop_w) float32 model input."""
        pil = options["resize_backend"] == "pil" and clip.dtype == torch.uint8 and clip.device.type == "cpu"
        if not pil:
            clip = clip.contiguous()
        if options["do_resize"]:
            size = options["size"]
            out_hw = _resize_output_size(int(clip.shape[-2]), int(clip.shape[-1]), size)
            resize = self._resize_pil if pil else self._resize
            clip = resize(clip, out_hw, options["resample"])
        if options["do_center_crop"]:
            clip = self._center_crop(clip, options["crop_size"])
        rescale, factor = options["do_rescale"], options["rescale_factor"]
        if pil:
            return self._rescale_normalize_pil(clip, options)
        x = clip.to(torch.float32)
        if options["do_normalize"]:
            # Fused rescale + normalise, exactly as transformers' TorchvisionBackend: (x - 255 m) / (255 s)
            mean = torch.tensor(options["image_mean"], device=x.device)
            std = torch.tensor(options["image_std"], device=x.device)
            if rescale:
                mean, std = mean * (1.0 / factor), std * (1.0 / factor)
            x = x.sub(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
        elif rescale:
            x = x * factor
        return x

    def preprocess(  # type: ignore[override]
        self,
        videos: Any,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        do_sample_frames: bool | None = None,
        source_fps: float | None = None,
        video_metadata: Any = None,
        return_metadata: bool = False,
        return_tensors: str | None = "pt",
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Decode/sample and preprocess a video or a batch of videos.

        Args:
            videos: a path/URL/bytes/file object, a (T, H, W, 3) array/tensor, a list of frames, or
                any (nested) list of those.
            num_frames / fps / max_frames: frame sampling (see the class docstring).
            do_sample_frames: ``True``: sample every video (arrays too, with the default settings);
                ``False``: sample none, whatever ``num_frames``/``fps`` say; unset: see the class docstring.
            source_fps: frame rate of array inputs, needed for ``fps`` sampling of arrays.
            video_metadata: one ``VideoMetadata``/dict per video (``fps`` = source rate of arrays).
            return_metadata: also return ``video_metadata`` (one transformers ``VideoMetadata`` per video).
            return_tensors: ``"pt"`` (default) or ``"np"``.
            device: where to run the pixel pipeline (``None``: where the frames are).
            kwargs: per-call overrides of the settings (``size``, ``crop_size``, ``image_mean``, ...).

        Returns:
            ``pixel_values_videos`` (num_videos, T_max, 3, H, W) float32 zero-padded over frames,
            ``video_num_frames`` (num_videos,) int64.
        """
        options: dict[str, Any] = {}
        for key in (
            "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
            "rescale_factor", "do_normalize", "image_mean", "image_std",
        ):  # fmt: skip
            value = kwargs.pop(key, None)
            options[key] = value if value is not None else getattr(self, key)
        options = self._standardize_kwargs(default_to_square=self.default_to_square, **options)
        backend = kwargs.pop("resize_backend", None)
        options["resize_backend"] = _check_resize_backend(
            backend if backend is not None else self.resize_backend
        )
        ignored = set(kwargs) - set(self.valid_kwargs.__annotations__)
        if ignored:
            logger.warning_once(f"{type(self).__name__} ignores unknown arguments {sorted(ignored)}")

        metadata: list[Any] = []
        clips = self.load_clips(
            videos,
            num_frames=num_frames,
            fps=fps,
            max_frames=max_frames,
            do_sample_frames=do_sample_frames,
            source_fps=source_fps,
            video_metadata=video_metadata,
            metadata_out=metadata,
        )
        if not clips:
            raise VideoLoadError("no video was given")
        processed = [self._pixels(clip.to(device) if device is not None else clip, options) for clip in clips]
        lengths = [int(p.shape[0]) for p in processed]
        t_max = max(lengths)
        # (num_videos, T_max, 3, H, W), zeros after each video's last frame
        if len(processed) == 1:
            batch = processed[0][None]
        else:
            batch = processed[0].new_zeros((len(processed), t_max, *processed[0].shape[1:]))
            for i, p in enumerate(processed):
                batch[i, : p.shape[0]] = p
        data = {"pixel_values_videos": batch, "video_num_frames": torch.tensor(lengths, dtype=torch.int64)}
        if return_tensors == "np":
            data = {k: v.cpu().numpy() for k, v in data.items()}
        if return_metadata:
            data["video_metadata"] = metadata
        return BatchFeature(data=data)

    def __call__(self, videos: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(videos, **kwargs)


# ============================================================================ the processor


class LlavaNextVideoAnyResTextKwargs(TextKwargs, total=False):
    """Tokenizer kwargs plus ``tokenization`` (``"original"``/``"transformers"``)."""

    tokenization: str | None


class LlavaNextVideoAnyResProcessorKwargs(ProcessingKwargs, total=False):
    """Per-modality kwargs of [`LlavaNextVideoAnyResProcessor`] for ``ProcessorMixin._merge_kwargs``."""

    text_kwargs: LlavaNextVideoAnyResTextKwargs
    videos_kwargs: LlavaNextVideoAnyResVideoProcessorKwargs
    _defaults = {"text_kwargs": {"padding": True}}


# `from __future__ import annotations` leaves ForwardRefs; _merge_kwargs reads the classes themselves
LlavaNextVideoAnyResProcessorKwargs.__annotations__["text_kwargs"] = LlavaNextVideoAnyResTextKwargs
LlavaNextVideoAnyResProcessorKwargs.__annotations__["videos_kwargs"] = (
    LlavaNextVideoAnyResVideoProcessorKwargs
)


def _size_field(size: Any, key: str) -> int:
    """``size.key`` for a ``SizeDict`` or ``size[key]`` for a plain dict (as saved in JSON or set by users)."""
    return int(size[key] if isinstance(size, dict) else getattr(size, key))


#: How the processor turns text into ids (see ``tokenize_like_original``).
TOKENIZATION_MODES = ("original", "transformers")


def tokenize_like_original(
    tokenizer: Any,
    text: str,
    placeholders: Sequence[str],
    *,
    add_special_tokens: bool = True,
    return_offsets_mapping: bool = False,
) -> dict[str, list]:
    """Token ids of ``text`` by the original LLaVA rule (``mm_utils.tokenizer_image_token``).

    The text is cut at every media placeholder (any of ``placeholders``, which must be single
    tokens of ``tokenizer``); each piece of text is tokenized on its own with the tokenizer's
    special tokens, as ``tokenizer(chunk)`` in the original, and the placeholder ids are put back
    in between. When the first piece starts with the BOS id, later pieces lose their first id (their
    own BOS): the BOS comes from the tokenizer, once. With SentencePiece-style tokenizers every piece
    therefore starts with the word-boundary ``▁`` (Vicuna: ``<s> ▁A ...`` and ``▁`` after a media
    token), which tokenizing the whole string at once loses; byte-level BPE (Qwen, GPT-2) gives the
    same ids either way.

    A literal BOS at the start of ``text`` (chat templates render one, for engines that tokenize
    without special tokens) is removed first and the BOS then comes from the tokenizer, so
    ``"<s>A chat..."`` and ``"A chat..."`` give the same ids. ``add_special_tokens=False`` on a text
    without a literal BOS tokenizes every piece without special tokens.

    Returns ``{"input_ids": [...]}`` plus ``"offset_mapping"`` (character spans in ``text``) when asked.
    """
    bos = getattr(tokenizer, "bos_token", None)
    start = 0
    if bos and text.startswith(bos):
        start, add_special_tokens = len(bos), True
    ids_of = {p: tokenizer.convert_tokens_to_ids(p) for p in placeholders}
    pattern = re.compile("|".join(re.escape(p) for p in sorted(placeholders, key=len, reverse=True)))
    # pieces: (kind, start, end): text between placeholders ("text") or one placeholder ("media")
    pieces: list[tuple[str, int, int]] = []
    pos = start
    for m in pattern.finditer(text, start):
        pieces.append(("text", pos, m.start()))
        pieces.append(("media", m.start(), m.end()))
        pos = m.end()
    pieces.append(("text", pos, len(text)))

    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    drop_first = False
    first_text = True
    for kind, a, b in pieces:
        if kind == "media":
            ids.append(int(ids_of[text[a:b]]))
            offsets.append((a, b))
            continue
        enc = tokenizer(
            text[a:b], add_special_tokens=add_special_tokens, return_offsets_mapping=return_offsets_mapping
        )
        chunk = list(enc["input_ids"])
        spans = [(x + a, y + a) for x, y in enc["offset_mapping"]] if return_offsets_mapping else []
        if first_text:
            first_text = False
            bos_id = getattr(tokenizer, "bos_token_id", None)
            drop_first = bool(chunk) and bos_id is not None and chunk[0] == bos_id
        elif drop_first:
            chunk, spans = chunk[1:], spans[1:]
        ids.extend(chunk)
        offsets.extend(spans)
    out: dict[str, list] = {"input_ids": ids}
    if return_offsets_mapping:
        out["offset_mapping"] = offsets
    return out


def _is_text(x: Any) -> bool:
    return isinstance(x, str) or (isinstance(x, (list, tuple)) and all(isinstance(t, str) for t in x))


def load_image_checked(source: str | os.PathLike) -> PIL.Image.Image:
    """Load an image path, URL or base64 string as RGB, within ``video_io.MAX_PIXELS`` pixels.

    The same pixel limit as for video frames: a local file's size is read from its header and
    refused before it is decoded (a decompression bomb never allocates its pixels).

    Raises:
        ImageLoadError: a missing, corrupt or non-image file, a failed download, or an image over
            the pixel limit.
    """
    import warnings

    from .video_io import MAX_PIXELS

    name = str(source)
    desc = name if len(name) < 200 else name[:60] + "..."
    is_local = not name.startswith(("http://", "https://", "data:")) and len(name) < 4096
    if is_local and not os.path.isfile(name):
        raise ImageLoadError(f"image {desc}: no such file")

    def check(width: int, height: int) -> None:
        if width * height > MAX_PIXELS:
            raise ImageLoadError(
                f"image {desc}: {width}x{height} = {width * height} pixels exceeds the limit of "
                f"{MAX_PIXELS} pixels (video_io.MAX_PIXELS)"
            )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            if is_local:
                with PIL.Image.open(name) as probe:
                    check(*probe.size)
            image = load_image(name)
            check(*image.size)
            image.load()
    except ImageLoadError:
        raise
    except PIL.Image.DecompressionBombError as err:
        raise ImageLoadError(
            f"image {desc}: over the limit of {MAX_PIXELS} pixels (video_io.MAX_PIXELS); {err}"
        ) from None
    except (OSError, ValueError, SyntaxError, PIL.UnidentifiedImageError) as err:
        raise ImageLoadError(f"image {desc}: not a readable image ({err})") from None
    return image if image.mode == "RGB" else image.convert("RGB")


def flatten_images(images: Any) -> list[Any]:
    """Flatten any nesting of images into a flat list (paths, URLs and base64 strings are loaded)."""
    if images is None:
        return []
    if isinstance(images, (str, os.PathLike)):
        return [load_image_checked(images)]
    if isinstance(images, PIL.Image.Image):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ValueError(f"an image array must have 2, 3 or 4 dimensions, got shape {tuple(images.shape)}")
    if isinstance(images, (list, tuple)):
        out: list[Any] = []
        for item in images:
            out.extend(flatten_images(item))
        return out
    raise TypeError(f"unsupported image of type {type(images).__name__}")


class LlavaNextVideoAnyResProcessor(ProcessorMixin):
    r"""Processor of LLaVA-NeXT-Video (AnyRes): image processor + video processor + tokenizer.

    Every ``<image>`` placeholder becomes ``rope.num_image_tokens(h, w, ...)`` tokens and every
    ``<video>`` ``rope.num_video_tokens(T, ...)`` tokens, in order of appearance across the batch.

    Args:
        image_processor: [`LlavaNextVideoAnyResImageProcessor`].
        video_processor: [`LlavaNextVideoAnyResVideoProcessor`].
        tokenizer: the language model's tokenizer (must know ``image_token`` and ``video_token``).
        chat_template: Jinja chat template (defaults to the tokenizer's).
        patch_size: the vision tower's patch size (14 for CLIP-L/14-336).
        vision_feature_select_strategy: ``"default"`` drops the CLS feature, ``"full"`` keeps it.
        num_additional_image_tokens: features the tower adds before the patches (1 for CLIP's CLS,
            0 for SigLIP); an image counts it only with strategy ``"full"``.
        spatial_pool_stride / spatial_pool_mode / video_newline_position: the video token layout
            (see ``rope``).
        context_length: positions the model can use at its RoPE factor (``None``: no length check).
        original_context_length: the context the LLM was trained with (defaults to ``context_length``).
        image_token / video_token: the placeholder strings.
        tokenization: ``"original"`` (default) tokenizes the text between media placeholders piece by
            piece, as the original LLaVA code that the weights were trained with
            ([`tokenize_like_original`]); ``"transformers"`` tokenizes each prompt in one call, as
            transformers' own LLaVA processors. Both agree for byte-level BPE tokenizers (Qwen);
            SentencePiece tokenizers (Vicuna/Llama-2, Mistral, Yi) differ. A call may override it.
    """

    def __init__(
        self,
        image_processor: LlavaNextVideoAnyResImageProcessor | None = None,
        video_processor: LlavaNextVideoAnyResVideoProcessor | None = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        patch_size: int = 14,
        vision_feature_select_strategy: str = "default",
        num_additional_image_tokens: int = 1,
        spatial_pool_stride: int = 2,
        spatial_pool_mode: str = "average",
        video_newline_position: str = "no_token",
        context_length: int | None = None,
        original_context_length: int | None = None,
        image_token: str = "<image>",
        video_token: str = "<video>",
        tokenization: str = "original",
        **kwargs: Any,
    ) -> None:
        if vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(
                f"vision_feature_select_strategy must be 'default' or 'full', got {vision_feature_select_strategy!r}"
            )
        if num_additional_image_tokens not in (0, 1):
            raise ValueError(f"num_additional_image_tokens must be 0 or 1, got {num_additional_image_tokens}")
        if video_newline_position not in rope.NEWLINE_POSITIONS:
            raise ValueError(
                f"video_newline_position must be one of {rope.NEWLINE_POSITIONS}, got {video_newline_position!r}"
            )
        self.patch_size = int(patch_size)
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.num_additional_image_tokens = int(num_additional_image_tokens)
        self.spatial_pool_stride = int(spatial_pool_stride)
        if spatial_pool_mode not in rope.POOL_MODES:
            raise ValueError(f"spatial_pool_mode must be one of {rope.POOL_MODES}, got {spatial_pool_mode!r}")
        self.spatial_pool_mode = spatial_pool_mode
        self.video_newline_position = video_newline_position
        self.context_length = None if context_length is None else int(context_length)
        self.original_context_length = (
            self.context_length if original_context_length is None else int(original_context_length)
        )
        self.image_token = image_token
        self.video_token = video_token
        if tokenization not in TOKENIZATION_MODES:
            raise ValueError(f"tokenization must be one of {TOKENIZATION_MODES}, got {tokenization!r}")
        self.tokenization = tokenization
        if chat_template is None and tokenizer is not None:
            chat_template = getattr(tokenizer, "chat_template", None)
        super().__init__(image_processor, video_processor, tokenizer, chat_template=chat_template)
        self.image_token_id = self._token_id(image_token)
        self.video_token_id = self._token_id(video_token)

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (
            token_id == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token
        ):
            raise ValueError(f"the tokenizer has no {token!r} token; add it as a special token first")
        return int(token_id)

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
        # transformers looks for `transformers.VideoProcessorMixin` (not exported), then walks a dummy
        # VIDEO_PROCESSOR_MAPPING and dict-valued registries: both raise. Check the class here.
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(
                    f"video_processor must be a VideoProcessorMixin, got {type(argument).__name__}"
                )
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_model_config(cls, config: Any, tokenizer: Any, **kwargs: Any) -> LlavaNextVideoAnyResProcessor:
        """The processor matching a [`LlavaNextVideoAnyResConfig`]: tiles, frames, token layout, context.

        ``kwargs`` may override ``num_frames``/``fps``/``max_frames`` (video processor) and any
        argument of ``__init__`` (e.g. ``chat_template``).
        """
        vision = config.vision_config
        image_size = int(vision.image_size)
        siglip = "siglip" in getattr(vision, "model_type", "")
        mean, std = (SIGLIP_MEAN, SIGLIP_STD) if siglip else (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        pixels = {
            "size": {"shortest_edge": image_size},
            "crop_size": {"height": image_size, "width": image_size},
            "image_mean": list(mean),
            "image_std": list(std),
        }
        image_processor = LlavaNextVideoAnyResImageProcessor(
            image_grid_pinpoints=[list(p) for p in config.image_grid_pinpoints], **pixels
        )
        frames = {
            "num_frames": kwargs.pop("num_frames", config.num_frames),
            "fps": kwargs.pop("fps", None),
            "max_frames": kwargs.pop("max_frames", config.max_frames),
        }
        video_processor = LlavaNextVideoAnyResVideoProcessor(**pixels, **frames)

        def token(token_id: int, default: str) -> str:
            name = tokenizer.convert_ids_to_tokens(int(token_id)) if token_id is not None else None
            return name if isinstance(name, str) else default

        settings = {
            "patch_size": int(vision.patch_size),
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
            "num_additional_image_tokens": int(config.vision_has_cls),
            "spatial_pool_stride": int(config.spatial_pool_stride),
            "spatial_pool_mode": config.spatial_pool_mode,
            "video_newline_position": config.video_newline_position,
            "context_length": int(config.context_length),
            "original_context_length": int(config.trained_context_length),
            "image_token": token(config.image_token_id, "<image>"),
            "video_token": token(config.video_token_id, "<video>"),
        }
        settings.update(kwargs)
        return cls(image_processor, video_processor, tokenizer, **settings)

    # ---------------------------------------------------------------- token math (via rope.py)
    def video_token_kwargs(self) -> dict[str, Any]:
        """The arguments of ``rope.num_video_tokens`` this processor implies."""
        return {
            "image_size": _size_field(self.video_processor.crop_size, "height"),
            "patch_size": self.patch_size,
            "stride": self.spatial_pool_stride,
            "mode": self.spatial_pool_mode,
            "newline_position": self.video_newline_position,
        }

    def num_video_tokens(self, num_frames: int) -> int:
        """``<video>`` tokens of a clip of ``num_frames`` frames."""
        return rope.num_video_tokens(int(num_frames), **self.video_token_kwargs())

    def num_image_tokens(self, height: int, width: int) -> int:
        """``<image>`` tokens of an image of ``height`` x ``width`` pixels."""
        return rope.num_image_tokens(
            int(height),
            int(width),
            image_size=_size_field(self.image_processor.crop_size, "height"),
            patch_size=self.patch_size,
            grid_pinpoints=self.image_processor.image_grid_pinpoints,
            keeps_cls=self.vision_feature_select_strategy == "full" and self.num_additional_image_tokens > 0,
        )

    def _get_num_multimodal_tokens(
        self,
        image_sizes: Sequence[Sequence[int]] | None = None,
        video_num_frames: Sequence[int] | None = None,
        **_: Any,
    ) -> Any:
        """Placeholder counts per item without processing pixels (the transformers/vLLM helper)."""
        from transformers.processing_utils import MultiModalData

        data: dict[str, Any] = {}
        if image_sizes is not None:
            data["num_image_tokens"] = [self.num_image_tokens(h, w) for h, w in image_sizes]
            data["num_image_patches"] = [1] * len(image_sizes)
        if video_num_frames is not None:
            data["num_video_tokens"] = [self.num_video_tokens(t) for t in video_num_frames]
        return MultiModalData(**data)

    # ---------------------------------------------------------------- call
    def __call__(  # type: ignore[override]
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        videos: Any = None,
        audio: Any = None,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenize prompts and process their media, expanding each placeholder to its token count.

        Args:
            text: a prompt or a list of prompts with ``<image>``/``<video>`` placeholders.
            images: images (PIL, arrays, paths/URLs) in any nesting, in placeholder order.
            videos: videos (paths/URLs/bytes, (T, H, W, 3) arrays/tensors, lists of frames) in any
                nesting, in placeholder order.
            num_frames / fps / max_frames: frame sampling for this call (see the video processor).
            return_tensors: ``"pt"`` (default), ``"np"`` or ``None`` (lists for the text side).
            padding: tokenizer padding (default ``True``: to the longest prompt, on the tokenizer's
                ``padding_side``).
            kwargs: merged as transformers' processors do (``ProcessorMixin._merge_kwargs``): flat
                kwargs go to every modality that accepts them (``padding_side``, ``max_length``,
                ``add_special_tokens``, ``return_mm_token_type_ids``, ``tokenization`` (``"original"``/
                ``"transformers"``, see the class docstring) to the tokenizer;
                ``do_sample_frames``, ``source_fps``, ``video_metadata``, ``return_metadata`` and
                pixel settings to the video processor; image settings to the image processor), or
                per modality as ``text_kwargs``/``images_kwargs``/``videos_kwargs`` dicts; the
                tokenizer's own defaults (``padding_side``, ``max_length``) apply when not given.

        Returns:
            ``input_ids``, ``attention_mask`` (with text), ``pixel_values`` + ``image_sizes`` (with
            images), ``pixel_values_videos`` + ``video_num_frames`` (with videos).

        Raises:
            PlaceholderMismatchError: the placeholders and the media given differ in number.
            ContextLengthError: a prompt (after expansion) is longer than ``context_length``.
            ValueError: the same kwarg given flat and in a ``*_kwargs`` dict, or ``truncation``.
        """
        if audio is not None:
            raise ValueError(f"{type(self).__name__} does not take audio")
        if text is not None and not _is_text(text) and (images is None or _is_text(images)):
            text, images = images, text  # images passed first, positionally (transformers' order)
        for key, value in (("num_frames", num_frames), ("fps", fps), ("max_frames", max_frames)):
            if value is not None:
                kwargs[key] = value
        if padding is not None:
            kwargs["padding"] = padding
        text_kwargs, images_kwargs, videos_kwargs = self._split_kwargs(kwargs)
        if text_kwargs.pop("truncation", None) not in (None, False):
            raise ValueError(
                "truncation is not supported: it would cut visual tokens; shorten the prompt instead"
            )
        padding = text_kwargs.pop("padding", True)
        return_replacement_offsets = text_kwargs.pop("return_text_replacement_offsets", False)
        return_mm_token_type_ids = text_kwargs.pop("return_mm_token_type_ids", False)

        data: dict[str, Any] = {}
        image_list = flatten_images(images)
        image_replacements: list[str] = []
        image_token_counts: list[int] = []
        if image_list:
            out = self.image_processor(image_list, return_tensors=return_tensors, **images_kwargs)
            data.update(out)
            sizes = out["image_sizes"]
            sizes = sizes.tolist() if hasattr(sizes, "tolist") else [list(s) for s in sizes]
            image_token_counts = [self.num_image_tokens(h, w) for h, w in sizes]
            image_replacements = [self.image_token * n for n in image_token_counts]

        video_frames: list[int] = []
        video_replacements: list[str] = []
        if videos is not None and flatten_videos(videos):
            out = self.video_processor(
                videos, return_tensors="np" if return_tensors == "np" else "pt", **videos_kwargs
            )
            data.update(out)
            video_frames = [int(t) for t in out["video_num_frames"].tolist()]
            video_replacements = [self.video_token * self.num_video_tokens(t) for t in video_frames]

        if text is None:
            return BatchFeature(data=data, tensor_type=return_tensors)
        prompts = [text] if isinstance(text, str) else list(text)
        image_counts = [p.count(self.image_token) for p in prompts]
        video_counts = [p.count(self.video_token) for p in prompts]
        for name, counts, given in (
            ("image", image_counts, len(image_replacements)),
            ("video", video_counts, len(video_replacements)),
        ):
            if sum(counts) != given:
                token = self.image_token if name == "image" else self.video_token
                raise PlaceholderMismatchError(
                    f"the text has {sum(counts)} {token} placeholder(s) (per prompt: {counts}) but {given} "
                    f"{name}(s) were given; use exactly one {token} per {name}, in order"
                )

        expanded, offsets = self.get_text_with_replacements(prompts, image_replacements, video_replacements)
        keep_mask = text_kwargs.pop("return_attention_mask", True)
        tokenization = text_kwargs.pop("tokenization", None) or self.tokenization
        if tokenization not in TOKENIZATION_MODES:
            raise ValueError(f"tokenization must be one of {TOKENIZATION_MODES}, got {tokenization!r}")
        if tokenization == "original":
            encoded = self._tokenize_original(expanded, padding, text_kwargs)
        else:
            encoded = self.tokenizer(
                expanded,
                padding=padding,
                truncation=False,
                return_tensors=None,
                return_attention_mask=True,
                **text_kwargs,
            )
        self._check_lengths(encoded, image_counts, video_counts, image_token_counts, video_frames)
        if not keep_mask:
            del encoded["attention_mask"]
        if return_mm_token_type_ids:
            encoded["mm_token_type_ids"] = self.create_mm_token_type_ids(encoded["input_ids"])
        data = {**encoded, **data}
        if return_replacement_offsets:
            data["text_replacement_offsets"] = offsets
        if isinstance(text, str) and return_tensors is None:
            data = {k: v[0] if k in encoded else v for k, v in data.items()}
        return BatchFeature(
            data=data, tensor_type=return_tensors, skip_tensor_conversion=self.skip_tensor_conversion
        )

    def _split_kwargs(self, kwargs: dict[str, Any]) -> tuple[dict, dict, dict]:
        """Route flat and per-modality kwargs with transformers' ``ProcessorMixin._merge_kwargs``.

        Priority: flat kwargs, then ``text_kwargs``/``images_kwargs``/``videos_kwargs``, then the
        tokenizer's init kwargs (``padding_side``, ``max_length``, ...), then the class defaults; a
        key given both flat and in its modality dict raises ``ValueError``.
        """
        kwargs = {k: v for k, v in kwargs.items() if k != "return_tensors"}
        merged = self._merge_kwargs(
            LlavaNextVideoAnyResProcessorKwargs,
            tokenizer_init_kwargs=getattr(self.tokenizer, "init_kwargs", None),
            **kwargs,
        )
        text_kwargs, images_kwargs, videos_kwargs = (
            {k: v for k, v in merged[name].items() if k != "return_tensors"}
            for name in ("text_kwargs", "images_kwargs", "videos_kwargs")
        )
        return text_kwargs, images_kwargs, videos_kwargs

    def _tokenize_original(self, texts: list[str], padding: bool | str, text_kwargs: dict[str, Any]) -> Any:
        """Tokenize every (expanded) prompt by [`tokenize_like_original`], then pad as the tokenizer would."""
        text_kwargs = dict(text_kwargs)
        add_special_tokens = text_kwargs.pop("add_special_tokens", True)
        with_offsets = bool(text_kwargs.pop("return_offsets_mapping", False))
        text_kwargs.pop("verbose", None)
        for key in ("return_token_type_ids", "return_length"):
            if text_kwargs.pop(key, None):
                raise ValueError(
                    f"{key} is not available with tokenization='original'; pass tokenization='transformers'"
                )
        placeholders = [self.image_token, self.video_token]
        rows = [
            tokenize_like_original(
                self.tokenizer,
                t,
                placeholders,
                add_special_tokens=add_special_tokens,
                return_offsets_mapping=with_offsets,
            )
            for t in texts
        ]
        encoded = self.tokenizer.pad(
            {"input_ids": [r["input_ids"] for r in rows]},
            padding=padding,
            return_attention_mask=True,
            return_tensors=None,
            **text_kwargs,
        )
        if with_offsets:
            side = text_kwargs.get("padding_side") or self.tokenizer.padding_side
            spans = []
            for r, ids in zip(rows, encoded["input_ids"], strict=True):
                pad = [(0, 0)] * (len(ids) - len(r["offset_mapping"]))
                spans.append(pad + r["offset_mapping"] if side == "left" else r["offset_mapping"] + pad)
            encoded["offset_mapping"] = spans
        return encoded

    def _check_lengths(
        self,
        encoded: Any,
        image_counts: list[int],
        video_counts: list[int],
        image_tokens: list[int],
        video_frames: list[int],
    ) -> None:
        """Check the placeholder expansion survived tokenization and every prompt fits the context."""
        first_image = first_video = 0
        for i, ids in enumerate(encoded["input_ids"]):
            length = int(sum(encoded["attention_mask"][i]))
            frames = video_frames[first_video : first_video + video_counts[i]]
            n_video = sum(self.num_video_tokens(t) for t in frames)
            n_image = sum(image_tokens[first_image : first_image + image_counts[i]])
            first_image += image_counts[i]
            first_video += video_counts[i]
            ids_list = list(ids)
            if (
                ids_list.count(self.video_token_id) != n_video
                or ids_list.count(self.image_token_id) != n_image
            ):
                raise ValueError(
                    f"prompt {i}: the tokenizer did not keep {self.image_token!r}/{self.video_token!r} as single "
                    "tokens; add them as special tokens"
                )
            if self.context_length is not None and length > self.context_length:
                raise ContextLengthError(self._length_message(i, length, n_video, n_image, frames))

    def _length_message(self, index: int, length: int, n_video: int, n_image: int, frames: list[int]) -> str:
        """What overflowed, what would fit, and how to make it fit (frames or RoPE factor)."""
        ctx, orig = self.context_length, self.original_context_length or self.context_length
        assert ctx is not None
        factor = rope.rope_factor(length, orig, text_budget=0)  # = ceil(length / orig) when >= 2
        current = ctx / orig
        head = (
            f"prompt {index} is {length} tokens long ({n_video} video tokens for {sum(frames)} frames, "
            f"{n_image} image tokens, {length - n_video - n_image} text tokens) but the model's context is "
            f"{ctx} positions ({orig} trained positions x linear RoPE factor {current:g}); nothing was truncated."
        )
        fixes = []
        if frames:
            other = length - n_video
            kw = self.video_token_kwargs()
            if len(frames) == 1:
                fit = rope.max_frames_that_fit(ctx, other, **kw)
            else:
                fit = 0
                while other + len(frames) * rope.num_video_tokens(fit + 1, **kw) <= ctx:
                    fit += 1
            per = "" if len(frames) == 1 else f" per video ({len(frames)} videos)"
            if fit > 0:
                fixes.append(
                    f"sample at most {fit} frames{per} (num_frames={fit} or max_frames={fit} in the processor call)"
                )
            else:
                fixes.append("even 1 frame does not fit: shorten the text or use fewer images/videos")
        fix_rope = (
            f"load the model with a linear RoPE factor of at least {factor} = ceil({length} / {orig}): "
            f"`from_pretrained(..., rope_scaling_factor={factor})`"
        )
        if frames:
            fix_rope += f" or `from_pretrained(..., max_frames={max(frames)}, rope_scaling_factor='auto')`"
        fix_rope += ", and build the processor from that config"
        fixes.append(fix_rope)
        return head + " To fit it: " + "; or ".join(fixes) + "."

    # ---------------------------------------------------------------- chat template
    def apply_chat_template(self, conversation: Any, chat_template: str | None = None, **kwargs: Any) -> Any:
        """transformers' ``apply_chat_template``; ``num_frames``/``fps``/``max_frames``/``padding_side``
        may be passed directly (they go to ``__call__``, where videos are decoded by ``video_io``)."""
        processor_kwargs = dict(kwargs.pop("processor_kwargs", None) or {})
        for key in (
            "num_frames",
            "fps",
            "max_frames",
            "do_sample_frames",
            "padding",
            "padding_side",
            "source_fps",
        ):
            if key in kwargs:
                processor_kwargs[key] = kwargs.pop(key)
        return super().apply_chat_template(
            conversation, chat_template=chat_template, processor_kwargs=processor_kwargs, **kwargs
        )

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "pixel_values",
            "image_sizes",
            "pixel_values_videos",
            "video_num_frames",
        ]


# ============================================================================ registration


def register_auto_classes() -> None:
    """Register the three classes with ``AutoImageProcessor``/``AutoVideoProcessor``/``AutoProcessor``.

    Idempotent, needs no torchvision. ``AutoVideoProcessor`` is taken from its module: the name
    exported by ``transformers`` is a dummy without torchvision. The image and video processors are
    registered under every backend key (``torchvision`` is the default key asked for by
    ``AutoVideoProcessor``, ``pil`` the one ``AutoImageProcessor`` picks without torchvision).
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor

    from .configuration import LlavaNextVideoAnyResConfig

    AutoConfig.register(LlavaNextVideoAnyResConfig.model_type, LlavaNextVideoAnyResConfig, exist_ok=True)
    image = LlavaNextVideoAnyResImageProcessor
    video = LlavaNextVideoAnyResVideoProcessor
    AutoImageProcessor.register(
        LlavaNextVideoAnyResConfig,
        image_processor_classes={"pil": image, "torchvision": image},
        exist_ok=True,
    )
    AutoVideoProcessor.register(
        LlavaNextVideoAnyResConfig,
        video_processor_classes={"torchvision": video, "torch": video, "pil": video},
        exist_ok=True,
    )
    AutoProcessor.register(LlavaNextVideoAnyResConfig, LlavaNextVideoAnyResProcessor, exist_ok=True)
