"""Pictures of semantic-segmentation results: colour overlays with a legend, and lossless label maps.

The module itself needs only numpy and Pillow.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

PathLike = str | os.PathLike

_GOLDEN = 0.618033988749895
_CHUNK_PIXELS = 1 << 20  # blend about a million pixels at a time to bound memory on huge images


def class_colours(num_classes: int) -> np.ndarray:
    """Deterministic, visually distinct colours, shape (num_classes, 3), dtype uint8.

    Hues step by the golden ratio; saturation and value cycle with coprime periods so that
    neighbouring ids differ in brightness as well as hue.
    """
    if not 0 <= num_classes <= 1 << 24:
        raise ValueError(f"num_classes must lie in [0, 2**24], got {num_classes}")
    i = np.arange(num_classes)
    h = (i * _GOLDEN) % 1.0
    s = np.array([0.85, 0.55, 0.7])[i % 3]
    v = np.array([0.95, 0.7])[i % 2]
    sector = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    rgb = np.rint(table[sector, i] * 255).astype(np.int64)
    # Rounding to 8 bits can merge close hues. A repeat steps through 24-bit colour space with an odd
    # stride (a full cycle of 2**24), so the nudge is small and always finds a free colour.
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    seen: set[int] = set()
    for k in range(num_classes):
        while int(packed[k]) in seen:
            packed[k] = (packed[k] + 0x030507) % (1 << 24)
        seen.add(int(packed[k]))
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], -1).astype(np.uint8)


def coverage(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of pixels of each class id, shape (num_classes,), float64.

    Ids outside [0, num_classes) count in the denominator only.
    """
    label_map = np.asarray(label_map)
    if label_map.size == 0:
        raise ValueError("coverage of an empty label map is undefined")
    flat = label_map.ravel()
    valid = flat[(flat >= 0) & (flat < num_classes)].astype(np.int64)
    counts = np.bincount(valid, minlength=num_classes)[:num_classes]
    return counts / float(flat.size)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # no FreeType, or an old Pillow without size=
        return ImageFont.load_default()


def _check_label_map(label_map: np.ndarray) -> np.ndarray:
    label_map = np.asarray(label_map)
    if not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f"label map must hold integer class ids, got dtype {label_map.dtype}")
    if label_map.ndim != 2:
        raise ValueError(f"label map must be 2-D (H, W), got shape {label_map.shape}")
    return label_map


def _draw_legend(canvas: Image.Image, legend: list[dict]) -> None:
    """Draw a semi-opaque legend box in the top-left corner of `canvas` (RGB, in place), clipped to it."""
    width, height = canvas.size
    size = int(np.clip(round(min(width, height) * 0.03), 8, 64))
    font, pad = _font(size), max(2, size // 3)
    rows = [f"{entry['name']}  {100 * entry['fraction']:.1f}%" for entry in legend]
    text_h = max(font.getbbox("Ag%")[3], 1)
    row_h = text_h + pad
    text_w = max(font.getbbox(r)[2] for r in rows)
    box_w = pad + text_h + pad + text_w + pad
    box_h = pad + row_h * len(rows)
    # Draw on a small RGBA layer the size of the box, not the whole picture, then composite the visible part.
    layer = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 150))
    draw = ImageDraw.Draw(layer)
    for n, (entry, text) in enumerate(zip(legend, rows)):
        y = pad + n * row_h
        draw.rectangle([pad, y, pad + text_h - 1, y + text_h - 1], fill=tuple(entry["colour"]) + (255,),
                       outline=(255, 255, 255, 255))
        draw.text((2 * pad + text_h, y), text, font=font, fill=(255, 255, 255, 255))
    visible = (0, 0, min(box_w, width), min(box_h, height))
    region = canvas.crop(visible).convert("RGBA")
    region.alpha_composite(layer.crop(visible))
    canvas.paste(region.convert("RGB"), visible[:2])


def render_overlay(
    image: Image.Image, label_map: np.ndarray, class_names: list[str], alpha: float = 0.5
) -> tuple[Image.Image, list[dict]]:
    """Blend class colours over `image` (W x H) and draw a legend of the classes present.

    label_map: integer array (H, W) of ids in [0, len(class_names)). Each pixel becomes
    (rgb * (256 - a) + colour * a + 128) // 256 with a = round(alpha * 256); pixels whose right or
    lower neighbour has another class are then darkened to 60 % (value * 3 // 5).
    Returns the RGB overlay, same size as `image`, and the legend as a list of
    {"id", "name", "colour": [r, g, b], "fraction"} sorted by fraction, largest first.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    label_map = _check_label_map(label_map)
    rgb_image = image.convert("RGB")
    width, height = rgb_image.size
    if label_map.shape != (height, width):
        raise ValueError(
            f"label map shape {label_map.shape} does not match the image: "
            f"expected (height, width) = ({height}, {width})"
        )
    if label_map.size == 0:
        raise ValueError("cannot render an empty image")
    num_classes = len(class_names)
    low, high = int(label_map.min()), int(label_map.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"label map holds class ids in [{low}, {high}], outside [0, {num_classes}) for {num_classes} class names"
        )

    palette = class_colours(num_classes)
    ids = label_map  # validated ids index the palette directly; no wider copy of a huge map
    boundary = np.zeros((height, width), dtype=bool)
    boundary[:, :-1] |= ids[:, 1:] != ids[:, :-1]
    boundary[:-1, :] |= ids[1:, :] != ids[:-1, :]

    a = round(alpha * 256)
    pixels = np.asarray(rgb_image)
    out = np.empty((height, width, 3), dtype=np.uint8)
    counts = np.zeros(num_classes, dtype=np.int64)
    step = max(1, _CHUNK_PIXELS // width)
    for top in range(0, height, step):
        rows = slice(top, top + step)
        blended = (pixels[rows].astype(np.uint16) * (256 - a) + palette[ids[rows]].astype(np.uint16) * a + 128) >> 8
        edge = boundary[rows]
        blended[edge] = blended[edge] * 3 // 5
        out[rows] = blended
        counts += np.bincount(ids[rows].ravel().astype(np.intp), minlength=num_classes)

    fractions = counts / float(ids.size)
    present = np.flatnonzero(fractions > 0)
    order = present[np.lexsort((present, -fractions[present]))]
    legend = [
        {
            "id": int(k),
            "name": str(class_names[k]),
            "colour": [int(c) for c in palette[k]],
            "fraction": float(fractions[k]),
        }
        for k in order
    ]
    overlay = Image.fromarray(out)
    _draw_legend(overlay, legend)
    return overlay, legend


def save_overlay(path: PathLike, overlay: Image.Image, legend: list[dict]) -> None:
    """Write `overlay` as PNG with the legend as JSON in the text chunk "legend"."""
    info = PngInfo()
    info.add_text("legend", json.dumps(legend))
    overlay.save(path, format="PNG", pnginfo=info)


def save_label_map(path: PathLike, label_map: np.ndarray) -> None:
    """Write class ids (H, W) losslessly as PNG: mode "L" when every id < 256, else 16-bit "I;16"."""
    label_map = _check_label_map(label_map)
    if label_map.size == 0:
        raise ValueError("cannot save an empty label map")
    low, high = int(label_map.min()), int(label_map.max())
    if low < 0:
        raise ValueError(f"label map holds negative class ids (min {low}); PNG stores only ids >= 0")
    if high > 65535:
        raise ValueError(f"label map holds class id {high}, more than a 16-bit PNG can store")
    dtype = np.uint8 if high < 256 else np.uint16
    Image.fromarray(np.ascontiguousarray(label_map, dtype=dtype)).save(path, format="PNG")
