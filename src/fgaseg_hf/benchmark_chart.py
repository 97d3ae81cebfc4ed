"""A picture of a benchmark report: seconds per image against vocabulary size, drawn with Pillow."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

from .visualization import _font

# The original FGA-Seg's steady-state seconds per 512x683 image on this kind of machine (vitb_384_fast_cat, random
# weights, 2 threads, float32, medians of 5 runs after 2 warm-ups, each case in its own process; measured with the
# original code for this project).
ORIGINAL_IMAGE_SECONDS = {20: 2.58, 59: 3.32, 150: 4.82, 171: 5.71, 847: 18.8}
COLOURS = [(40, 90, 200), (30, 150, 90), (150, 60, 170), (200, 140, 20)]
ORIGINAL_COLOUR = (200, 60, 40)


def image_time_series(cases: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """`{label: [(classes, median seconds), ...]}` of the report's one-image cases, one series per preset and
    pruning mode, plus the original's figures when a ViT-B/16 preset's images were measured."""
    series: dict[str, list[tuple[int, float]]] = {}
    for case in cases:
        if case.get("kind") != "image" or "median_s" not in case:
            continue
        label = case["preset"] + (", the original's pruning counts" if case.get("fixed_kept_classes") else "")
        series.setdefault(label, []).append((case["classes"], case["median_s"]))
    if any(label.startswith("vitb_384") for label in series):
        series["original FGA-Seg (vitb_384_fast_cat)"] = sorted(ORIGINAL_IMAGE_SECONDS.items())
    return {label: sorted(points) for label, points in series.items()}


def plot_image_times(cases: list[dict], path, title: str = "seconds per image", size=(760, 400)) -> bool:
    """Draws the series of `image_time_series` (log-scaled vocabulary axis) as a PNG; False if there is none."""
    series = image_time_series(cases)
    if not any(len(points) for points in series.values()):
        return False
    width, height = size
    left, right, top, bottom = 60, 24, 40, 44 + 16 * len(series)
    plot_w, plot_h = width - left - right, height - top - bottom
    classes = [c for points in series.values() for c, _ in points]
    x0, x1 = math.log(min(classes)), math.log(max(classes))
    x1 = x1 if x1 > x0 else x0 + 1.0
    y1 = max(s for points in series.values() for _, s in points) * 1.08

    def to_xy(count, seconds):
        return left + (math.log(count) - x0) / (x1 - x0) * plot_w, top + plot_h - seconds / y1 * plot_h

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(120, 120, 120))
    for fraction in (0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - fraction)
        draw.line([left, y, left + plot_w, y], fill=(230, 230, 230))
        draw.text((left - 6, y), f"{y1 * fraction:.1f} s", fill="black", font=small, anchor="rm")
    last_label = -math.inf
    for count in sorted(set(classes)):
        x = to_xy(count, 0)[0]
        draw.line([x, top + plot_h, x, top + plot_h + 4], fill=(120, 120, 120))
        if x - last_label >= 28:  # neighbouring counts (150, 171) would print over each other
            draw.text((x, top + plot_h + 6), str(count), fill="black", font=small, anchor="ma")
            last_label = x
    for index, (label, points) in enumerate(series.items()):
        colour = ORIGINAL_COLOUR if label.startswith("original") else COLOURS[index % len(COLOURS)]
        xy = [to_xy(c, s) for c, s in points]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        legend_y = top + plot_h + 26 + 16 * index
        draw.line([left, legend_y + 6, left + 24, legend_y + 6], fill=colour, width=3)
        draw.text((left + 30, legend_y), label, fill="black", font=small)
    draw.text((left, 12), f"{title} (vocabulary size on a log scale)", fill="black", font=font)
    image.save(path)
    return True
