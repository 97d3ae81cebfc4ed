"""The records, Markdown and files of `fgaseg evaluate` (see `fgaseg_hf.evaluation`)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

MIOU_DEFINITION = "detectron2: mean IoU over the classes with ground-truth pixels in the split"
ABSENT_CLASSES = (
    "A class with no ground-truth pixel in a split has no IoU (null). detectron2's mIoU (`mIoU`, the published "
    "number) leaves it out of the mean; evaluate's (`mIoU_evaluate`) leaves it out only when it is never predicted "
    "either, and otherwise counts its IoU as 0."
)


def _name_map(names: list[str], values: np.ndarray) -> dict[str, float | None]:
    return {name: (None if math.isnan(v) else float(v)) for name, v in zip(names, values)}


def label_statistics(counts, spec) -> dict[str, Any]:
    """What became of the reference pixels: scored, ignored (the benchmark's void value), or carrying a label id
    outside the class list (not scored either, and listed)."""
    from .data.benchmarks import to_class_ids

    values = counts.reference_values()
    raw = np.array(list(values), dtype=np.int64)
    pixels = np.array([values[v] for v in values.keys()], dtype=np.int64)
    class_ids = to_class_ids(raw, spec) if raw.size else raw
    not_a_class = class_ids == spec.ignore_index
    void = raw == spec.ignore_index  # the ignore value itself is void wherever it is written
    if spec.disk_ignore_value is not None:
        void |= raw == spec.disk_ignore_value
    outside = not_a_class & ~void
    return {
        "pixels_scored": int(pixels[~not_a_class].sum()),
        "pixels_ignored": int(pixels[not_a_class & void].sum()),
        "pixels_outside_class_list": int(pixels[outside].sum()),
        "label_ids_outside_class_list": {str(int(v)): int(n) for v, n in zip(raw[outside], pixels[outside])},
    }


def benchmark_record(source, confusion, images: int, seconds: float, labels: dict) -> tuple[dict, dict]:
    """`(card entry, details)` of one benchmark: the card's fields (`mIoU` and `per_class_iou` as fractions, the
    detectron2 definition) and every other number (fwIoU, mACC, pACC, the `evaluate` mIoU, per-class accuracy,
    pixels scored and ignored, label ids outside the class list, classes without ground truth)."""
    names = source.scored_names
    d2 = confusion.compute_detectron2()
    standard = confusion.compute()
    entry = {
        "dataset_name": source.spec.display_name,
        "dataset_type": source.dataset_type,
        "split": "validation",
        "mIoU": float(d2["mean_iou"]),
        "per_class_iou": _name_map(names, d2["per_category_iou"]),
    }
    has_reference = confusion.matrix.sum(dim=1).numpy() > 0
    details = {
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 3) if seconds > 0 else None,
        **labels,
        "classes_with_ground_truth": int(d2["classes_with_ground_truth"]),
        "classes_without_ground_truth": [name for name, present in zip(names, has_reference) if not present],
        "fwIoU": float(d2["frequency_weighted_iou"]),
        "mACC": float(d2["mean_accuracy"]),
        "pACC": float(d2["pixel_accuracy"]),
        "mIoU_evaluate": float(standard["mean_iou"]),
        "per_class_accuracy": _name_map(names, d2["per_category_accuracy"]),
    }
    return entry, details


def outside_ids_line(source, labels: dict) -> str | None:
    """The stderr warning for label ids outside the class list (None when there is none)."""
    outside = labels["label_ids_outside_class_list"]
    if not outside:
        return None
    ids = ", ".join(list(outside)[:10]) + (", ..." if len(outside) > 10 else "")
    return (
        f"warning: {source.spec.display_name}: {labels['pixels_outside_class_list']} pixels carry label ids outside "
        f"its {source.spec.num_classes} classes ({ids}); they were not scored (--strict refuses them)"
    )


def render_markdown(report: dict) -> str:
    """A Markdown summary: one row per benchmark (percentages), what was scored, then per-class IoU."""

    def pct(value):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"

    lines = [
        f"# Evaluation of `{report['model']}`", "",
        f"Protocol: `{report['protocol']['name']}`; {report['miou_definition']}; device {report['device']}, "
        f"{report['dtype']}, {report['num_processes']} process(es).", "",
        "| benchmark | images | mIoU | fwIoU | mACC | pACC | mIoU (evaluate) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, entry in report["results"].items():
        d = report["details"][key]
        lines.append(
            f"| {entry['dataset_name']} | {d['images']} | {pct(entry['mIoU'])} | {pct(d['fwIoU'])} | {pct(d['mACC'])} "
            f"| {pct(d['pACC'])} | {pct(d['mIoU_evaluate'])} |"
        )
    lines += ["", "| benchmark | pixels scored | pixels ignored | pixels with ids outside the classes | those ids "
              "| classes without ground truth |", "|---|---:|---:|---:|---|---:|"]
    for key, entry in report["results"].items():
        d = report["details"][key]
        ids = ", ".join(d["label_ids_outside_class_list"]) or "-"
        lines.append(f"| {entry['dataset_name']} | {d['pixels_scored']} | {d['pixels_ignored']} | "
                     f"{d['pixels_outside_class_list']} | {ids} | {len(d['classes_without_ground_truth'])} |")
    lines += ["", report.get("absent_classes", ABSENT_CLASSES)]
    for key, entry in report["results"].items():
        details = report["details"][key]
        accuracy = details["per_class_accuracy"]
        lines += ["", f"## {entry['dataset_name']}: per class", ""]
        if details["classes_without_ground_truth"]:
            lines += ["Without ground truth in this split: " + ", ".join(details["classes_without_ground_truth"]), ""]
        lines += ["| class | IoU | accuracy |", "|---|---:|---:|"]
        lines += [f"| {name} | {pct(iou)} | {pct(accuracy[name])} |" for name, iou in entry["per_class_iou"].items()]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    """Atomically: a temporary file beside `path`, then ``os.replace``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_outputs(report: dict, output: str | Path, markdown: str | Path | None, card: str | Path | None,
                  model_name: str | None) -> list[Path]:
    """Writes the JSON report, the Markdown table and a model card (front matter with the model-index)."""
    written = []
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    _write_text(output, json.dumps(report, indent=2) + "\n")
    written.append(output)
    markdown = Path(markdown) if markdown else output.with_suffix(".md")
    _write_text(markdown, render_markdown(report))
    written.append(markdown)
    if card:
        from .model_card import parse_model_card, render_model_card

        name = model_name or Path(report["model"]).name
        text = render_model_card(report["model"], report["results"], model_name=name, repo_id=report["model"])
        parse_model_card(text)
        _write_text(Path(card), text)
        written.append(Path(card))
    return written
