"""A picture of a training run (loss and eval mIoU against steps), drawn with Pillow from Trainer's log history."""

from __future__ import annotations

from PIL import Image, ImageDraw

from .visualization import _font


def curve_points(log_history: list[dict], key: str) -> list[tuple[float, float]]:
    return [(float(e["step"]), float(e[key])) for e in log_history if key in e and "step" in e]


def plot_training_curve(log_history: list[dict], path, title: str = "training", size=(720, 360)) -> None:
    """Training loss (left axis) and eval mIoU (right axis, 0..1) against steps, as a PNG."""
    width, height = size
    left, right, top, bottom = 64, 64, 36, 44
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    losses = curve_points(log_history, "loss")
    mious = curve_points(log_history, "eval_mean_iou")
    steps = [s for s, _ in losses + mious] or [0.0, 1.0]
    x0, x1 = 0.0, max(max(steps), 1.0)
    loss_max = max([v for _, v in losses] or [1.0]) * 1.05
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_xy(step, value, scale):
        return left + (step - x0) / (x1 - x0) * plot_w, top + plot_h - value / scale * plot_h

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(120, 120, 120))
    for fraction in (0.25, 0.5, 0.75):
        y = top + plot_h * (1 - fraction)
        draw.line([left, y, left + plot_w, y], fill=(230, 230, 230))
        draw.text((left - 8, y), f"{loss_max * fraction:.2f}", fill=(40, 90, 200), font=small, anchor="rm")
        draw.text((left + plot_w + 8, y), f"{fraction:.2f}", fill=(210, 90, 30), font=small, anchor="lm")
    for series, scale, colour in ((losses, loss_max, (40, 90, 200)), (mious, 1.0, (210, 90, 30))):
        points = [to_xy(s, v, scale) for s, v in series]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points if series is mious else []:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    draw.text((left, 10), title, fill="black", font=font)
    draw.text((left + plot_w, 10), "training loss", fill=(40, 90, 200), font=small, anchor="ra")
    draw.text((left + plot_w, 24), "eval mIoU", fill=(210, 90, 30), font=small, anchor="ra")
    draw.text((left + plot_w / 2, height - 14), f"step (0 to {int(x1)})", fill="black", font=small, anchor="mm")
    image.save(path)
