"""Videos: the video processor (frames -> ``pixel_values_videos``), without torchvision.

[`LlavaNextVideoAnyResVideoProcessor`]: frames -> shortest side 336 (bicubic, antialias) -> center
crop 336 -> CLIP normalisation, by default bit-equal to the original's per-frame PIL
``CLIPImageProcessor`` (a torch path is an option), with the original frame sampling rules of
``video_io`` (``linspace`` including the last frame, fps with a frame budget).

Why the class looks the way it does (transformers 5.19 machinery): ``BaseVideoProcessor`` inherits
``TorchvisionBackend`` and is marked as requiring torchvision; ``transformers.AutoVideoProcessor`` is
a dummy placeholder without torchvision. The real class lives in
``transformers.models.auto.video_processing_auto`` and is what ``ProcessorMixin`` uses to load a
``video_processor`` attribute. Its ``from_pretrained`` reads ``video_processor_type`` from
``processor_config.json`` (nested) or ``video_preprocessor_config.json`` and resolves the name through
the runtime registry for the requested backend (default key ``"torchvision"``, a plain dict key: no
torchvision import happens). So the video processor subclasses the torchvision-free
``VideoProcessorMixin`` (load/save/to_dict/from_dict) and is registered under the ``"torchvision"``
key (and ``"torch"``/``"pil"`` for callers that ask for those).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
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
)
from transformers.processing_utils import VideosKwargs
from transformers.utils import logging
from transformers.video_processing_utils import VideoProcessorMixin

from .errors import VideoLoadError
from .frame_sampling import sample_indices
from .image_processing import DEFAULT_IMAGE_SIZE
from .video_inputs import (
    check_frame_args,
    decode_video,
    flatten_videos,
    is_encoded,
    metadata_field,
    per_video_metadata,
    to_clip,
)

logger = logging.get_logger(__name__)


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
        check_frame_args("video processor setting ", self.num_frames, self.fps, self.max_frames)

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
        check_frame_args("", num_frames, fps, max_frames)
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
        total = metadata_field(metadata, "total_num_frames")
        if total is None:
            raise ValueError("metadata must give total_num_frames")
        source_fps = kwargs.get("source_fps") or metadata_field(metadata, "fps")
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
        metas = per_video_metadata(video_metadata, len(flat))
        asked = any(v is not None for v in (num_frames, fps, max_frames))
        if do_sample_frames is None:
            sample_arrays, sample_encoded = bool(self.do_sample_frames) or asked, True
        else:
            sample_arrays = sample_encoded = bool(do_sample_frames)
        sampling = self._sampling_args(num_frames, fps, max_frames)
        clips = []
        for i, (video, meta) in enumerate(zip(flat, metas, strict=True)):
            if is_encoded(video):
                # do_sample_frames=False: every frame, as transformers decodes without a sampler
                frames, info = decode_video(video, **(sampling if sample_encoded else {}))  # (T, H, W, 3)
                clips.append(to_clip(frames, i))
                if metadata_out is not None:
                    metadata_out.append(info.to_transformers())
                continue
            clip = to_clip(video, i)
            rate = source_fps if source_fps is not None else metadata_field(meta, "fps")
            n_source = int(clip.shape[0])
            idx = list(range(n_source))
            if sample_arrays:
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


__all__ = ["LlavaNextVideoAnyResVideoProcessor", "LlavaNextVideoAnyResVideoProcessorKwargs"]
