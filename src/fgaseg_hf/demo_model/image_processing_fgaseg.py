"""Image processor for FGA-Seg: any common image -> CLIP-normalised square input, and logits -> label maps.

Two processing modes:
- "default": each image alone is resized (antialiased bilinear) to the CLIP resolution; predictions are resized
  back to each image's size. Results never depend on the other images of a batch.
- "original": the original FGA-Seg code's pipeline, for parity and reproduction of published numbers: zero-pad
  the batch (after normalisation) to a common multiple of `size_divisibility`, squash the padded canvas to the CLIP
  resolution (bilinear, no antialias); afterwards the original's double sigmoid of fast-decoder outputs, its crop
  of the prediction to the input size (only effective below the prediction's resolution), and a bilinear resize.

Sliding-window inference (the original's `inference_sliding_window`, sizes configurable): the image is resized to
`sliding_window_canvas`, cut into `sliding_window_crop_size` crops (the original's 384 px whatever the backbone)
overlapping by `sliding_window_overlap`, plus the whole image resized to one crop as a last "global" view; every
view is then resized to the CLIP resolution (384 -> 336 for ViT-L/14, as the original). `preprocess` returns every
view and `pruning_groups` (one id per image, so the fast decoder's class pruning is pooled over an image's views),
and the post-processing folds the views back at the crop size.

Travels with saved models (remote code): imports only installed libraries.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PROCESSING_MODES = ("default", "original")
# The original cuts sliding-window crops of 384 px for every backbone (`inference_sliding_window`'s kernel default).
ORIGINAL_SLIDING_WINDOW_CROP = 384
# Upper bound on the elements of one band of resized class maps (post-processing of large images).
_BAND_ELEMENTS = 1 << 25


# --------------------------------------------------------------------------------------------- image conversion
def _channel_last(array: np.ndarray) -> np.ndarray:
    """`(H, W)`, `(H, W, C)` or `(C, H, W)` with C in 1..4 -> `(H, W, C)`."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image array must have 2 or 3 dimensions, got shape {tuple(array.shape)}")
    first, last = array.shape[0] in (1, 2, 3, 4), array.shape[-1] in (1, 2, 3, 4)
    if first and not last:
        return np.moveaxis(array, 0, -1)
    if last:
        return array
    raise ValueError(
        f"cannot tell the channel axis of an image array of shape {tuple(array.shape)}: expected (H, W), "
        "(H, W, C) or (C, H, W) with 1 to 4 channels"
    )


def _to_0_255(array: np.ndarray) -> np.ndarray:
    """Pixel values of any common dtype -> float32 on the 0..255 scale."""
    if array.dtype == np.bool_:
        return array.astype(np.float32) * 255.0
    if array.dtype == np.uint8:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError("integer images must hold values in 0..255 (8-bit) or 0..65535 (16-bit)")
        # 16-bit data (uint16, or PIL's 32-bit "I" mode from 16-bit PNGs) unless every value fits 8 bits.
        is_16bit = array.dtype.itemsize >= 2 and (array.dtype == np.uint16 or (array.size and array.max() > 255))
        return array.astype(np.float32) / 257.0 if is_16bit else array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError("the image contains NaN or infinite values")
        # Float images in [0, 1] (the torch/PIL-to-tensor convention) are rescaled; others are taken as 0..255.
        if array.size and array.min() >= 0.0 and array.max() <= 1.0:
            return array * 255.0
        return np.clip(array, 0.0, 255.0)
    raise TypeError(f"unsupported image dtype {array.dtype}")


def to_rgb_array(image) -> np.ndarray:
    """A PIL image (any mode; EXIF orientation applied), numpy array or torch tensor -> `(H, W, 3)` float32 RGB
    on the 0..255 scale. Alpha is dropped (not composited); grey levels are repeated on the three channels."""
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.width == 0 or image.height == 0:
            raise ValueError(f"the image has zero size ({image.width}x{image.height})")
        if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
            array = np.asarray(image)
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("="))
        else:
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            array = np.asarray(image.convert("RGB"))
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        array = (tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor).numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"images must be PIL images, numpy arrays or torch tensors, got {type(image).__name__}")
    array = _channel_last(np.asarray(array))
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"the image has zero size ({array.shape[1]}x{array.shape[0]})")
    array = _to_0_255(array)
    channels = array.shape[2]
    if channels in (1, 2):  # grey (+ alpha)
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif channels == 4:  # RGBA: drop alpha
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def original_sizes_of(outputs) -> list[tuple[int, int]] | None:
    """The input images' `(H, W)` that a model output carries as `original_sizes` (what `preprocess` returns and the
    model's `forward` passes on), or None when absent."""
    value = outputs.get("original_sizes") if hasattr(outputs, "get") else getattr(outputs, "original_sizes", None)
    if value is None:
        return None
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.reshape(-1, 2).tolist()
    return [(int(h), int(w)) for h, w in value]


def image_size(image) -> tuple[int, int]:
    """`(height, width)` of an image as `to_rgb_array` will see it (EXIF rotations by 90 degrees swap the sides)."""
    if isinstance(image, Image.Image):
        swapped = image.getexif().get(0x0112) in (5, 6, 7, 8)
        return (image.width, image.height) if swapped else (image.height, image.width)
    shape = _channel_last(np.broadcast_to(np.empty((), np.uint8), tuple(image.shape))).shape
    return int(shape[0]), int(shape[1])


def to_label_array(segmentation_map) -> np.ndarray:
    """A label map (PIL "L"/"P"/"I"/"I;16" holding class ids, numpy or torch integers) -> `(H, W)` int64."""
    if isinstance(segmentation_map, Image.Image):
        if segmentation_map.mode not in ("L", "P", "I", "I;16", "I;16L", "I;16B", "1"):
            raise ValueError(
                f"a segmentation map must be a single-channel image of class ids (mode L, P, I or I;16), got mode "
                f"{segmentation_map.mode}"
            )
        array = np.asarray(segmentation_map)
    elif isinstance(segmentation_map, torch.Tensor):
        array = segmentation_map.detach().cpu().numpy()
    elif isinstance(segmentation_map, np.ndarray):
        array = segmentation_map
    else:
        raise TypeError(
            f"segmentation maps must be PIL images, numpy arrays or torch tensors, got {type(segmentation_map).__name__}"
        )
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
    if array.ndim != 2:
        raise ValueError(f"a segmentation map must be 2-D (height, width), got shape {tuple(array.shape)}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError("a segmentation map must hold integer class ids, got non-integer values")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise TypeError(f"unsupported segmentation map dtype {array.dtype}")
    return array.astype(np.int64)


def reduce_label_ids(label: np.ndarray, ignore_index: int) -> np.ndarray:
    """ADE20K-style raw annotations (0 = "other"): 0 becomes the ignore index, every other id drops by one, and the
    ignore index stays the ignore index."""
    reduced = np.where(label == 0, ignore_index, label - 1)
    reduced[reduced == ignore_index - 1] = ignore_index
    return reduced


def _as_list(items) -> list:
    """One image (or label map) or a list / 4-D batch of them -> a list."""
    if isinstance(items, (list, tuple)):
        return list(items)
    if isinstance(items, np.ndarray) and items.ndim == 4 or isinstance(items, torch.Tensor) and items.dim() == 4:
        return list(items)
    return [items]


# --------------------------------------------------------------------------------------------- geometry
def bilinear_matrix(out_size: int, in_size: int) -> torch.Tensor:
    """`(out_size, in_size)` weights of 1-D bilinear resizing with `align_corners=False`: `F.interpolate` of the unit
    vectors, so the weights are exactly the ones PyTorch's kernel uses (re-deriving them in Python differed by ~1e-5)."""
    basis = torch.eye(in_size, dtype=torch.float32)[:, None, :]  # (in_size, 1, in_size)
    return F.interpolate(basis, size=out_size, mode="linear", align_corners=False)[:, 0, :].T.contiguous()


def resized_argmax(maps: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax over classes of `maps` `(T, h, w)` bilinearly resized to `size`, and each class's summed value over
    its own pixels; in row bands, so that `(T, H, W)` never exists at once for large images."""
    height, width = size
    maps = maps.float()
    num_classes = maps.shape[0]
    # A resized value is a convex combination of the same neighbours for every class, so a class whose highest value
    # lies below another class's lowest one never wins anywhere (the margin covers rounding). Pruned classes (flat
    # at the lowest probability) and hopeless ones are left out before the expensive resize.
    flat = maps.flatten(1)
    floor = flat.amin(dim=1).max()
    candidates = (flat.amax(dim=1) * (1 + 1e-5) + 1e-30 >= floor).nonzero().squeeze(1)
    if candidates.numel() < num_classes:
        maps = maps[candidates]
    rows, cols = bilinear_matrix(height, maps.shape[1]).to(maps.device), bilinear_matrix(width, maps.shape[2]).to(maps.device)
    half = torch.einsum("tyx,Xx->tyX", maps, cols)  # (T, h, W)
    band = max(1, _BAND_ELEMENTS // max(1, maps.shape[0] * width))
    labels = torch.empty(height, width, dtype=torch.long, device=maps.device)
    score_sums = torch.zeros(num_classes, dtype=torch.float64, device=maps.device)
    for start in range(0, height, band):
        block = torch.einsum("Yy,tyX->tYX", rows[start : start + band], half)
        best, index = block.max(dim=0)
        index = candidates[index]
        labels[start : start + band] = index
        score_sums.index_add_(0, index.flatten(), best.flatten().double())
    return labels, score_sums


def window_starts(canvas: int, kernel: int, stride: int) -> list[int]:
    """Crop offsets covering `canvas`: every `stride`, plus a last crop flush with the border if needed."""
    starts = list(range(0, canvas - kernel + 1, stride))
    if starts[-1] + kernel < canvas:
        starts.append(canvas - kernel)
    return starts


# --------------------------------------------------------------------------------------------- processor
class FGASegImageProcessor(BaseImageProcessor):
    r"""
    Prepares images (and optional label maps) for `FGASegModel` and turns its logits into label maps.

    Args:
        image_size (`int`, *optional*, defaults to 384): the model's CLIP input resolution (square).
        image_mean (`list[float]`, *optional*): per-channel mean on the 0..1 scale (CLIP's).
        image_std (`list[float]`, *optional*): per-channel standard deviation on the 0..1 scale (CLIP's).
        processing_mode (`str`, *optional*, defaults to "default"): "default" or "original" (see the module docs).
        size_divisibility (`int`, *optional*, defaults to 32): padding multiple of the "original" mode.
        fast_decoder (`bool`, *optional*, defaults to `True`): the model uses the fast decoder, whose outputs the
            original passes through a second sigmoid ("original" mode only).
        do_reduce_labels (`bool`, *optional*, defaults to `False`): label 0 becomes the ignore index and every other
            label is decreased by one (ADE20K's raw annotations, where 0 is "other").
        ignore_index (`int`, *optional*, defaults to 255): label of unlabelled pixels.
        do_sliding_window (`bool`, *optional*, defaults to `False`): sliding-window inference.
        sliding_window_canvas (`list[int]`, *optional*, defaults to `[640, 640]`): size the image is resized to
            before cutting crops.
        sliding_window_overlap (`float`, *optional*, defaults to 0.333): overlap of neighbouring crops.
        sliding_window_crop_size (`int`, *optional*): side of the crops cut from the canvas, each then resized to
            `image_size`. Default: the original's 384 px (also for ViT-L/14 at 336 px), or `image_size` when the
            canvas is smaller than 384 px (tiny models with small canvases).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_size: int = 384,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        processing_mode: str = "default",
        size_divisibility: int = 32,
        fast_decoder: bool = True,
        do_reduce_labels: bool = False,
        ignore_index: int = 255,
        do_sliding_window: bool = False,
        sliding_window_canvas: list[int] | tuple[int, int] = (640, 640),
        sliding_window_overlap: float = 0.333,
        sliding_window_crop_size: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.image_mean = list(image_mean if image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(image_std if image_std is not None else OPENAI_CLIP_STD)
        self.processing_mode = processing_mode
        self.size_divisibility = int(size_divisibility)
        self.fast_decoder = bool(fast_decoder)
        self.do_reduce_labels = bool(do_reduce_labels)
        self.ignore_index = int(ignore_index)
        self.do_sliding_window = bool(do_sliding_window)
        self.sliding_window_canvas = [int(v) for v in sliding_window_canvas]
        self.sliding_window_overlap = float(sliding_window_overlap)
        self.sliding_window_crop_size = int(sliding_window_crop_size) if sliding_window_crop_size is not None else None
        self._check_settings(self.processing_mode, self.do_sliding_window)

    @classmethod
    def from_model_config(cls, config, **kwargs) -> "FGASegImageProcessor":
        """The processor matching an `FGASegConfig` (resolution and decoder)."""
        return cls(image_size=config.clip_resolution, fast_decoder=config.decoder_mode == "fast", **kwargs)

    # ----------------------------------------------------------------- settings
    def _check_settings(self, mode: str, sliding_window: bool) -> None:
        if mode not in PROCESSING_MODES:
            raise ValueError(f"processing_mode must be one of {PROCESSING_MODES}, got {mode!r}")
        if self.image_size < 1 or len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_size must be positive and image_mean / image_std must have 3 values")
        if sliding_window:
            canvas, kernel = self.sliding_window_canvas, self.crop_size
            if kernel < 1:
                raise ValueError(f"sliding_window_crop_size must be positive, got {kernel}")
            if len(canvas) != 2 or min(canvas) < kernel:
                raise ValueError(
                    f"sliding_window_canvas must be two sizes >= the crop size ({kernel}: sliding_window_crop_size), "
                    f"got {canvas}"
                )
            if not 0.0 <= self.sliding_window_overlap < 1.0:
                raise ValueError(f"sliding_window_overlap must be in [0, 1), got {self.sliding_window_overlap}")

    @property
    def crop_size(self) -> int:
        """Side of the sliding-window crops (see `sliding_window_crop_size`)."""
        if self.sliding_window_crop_size is not None:
            return self.sliding_window_crop_size
        if min(self.sliding_window_canvas) >= ORIGINAL_SLIDING_WINDOW_CROP:
            return ORIGINAL_SLIDING_WINDOW_CROP
        return self.image_size

    def _stride(self) -> int:
        return max(1, int(self.crop_size * (1 - self.sliding_window_overlap)))

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(3, 1, 1) * 255.0
        std = torch.tensor(self.image_std, dtype=torch.float32).view(3, 1, 1) * 255.0
        return (image - mean) / std

    @staticmethod
    def _resize(image: torch.Tensor, size, antialias: bool) -> torch.Tensor:
        size = tuple(int(s) for s in size)
        if tuple(image.shape[-2:]) == size:
            return image
        downscale = antialias and (image.shape[-2] > size[0] or image.shape[-1] > size[1])
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=downscale)[0]

    # ----------------------------------------------------------------- preprocessing
    def preprocess(
        self,
        images,
        segmentation_maps=None,
        return_tensors: str | None = "pt",
        processing_mode: str | None = None,
        do_sliding_window: bool | None = None,
        do_reduce_labels: bool | None = None,
    ) -> BatchFeature:
        """
        Args:
            images: one image or a list (PIL images in any mode, numpy arrays or torch tensors, `(H, W)`,
                `(H, W, C)` or `(C, H, W)`; integer or float pixels).
            segmentation_maps: optional label maps of the same sizes (class ids); returned as `labels`.
        Returns:
            `BatchFeature` with `pixel_values` `(B, 3, S, S)` (`(B * V, 3, S, S)` with the sliding window, plus
            `pruning_groups` `(B * V,)`; V = `num_views_per_image()`, the crops plus the whole image, 5 for the
            default canvas; the model's `logits` then have V rows per image too, which the `post_process_*`
            methods fold back into one map per image), `original_sizes` `(B, 2)` (each input image's `(H, W)`: the
            models pass it on to their outputs, where the `post_process_*` methods take it as the default
            `target_sizes`, so that `model(**inputs)` gives maps at the input images' sizes, sliding window or not)
            and, with maps, `labels`: `(B, S, S)` in "default" mode (nearest resize along with the image), the maps
            padded with the ignore index to the padded canvas in "original" mode.
        """
        mode = processing_mode or self.processing_mode
        sliding = self.do_sliding_window if do_sliding_window is None else do_sliding_window
        reduce_labels = self.do_reduce_labels if do_reduce_labels is None else do_reduce_labels
        self._check_settings(mode, sliding)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        images = [torch.from_numpy(to_rgb_array(i)).permute(2, 0, 1) for i in _as_list(images)]
        if not images:
            raise ValueError("no images given")
        data = {"original_sizes": torch.tensor([tuple(i.shape[1:]) for i in images], dtype=torch.long)}
        if sliding:
            views = [self._sliding_window_views(image, antialias=mode == "default") for image in images]
            data["pixel_values"] = torch.cat(views)
            data["pruning_groups"] = torch.arange(len(views)).repeat_interleave(views[0].shape[0])
        elif mode == "original":
            data["pixel_values"] = self._original_batch(images)
        else:
            size = (self.image_size, self.image_size)
            data["pixel_values"] = torch.stack([self._resize(self._normalise(i), size, antialias=True) for i in images])
        if segmentation_maps is not None:
            data["labels"] = self._prepare_labels(_as_list(segmentation_maps), images, mode, reduce_labels)
        if return_tensors == "np":
            data = {k: v.numpy() for k, v in data.items()}
        return BatchFeature(data=data)

    def _canvas_size(self, images: list[torch.Tensor]) -> tuple[int, int]:
        divisor = self.size_divisibility
        height = max(i.shape[1] for i in images)
        width = max(i.shape[2] for i in images)
        return -(-height // divisor) * divisor, -(-width // divisor) * divisor

    def _original_batch(self, images: list[torch.Tensor]) -> torch.Tensor:
        # detectron2's ImageList: zero padding *after* normalisation, bottom/right, to a common canvas.
        height, width = self._canvas_size(images)
        canvas = torch.zeros(len(images), 3, height, width)
        for index, image in enumerate(images):
            canvas[index, :, : image.shape[1], : image.shape[2]] = self._normalise(image)
        size = (self.image_size, self.image_size)
        return F.interpolate(canvas, size=size, mode="bilinear", align_corners=False)

    def _sliding_window_views(self, image: torch.Tensor, antialias: bool) -> torch.Tensor:
        kernel, stride = self.crop_size, self._stride()
        canvas = self._resize(image, self.sliding_window_canvas, antialias)
        crops = [
            canvas[:, top : top + kernel, left : left + kernel]
            for top in window_starts(canvas.shape[1], kernel, stride)
            for left in window_starts(canvas.shape[2], kernel, stride)
        ]
        crops.append(self._resize(image, (kernel, kernel), antialias))
        views = self._normalise(torch.stack(crops))
        if kernel != self.image_size:
            # The original normalises the crops, then resizes them to the CLIP resolution.
            size = (self.image_size, self.image_size)
            views = torch.stack([self._resize(view, size, antialias) for view in views])
        return views

    def _prepare_labels(self, maps, images, mode: str, reduce_labels: bool) -> torch.Tensor:
        if len(maps) != len(images):
            raise ValueError(f"got {len(images)} images but {len(maps)} segmentation maps")
        labels = []
        for index, (label_map, image) in enumerate(zip(maps, images)):
            label = to_label_array(label_map)
            if tuple(label.shape) != tuple(image.shape[1:]):
                raise ValueError(
                    f"segmentation map {index} has size {tuple(label.shape)} but its image has {tuple(image.shape[1:])}"
                )
            if reduce_labels:
                label = reduce_label_ids(label, self.ignore_index)
            labels.append(torch.from_numpy(label))
        if mode == "original":
            height, width = self._canvas_size(images)
            out = torch.full((len(labels), height, width), self.ignore_index, dtype=torch.long)
            for index, label in enumerate(labels):
                out[index, : label.shape[0], : label.shape[1]] = label
            return out
        size = (self.image_size, self.image_size)
        return torch.stack(
            [F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0].long() for label in labels]
        )

    # ----------------------------------------------------------------- post-processing
    def _split_views(self, logits: torch.Tensor, sliding: bool) -> list[torch.Tensor]:
        if not sliding:
            return list(logits)
        per_image = self.num_views_per_image()
        if logits.shape[0] % per_image:
            raise ValueError(
                f"sliding-window post-processing expects {per_image} views per image, got {logits.shape[0]} outputs"
            )
        return list(logits.unflatten(0, (-1, per_image)))

    def num_views_per_image(self) -> int:
        """Views per image in sliding-window mode (crops + the global view)."""
        kernel, stride = self.crop_size, self._stride()
        rows = len(window_starts(self.sliding_window_canvas[0], kernel, stride))
        cols = len(window_starts(self.sliding_window_canvas[1], kernel, stride))
        return rows * cols + 1

    def _head_probabilities(self, logits: torch.Tensor, mode: str) -> torch.Tensor:
        probs = torch.sigmoid(logits.float())
        if mode == "original" and self.fast_decoder:
            # The original's fast decoder already applies a sigmoid (pruned classes: exactly 0), then FGASeg
            # applies another: kept classes land in (0.5, 0.73), pruned ones at exactly 0.5.
            probs = torch.sigmoid(probs)
        return probs

    def _merge_views(self, view_logits: torch.Tensor, mode: str) -> torch.Tensor:
        """`(V, T, h, w)` logits of one image's views -> `(T, canvas_h, canvas_w)` probabilities.

        Classes whose logits are one same constant in every view (the classes pruned for this image: pruning is
        pooled over its views) all merge into the same map, so it is computed once and copied: at 847 classes this
        spares most of the work and memory."""
        flat = view_logits.transpose(0, 1).flatten(1)
        low, high = flat.amin(dim=1), flat.amax(dim=1)
        constant = low == high
        shared = constant & (low == low[constant.int().argmax()])  # constant with the first constant's value
        if int(shared.sum()) < 2:
            return self._merge_view_maps(view_logits, mode)
        others = (~shared).nonzero().squeeze(1)
        merged = self._merge_view_maps(view_logits[:, torch.cat([others, shared.nonzero()[:1, 0]])], mode)
        out = merged[-1:].expand(view_logits.shape[1], -1, -1).clone()
        out[others] = merged[:-1]
        return out

    def _merge_view_maps(self, view_logits: torch.Tensor, mode: str) -> torch.Tensor:
        kernel, stride = self.crop_size, self._stride()
        logits = view_logits.float()
        if mode == "original":
            head = torch.sigmoid(logits) if self.fast_decoder else logits
            views = torch.sigmoid(F.interpolate(head, size=(kernel, kernel), mode="bilinear", align_corners=False))
        else:
            views = F.interpolate(torch.sigmoid(logits), size=(kernel, kernel), mode="bilinear", align_corners=False)
        height, width = self.sliding_window_canvas
        total = torch.zeros(views.shape[1], height, width, device=views.device)
        count = torch.zeros(1, height, width, device=views.device)
        positions = [(t, l) for t in window_starts(height, kernel, stride) for l in window_starts(width, kernel, stride)]
        for view, (top, left) in zip(views[:-1], positions):
            total[:, top : top + kernel, left : left + kernel] += view
            count[:, top : top + kernel, left : left + kernel] += 1
        whole = F.interpolate(views[-1:], size=(height, width), mode="bilinear", align_corners=False)[0]
        return (total / count + whole) / 2

    def _per_image_maps(self, outputs, target_sizes, image_sizes, processing_mode, do_sliding_window):
        """Per image: `(T, h, w)` probability map and the crop that "original" mode applies before resizing."""
        mode = processing_mode or self.processing_mode
        sliding = self.do_sliding_window if do_sliding_window is None else do_sliding_window
        self._check_settings(mode, sliding)
        logits = outputs.logits if hasattr(outputs, "logits") else outputs["logits"]
        views = self._split_views(logits.detach(), sliding)
        if target_sizes is None:
            target_sizes = original_sizes_of(outputs)
        if target_sizes is not None and len(target_sizes) != len(views):
            raise ValueError(f"got {len(target_sizes)} target sizes for {len(views)} images")
        if image_sizes is not None and len(image_sizes) != len(views):
            raise ValueError(f"got {len(image_sizes)} image sizes for {len(views)} images")
        maps = []
        for index, item in enumerate(views):
            probs = self._merge_views(item, mode) if sliding else self._head_probabilities(item, mode)
            if mode == "original" and not sliding:
                # detectron2's sem_seg_postprocess crops to the unpadded input size, in prediction pixels.
                size = (image_sizes or target_sizes or [probs.shape[1:]] * len(views))[index]
                probs = probs[:, : int(size[0]), : int(size[1])]
            target = tuple(int(s) for s in target_sizes[index]) if target_sizes is not None else tuple(probs.shape[1:])
            maps.append((probs, target))
        return maps

    def post_process_probabilities(
        self, outputs, target_sizes=None, image_sizes=None, processing_mode=None, do_sliding_window=None
    ) -> list[torch.Tensor]:
        """
        Per-class probability maps, `(T, H, W)` per image (what the original returns as `sem_seg` in "original"
        mode). `target_sizes`: `(H, W)` per image (default: `outputs.original_sizes`, the input images' sizes that
        `preprocess` returns and the model passes on; without them, the model's output resolution, or the
        sliding-window canvas). `image_sizes`: the sizes of the images given to `preprocess` ("original" mode's
        crop; default: `target_sizes`).
        """
        maps = self._per_image_maps(outputs, target_sizes, image_sizes, processing_mode, do_sliding_window)
        return [
            probs if tuple(probs.shape[1:]) == size
            else F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
            for probs, size in maps
        ]

    def post_process_semantic_segmentation(
        self, outputs, target_sizes=None, image_sizes=None, processing_mode=None, do_sliding_window=None
    ) -> list[torch.Tensor]:
        """`(H, W)` class-id maps (`torch.long`), one per image, at `target_sizes` (see
        `post_process_probabilities`); large sizes are processed in bands, never as a full `(T, H, W)` tensor."""
        maps = self._per_image_maps(outputs, target_sizes, image_sizes, processing_mode, do_sliding_window)
        return [resized_argmax(probs, size)[0] for probs, size in maps]

    def post_process_panoptic_segmentation(
        self,
        outputs,
        threshold: float | None = None,
        mask_threshold: float | None = None,
        overlap_mask_area_threshold: float | None = None,
        label_ids_to_fuse=None,
        target_sizes=None,
        image_sizes=None,
        processing_mode=None,
        do_sliding_window=None,
    ) -> list[dict]:
        """Semantic segmentation as segments, one per class present ("stuff" only), so that the image-segmentation
        pipeline reports a score per class: `{"segmentation": (H, W) class ids, "segments_info": [{"id",
        "label_id", "was_fused", "score"}]}` with `id == label_id` and `score` the class's mean probability over
        its pixels. The Mask2Former-style thresholds are accepted for pipeline compatibility and not used."""
        maps = self._per_image_maps(outputs, target_sizes, image_sizes, processing_mode, do_sliding_window)
        results = []
        for probs, size in maps:
            labels, score_sums = resized_argmax(probs, size)
            counts = torch.bincount(labels.flatten(), minlength=probs.shape[0])
            present = counts.nonzero().flatten().tolist()
            info = [
                {"id": c, "label_id": c, "was_fused": False, "score": round(float(score_sums[c] / counts[c]), 6)}
                for c in present
            ]
            results.append({"segmentation": labels, "segments_info": info})
        return results

# Shared with the ITA image processor (which imports them: the files travel together as remote code).
as_image_list = _as_list
BAND_ELEMENTS = _BAND_ELEMENTS

__all__ = [
    "BAND_ELEMENTS", "FGASegImageProcessor", "OPENAI_CLIP_MEAN", "ORIGINAL_SLIDING_WINDOW_CROP", "OPENAI_CLIP_STD", "as_image_list", "bilinear_matrix",
    "image_size", "original_sizes_of", "reduce_label_ids", "resized_argmax", "to_label_array", "to_rgb_array",
]
