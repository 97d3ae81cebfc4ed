"""Training augmentation of the original recipe (detectron2's `mask_former_semantic` dataset mapper):

1. resize the shortest edge to a size drawn from `min_sizes` ("choice") or from the range they span ("range"),
   keeping the longest edge under `max_size`;
2. a random `crop_size` crop that is drawn again (up to 10 times) while one category covers more than
   `single_category_max_area` of its labelled pixels;
3. optional photometric jitter (SSD style: brightness, contrast, saturation, hue);
4. horizontal flip with probability 0.5;
5. padding of crops smaller than `crop_size` (image 0, label ignore).

Every random draw comes from the generator the caller passes: training derives it from (seed, epoch, sample index),
so a sample is augmented the same way whatever was loaded before it (data-loader prefetching, resuming from a
checkpoint, the number of processes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .image_processing_fgaseg import to_label_array, to_rgb_array


@dataclass
class AugmentationConfig:
    """Settings of `TrainingAugmentation` (the original's defaults for ViT-B/16 at 384 px)."""

    crop_size: int = 384
    min_sizes: list[int] = field(default_factory=lambda: [384])
    max_size: int = 1333
    sampling: str = "choice"  # "choice" or "range"
    single_category_max_area: float = 1.0
    color_jitter: bool = True
    flip: bool = True
    ignore_index: int = 255

    def __post_init__(self):
        if self.sampling not in ("choice", "range"):
            raise ValueError(f"augmentation sampling must be 'choice' or 'range', got {self.sampling!r}")
        if self.sampling == "range" and len(self.min_sizes) != 2:
            raise ValueError("augmentation sampling 'range' needs min_sizes = [low, high]")
        if self.crop_size < 1 or not self.min_sizes or min(self.min_sizes) < 1:
            raise ValueError("crop_size and min_sizes must be positive")
        if not 0 < self.single_category_max_area <= 1:
            raise ValueError("single_category_max_area must be in (0, 1]")


class TrainingAugmentation:
    """`(image, label map) -> (uint8 RGB array (S, S, 3), int64 label array (S, S))` with S = `crop_size`."""

    def __init__(self, config: AugmentationConfig | None = None, **overrides):
        self.config = config or AugmentationConfig(**overrides)

    def __call__(self, image, label, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        rgb = np.clip(to_rgb_array(image), 0, 255).astype(np.uint8)
        label = to_label_array(label)
        if label.shape != rgb.shape[:2]:
            raise ValueError(f"label map of size {label.shape} for an image of size {rgb.shape[:2]}")
        rgb, label = self._resize_shortest_edge(rgb, label, rng)
        rgb, label = self._crop(rgb, label, rng)
        if cfg.color_jitter:
            rgb = photometric_jitter(rgb, rng)
        if cfg.flip and rng.random() < 0.5:
            rgb, label = rgb[:, ::-1], label[:, ::-1]
        return self._pad(np.ascontiguousarray(rgb), np.ascontiguousarray(label))

    def _resize_shortest_edge(self, rgb, label, rng):
        cfg = self.config
        if cfg.sampling == "choice":
            short = int(cfg.min_sizes[rng.integers(len(cfg.min_sizes))])
        else:
            short = int(rng.integers(cfg.min_sizes[0], cfg.min_sizes[1] + 1))
        height, width = label.shape
        scale = short / min(height, width)
        if max(height, width) * scale > cfg.max_size:
            scale = cfg.max_size / max(height, width)
        size = (max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5)))
        if size == (width, height):
            return rgb, label
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
        label = np.asarray(Image.fromarray(label.astype(np.int32), mode="I").resize(size, Image.NEAREST)).astype(np.int64)
        return rgb, label

    def _crop(self, rgb, label, rng):
        cfg = self.config
        height, width = label.shape
        crop_h, crop_w = min(cfg.crop_size, height), min(cfg.crop_size, width)
        for _ in range(10):
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            window = label[top : top + crop_h, left : left + crop_w]
            if cfg.single_category_max_area >= 1.0:
                break
            counts = np.bincount(window[window != cfg.ignore_index].ravel())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < cfg.single_category_max_area:
                break
        return rgb[top : top + crop_h, left : left + crop_w], label[top : top + crop_h, left : left + crop_w]

    def _pad(self, rgb, label):
        size = self.config.crop_size
        if label.shape == (size, size):
            return rgb, label
        padded_rgb = np.zeros((size, size, 3), dtype=np.uint8)
        padded_label = np.full((size, size), self.config.ignore_index, dtype=np.int64)
        padded_rgb[: rgb.shape[0], : rgb.shape[1]] = rgb
        padded_label[: label.shape[0], : label.shape[1]] = label
        return padded_rgb, padded_label


def photometric_jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SSD-style colour jitter, each step with probability 0.5: brightness +-32, contrast x[0.5, 1.5] (before or
    after the HSV steps), saturation x[0.5, 1.5], hue +-18 degrees of 180."""
    image = rgb.astype(np.float32)
    if rng.random() < 0.5:
        image = image + rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5

    def contrast(x):
        return x * rng.uniform(0.5, 1.5) if rng.random() < 0.5 else x

    if contrast_first:
        image = contrast(image)
    hsv = np.asarray(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).convert("HSV")).astype(np.float32)
    if rng.random() < 0.5:
        hsv[:, :, 1] *= rng.uniform(0.5, 1.5)
    if rng.random() < 0.5:
        hsv[:, :, 0] = (hsv[:, :, 0] + rng.uniform(-18, 18) * 256.0 / 180.0) % 256.0
    image = np.asarray(Image.fromarray(np.clip(hsv, 0, 255).astype(np.uint8), mode="HSV").convert("RGB")).astype(np.float32)
    if not contrast_first:
        image = contrast(image)
    return np.clip(image, 0, 255).astype(np.uint8)
