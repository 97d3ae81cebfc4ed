"""`fgaseg evaluate` (also `scripts/evaluate.py`): a model on benchmarks -> mIoU as JSON, Markdown and a model card.

    fgaseg evaluate --model outputs/my_run --benchmarks ade150,pc59 --root datasets --output eval.json

Protocols:
- "original" (default): what the original's `eval.sh` does for every benchmark: the image's shorter side resized to
  640 (longer side at most 2560, PIL bilinear as detectron2), the sliding window (the image squashed to the
  processor's `sliding_window_canvas`, crops of the CLIP resolution plus one global view), the original's
  pre/post-processing (`processing_mode="original"`), class attention without pooling (`POOLING_SIZES [1, 1]`), the
  model's prompt templates, names cut at their first ", ". Predictions are made at each label map's size.
- "whole": each image resized alone to the CLIP resolution (the processor's default mode), model as saved. Faster,
  not comparable with published numbers.

ITA models are evaluated with their own test-time pre-processing (shortest edge and size cap from their config, as
the original's detectron2 mapper) in either protocol: ITA has no sliding window and no pooling setting.

The reported mIoU follows detectron2's `SemSegEvaluator` (the published numbers): the mean over classes that have
ground-truth pixels in the split. The `evaluate` library's definition (every class with a non-empty union) is
reported beside it as `mIoU_evaluate`; both come from one streaming confusion matrix.

Under `accelerate launch` / `torchrun` every process evaluates its share of the images and the confusion matrices
are summed; the main process writes the files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .pipeline_fgaseg import has_sliding_window

PROTOCOLS = ("original", "whole")
# Hub dataset ids for the model-index of a card.
DATASET_TYPES = {
    "ade150": "scene_parse_150", "ade847": "ade20k_full", "pc59": "pascal_context", "pc459": "pascal_context",
    "voc20": "pascal_voc", "voc20b": "pascal_voc", "coco": "coco_stuff",
}
MIOU_DEFINITION = "detectron2: mean IoU over the classes with ground-truth pixels in the split"


class EvaluationError(ValueError):
    """A problem with the command's input, reported as one line."""


@dataclass
class EvaluationSettings:
    """How images are evaluated (see the module docs)."""

    protocol: str = "original"
    batch_size: int = 1
    limit: int | None = None
    min_size: int = 640
    max_size: int = 2560

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise EvaluationError(f"unknown protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if self.batch_size < 1:
            raise EvaluationError(f"batch size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise EvaluationError(f"limit must be at least 1, got {self.limit}")

    def describe(self, image_processor) -> dict[str, Any]:
        description: dict[str, Any] = {"name": self.protocol, "batch_size": self.batch_size}
        if self.protocol == "original" and has_sliding_window(image_processor):
            description.update(
                shortest_edge=self.min_size, max_size=self.max_size, sliding_window=True,
                sliding_window_canvas=list(image_processor.sliding_window_canvas),
                sliding_window_overlap=image_processor.sliding_window_overlap, pooling_size=[1, 1],
            )
        if self.limit is not None:
            description["limit"] = self.limit
        return description


def resize_shortest_edge(image: Image.Image, short: int, max_size: int) -> Image.Image:
    """detectron2's test-time `ResizeShortestEdge` (`resized_shape`) with PIL bilinear on the RGB image."""
    from .image_processing_ita import resized_shape

    height, width = resized_shape(image.height, image.width, short, max_size)
    image = image.convert("RGB")
    return image if (width, height) == image.size else image.resize((width, height), Image.BILINEAR)


def protocol_image_processor(image_processor, settings: EvaluationSettings):
    """A copy of the model's image processor set up for the protocol."""
    processor = type(image_processor).from_dict(image_processor.to_dict())
    if not has_sliding_window(processor):
        return processor
    if settings.protocol == "original":
        processor.processing_mode, processor.do_sliding_window = "original", True
    else:
        processor.processing_mode, processor.do_sliding_window = "default", False
    return processor


def chunks(items: Sequence[int], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def evaluate_benchmark(
    model, processor, dataset, spec, class_names: list[str], settings: EvaluationSettings,
    state=None, progress: bool = True,
):
    """Streams one benchmark through the model.

    Args:
        model: an `FGASegModel` (eval mode, on its device, pooling set for the protocol) or an `ITAModel`.
        processor: its processor (tokenizer, image processor); the image processor is set up here and the prompts
            follow the model's templates (`model.encode_vocabulary`).
        dataset: rows with `image` and `annotation` (`fgaseg_hf.data.benchmarks` loaders).
        spec: the benchmark's `BenchmarkSpec` (label mapping, ignore value, VOC-20b folding).
        class_names: the prompted names (`T` of them).
        state: an `accelerate.PartialState` (None: one process); each process takes every n-th image.

    Returns:
        `(ConfusionMatrix summed over processes, images evaluated by all processes)`.
    """
    from tqdm.auto import tqdm

    from .data.benchmarks import fold_predictions, to_class_ids
    from .metrics import ConfusionMatrix

    device, dtype = model.device, model.dtype
    image_processor = protocol_image_processor(processor.image_processor, settings)
    total = len(dataset) if settings.limit is None else min(settings.limit, len(dataset))
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    indices = list(range(total))[rank::world]
    confusion = ConfusionMatrix(spec.num_classes, ignore_index=spec.ignore_index, device=device)
    encoded = model.encode_vocabulary(processor.tokenizer, class_names)
    bar = tqdm(total=total, desc=spec.display_name, unit="image", disable=not progress or rank != 0)
    for batch in chunks(indices, settings.batch_size):
        rows = [dataset[i] for i in batch]
        labels = [to_class_ids(row["annotation"], spec) for row in rows]
        images = []
        for index, row, label in zip(batch, rows, labels):
            image = row["image"]
            if (image.height, image.width) != label.shape:
                name = row.get("id", index)
                raise EvaluationError(
                    f"{spec.display_name}: image {name} is {image.width}x{image.height} but its label map is "
                    f"{label.shape[1]}x{label.shape[0]}"
                )
            if settings.protocol == "original" and has_sliding_window(image_processor):
                image = resize_shortest_edge(image, settings.min_size, settings.max_size)
            images.append(image)
        inputs = image_processor(images, return_tensors="pt")
        names = [*image_processor.model_input_names, "pruning_groups"]
        model_inputs = {
            key: inputs[key].to(device, dtype) if inputs[key].is_floating_point() else inputs[key].to(device)
            for key in names if key in inputs
        }
        with torch.no_grad():
            outputs = model(**model_inputs, **encoded)
        predictions = image_processor.post_process_semantic_segmentation(
            outputs, target_sizes=[label.shape for label in labels]
        )
        for prediction, label in zip(predictions, labels):
            confusion.update(fold_predictions(prediction, spec), torch.from_numpy(label).to(device))
        bar.update(len(batch) * world)
    bar.close()
    return confusion.all_reduce(), total


def _name_map(names: list[str], values: np.ndarray) -> dict[str, float | None]:
    return {name: (None if math.isnan(v) else float(v)) for name, v in zip(names, values)}


def benchmark_record(key: str, confusion, images: int, seconds: float) -> tuple[dict, dict]:
    """`(card entry, details)` of one benchmark: the card's fields (`mIoU` and `per_class_iou` as fractions, the
    detectron2 definition) and every other number (fwIoU, mACC, pACC, the `evaluate` mIoU, per-class accuracy)."""
    from .data.benchmarks import get_spec, scored_class_names

    spec = get_spec(key)
    names = scored_class_names(key)
    d2 = confusion.compute_detectron2()
    standard = confusion.compute()
    entry = {
        "dataset_name": spec.display_name,
        "dataset_type": DATASET_TYPES.get(key, key),
        "split": "validation",
        "mIoU": float(d2["mean_iou"]),
        "per_class_iou": _name_map(names, d2["per_category_iou"]),
    }
    details = {
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 3) if seconds > 0 else None,
        "classes_with_ground_truth": int(d2["classes_with_ground_truth"]),
        "fwIoU": float(d2["frequency_weighted_iou"]),
        "mACC": float(d2["mean_accuracy"]),
        "pACC": float(d2["pixel_accuracy"]),
        "mIoU_evaluate": float(standard["mean_iou"]),
        "per_class_accuracy": _name_map(names, d2["per_category_accuracy"]),
    }
    return entry, details


def render_markdown(report: dict) -> str:
    """A Markdown summary: one row per benchmark (percentages), then the IoU of every class per benchmark."""

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
    for key, entry in report["results"].items():
        accuracy = report["details"][key]["per_class_accuracy"]
        lines += ["", f"## {entry['dataset_name']}: per class", "", "| class | IoU | accuracy |", "|---|---:|---:|"]
        lines += [f"| {name} | {pct(iou)} | {pct(accuracy[name])} |" for name, iou in entry["per_class_iou"].items()]
    return "\n".join(lines) + "\n"


def run_evaluation(
    model_location: str | None,
    benchmarks: Sequence[str],
    root: str | Path,
    settings: EvaluationSettings,
    device: str | None = None,
    dtype: str = "float32",
    progress: bool = True,
) -> dict:
    """Evaluates a model folder or Hub id on benchmarks in their prepared layouts under `root`; returns the report
    (`results`: card entries per benchmark, `details`: the other numbers, and how it was run)."""
    from accelerate import PartialState

    from .data.benchmarks import class_names, get_spec, load_benchmark
    from .segment import (
        load_model_and_processor,
        parse_device,
        parse_dtype,
        resolve_model_location,
    )

    specs = [get_spec(key) for key in benchmarks]
    if not specs:
        raise EvaluationError("no benchmark given")
    state = PartialState(cpu=device == "cpu")
    torch_device = parse_device(device) if device is not None else state.device
    torch_dtype = parse_dtype(dtype, torch_device)
    location = resolve_model_location(model_location)
    model, processor = load_model_and_processor(location, torch_dtype)
    model.to(torch_device)
    if settings.protocol == "original" and hasattr(model, "set_pooling_size"):  # FGA-Seg: POOLING_SIZES [1, 1]
        model.set_pooling_size((1, 1))
    loaded = [(spec, load_benchmark(spec.key, root)[0]) for spec in specs]  # every folder checked before any work
    report: dict[str, Any] = {
        "model": location,
        "protocol": settings.describe(processor.image_processor),
        "miou_definition": MIOU_DEFINITION,
        "device": str(torch_device),
        "dtype": dtype,
        "num_processes": state.num_processes,
        "results": {},
        "details": {},
    }
    for spec, dataset in loaded:
        start = time.perf_counter()
        confusion, images = evaluate_benchmark(
            model, processor, dataset, spec, class_names(spec.key), settings, state, progress
        )
        entry, details = benchmark_record(spec.key, confusion, images, time.perf_counter() - start)
        report["results"][spec.key] = entry
        report["details"][spec.key] = details
    return report


def write_outputs(report: dict, output: str | Path, markdown: str | Path | None, card: str | Path | None,
                  model_name: str | None) -> list[Path]:
    """Writes the JSON report, the Markdown table and a model card (front matter with the model-index)."""
    written = []
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    written.append(output)
    markdown = Path(markdown) if markdown else output.with_suffix(".md")
    markdown.write_text(render_markdown(report), encoding="utf-8")
    written.append(markdown)
    if card:
        from .model_card import parse_model_card, render_model_card

        name = model_name or Path(report["model"]).name
        text = render_model_card(report["model"], report["results"], model_name=name, repo_id=report["model"])
        parse_model_card(text)
        Path(card).write_text(text, encoding="utf-8")
        written.append(Path(card))
    return written


def build_parser() -> argparse.ArgumentParser:
    from .data.benchmarks import BENCHMARKS, EVAL_BENCHMARKS

    parser = argparse.ArgumentParser(prog="fgaseg evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model folder or Hub id (default: the embedded demo model)")
    parser.add_argument("--benchmarks", default=",".join(EVAL_BENCHMARKS),
                        help=f"comma-separated, from {', '.join(BENCHMARKS)} (default: %(default)s)")
    parser.add_argument("--root", default=None,
                        help="folder holding the prepared benchmarks (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--output", default="eval.json", help="JSON report (default: %(default)s)")
    parser.add_argument("--markdown", help="Markdown table (default: the JSON path with .md)")
    parser.add_argument("--card", help="also write a model card with these results to this path")
    parser.add_argument("--model-name", help="the card's model name (default: the model folder's name)")
    parser.add_argument("--protocol", default="original", choices=PROTOCOLS, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images of each benchmark")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: accelerate's device for this process)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from .segment import SegmentError

    args = build_parser().parse_args(argv)
    if args.device == "cpu":
        from .cpu_memory import keep_freed_memory

        keep_freed_memory()
    root = args.root or os.environ.get("DETECTRON2_DATASETS", "datasets")
    benchmarks = [key.strip() for key in args.benchmarks.split(",") if key.strip()]
    try:
        settings = EvaluationSettings(protocol=args.protocol, batch_size=args.batch_size, limit=args.limit)
        if args.card:
            from transformers import AutoConfig

            from .model_card import FAMILIES
            from .segment import resolve_model_location

            model_type = AutoConfig.from_pretrained(resolve_model_location(args.model)).model_type
            if model_type not in FAMILIES:
                titles = " and ".join(family.title for family in FAMILIES.values())
                raise EvaluationError(f"--card: model cards are written for {titles} models only, not {model_type!r}")
        report = run_evaluation(args.model, benchmarks, root, settings, device=args.device, dtype=args.dtype,
                                progress=not args.no_progress)
    except (EvaluationError, SegmentError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        written = write_outputs(report, args.output, args.markdown, args.card, args.model_name)
        for key, entry in report["results"].items():
            print(f"{entry['dataset_name']}: mIoU {100 * entry['mIoU']:.2f} ({report['details'][key]['images']} images)")
        print("wrote " + ", ".join(str(p) for p in written))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # An explicit, synchronised teardown: left to interpreter exit, gloo's threads can abort a process
        # ("terminate called without an active exception") while another is still shutting down.
        state.wait_for_everyone()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
