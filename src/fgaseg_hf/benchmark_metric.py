"""The `metric` cases of `fgaseg benchmark`: the streaming mean IoU against evaluate's own "mean_iou", side by side.

Every method sees the same maps: `images` random ``512 x 512`` label maps of the integer type label PNGs have
(``uint8``), references ``0..classes`` with 0 as background and some 255 rows, predictions ``0..classes-1``,
scored as evaluate users do, ``compute(num_labels=classes, ignore_index=255, reduce_labels=True)``. The maps are
made batch by batch (`batch` maps at a time, not timed), so what the process holds is what the metric holds.

Methods:

- ``streaming``: ``fgaseg_hf.metrics.load_streaming_mean_iou()`` (an `evaluate` module), ``add_batch`` per batch;
- ``peer``: ``evaluate.load(<--metric-peer>)``, the same calls (only when ``--metric-peer`` names the module);
- ``store_everything``: the standard algorithm written out (every map kept, per-image histograms), with no
  `evaluate` machinery, as a floor for what keeping the maps costs.

Reported per case: seconds spent in the metric's calls (wall and CPU time: on a shared machine the wall time also
measures the other load), the growth of the process's resident high-water mark over
the run (what the metric itself held at its peak), the counts' own size after the first batch and at the end
(``streaming``), and the mIoU.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

METHODS = ("streaming", "store_everything")


def plan_metric_cases(common: dict, args: Any) -> list[dict]:
    """The metric cases of a run: streaming and store-everything, plus the peer when its path is given."""
    methods = [*METHODS, "peer"] if getattr(args, "metric_peer", None) else list(METHODS)
    cases = []
    for method in methods:
        case = {**common, "kind": "metric", "method": method, "images": args.metric_images, "classes": 150,
                "batch": 4, "map_dtype": "uint8", "device": "cpu"}
        if method == "peer":
            case["peer"] = str(args.metric_peer)
        cases.append(case)
    return cases


def _maps(case: dict) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    rng = np.random.default_rng(0)
    classes, batch, remaining = case["classes"], case.get("batch", 4), case["images"]
    dtype = np.dtype(case.get("map_dtype", "uint8"))
    while remaining > 0:
        count = min(batch, remaining)
        remaining -= count
        references = rng.integers(0, classes + 1, (count, 512, 512), dtype=dtype)
        references[:, :8] = 255
        predictions = rng.integers(0, classes, (count, 512, 512), dtype=dtype)
        yield list(predictions), list(references)


def store_everything_miou(predictions, references, num_labels: int, ignore_index: int, reduce_labels=False) -> float:
    """The standard metric's algorithm: every map kept until the end, then per-image histograms."""
    intersect = np.zeros(num_labels)
    union = np.zeros(num_labels)
    for prediction, reference in zip(predictions, references):
        reference = np.array(reference)
        if reduce_labels:
            reference[reference == 0] = 255
            reference = reference - 1
            reference[reference == 254] = 255
        keep = reference != ignore_index
        prediction, reference = prediction[keep], reference[keep]
        hit = prediction[prediction == reference]
        area_intersect = np.histogram(hit, bins=num_labels, range=(0, num_labels - 1))[0]
        area_prediction = np.histogram(prediction, bins=num_labels, range=(0, num_labels - 1))[0]
        area_reference = np.histogram(reference, bins=num_labels, range=(0, num_labels - 1))[0]
        intersect += area_intersect
        union += area_prediction + area_reference - area_intersect
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(intersect / union))


def measure_metric(case: dict) -> dict:
    """Runs one metric case (see the module docs) in this process."""
    import warnings

    from .benchmark import _resident_high_water_mark

    settings = {"num_labels": case["classes"], "ignore_index": 255, "reduce_labels": True}
    cache = tempfile.mkdtemp(prefix="fgaseg-metric-")
    result: dict[str, Any] = {}
    try:
        method = case["method"]
        if method == "streaming":
            from .metrics import load_streaming_mean_iou

            metric = load_streaming_mean_iou(cache_dir=cache)
        elif method == "peer":
            import evaluate

            metric = evaluate.load(case["peer"], cache_dir=cache)
        elif method != "store_everything":
            raise ValueError(f"unknown metric method {method!r}")
        stored: list[tuple[np.ndarray, np.ndarray]] = []
        before = _resident_high_water_mark()
        seconds = cpu_seconds = 0.0
        for index, (predictions, references) in enumerate(_maps(case)):
            start, cpu_start = time.perf_counter(), time.process_time()
            if method == "store_everything":
                stored.extend(zip(predictions, references))
            else:
                metric.add_batch(predictions=predictions, references=references)
            seconds += time.perf_counter() - start
            cpu_seconds += time.process_time() - cpu_start
            if method == "streaming" and index == 0:
                result["state_bytes_after_first_batch"] = metric.counts.nbytes
        if method == "streaming":
            result["state_bytes_at_end"] = metric.counts.nbytes
        start, cpu_start = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "store_everything":
                miou = store_everything_miou([p for p, _ in stored], [r for _, r in stored], case["classes"], 255,
                                             reduce_labels=True)
            else:
                miou = float(metric.compute(**settings)["mean_iou"])
        seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu_start
        after = _resident_high_water_mark()
        result.update(seconds=seconds, cpu_seconds=cpu_seconds, mean_iou=miou, peak_memory_bytes=after)
        if before is not None and after is not None:
            result["memory_growth_bytes"] = after - before
        if method == "peer":
            result["peer"] = _describe_module(case["peer"])
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # a temporary folder this function made
    return result


def _describe_module(location: str) -> str:
    """The module by its folder name and script digest: a report names what ran, not where it lay."""
    import hashlib
    from pathlib import Path

    folder = Path(location)
    script = folder / f"{folder.name}.py"
    if not script.is_file():
        return folder.name
    return f"{folder.name} (script sha256 {hashlib.sha256(script.read_bytes()).hexdigest()[:16]})"


def summarise_metric(cases: list[dict]) -> dict:
    """The metric figures of a run's summary."""
    summary: dict[str, Any] = {}
    metric = {c["method"]: c for c in cases if c["kind"] == "metric" and "seconds" in c}
    if "streaming" in metric and "store_everything" in metric:
        summary["metric: streaming / store-everything time"] = (
            metric["streaming"]["seconds"] / metric["store_everything"]["seconds"]
        )
        difference = abs(metric["streaming"]["mean_iou"] - metric["store_everything"]["mean_iou"])
        summary["metric: same mIoU"] = difference < 1e-9
    if "streaming" in metric and "peer" in metric:
        summary["metric: peer / streaming time (speed-up)"] = metric["peer"]["seconds"] / metric["streaming"]["seconds"]
        # CPU time is what the metric itself spent: on a shared machine wall time also measures the other load.
        summary["metric: peer / streaming CPU time (speed-up)"] = (
            metric["peer"]["cpu_seconds"] / metric["streaming"]["cpu_seconds"]
        )
        summary["metric: same mIoU as the peer"] = metric["streaming"]["mean_iou"] == metric["peer"]["mean_iou"]
        ours, theirs = metric["streaming"].get("memory_growth_bytes"), metric["peer"].get("memory_growth_bytes")
        if ours is not None and theirs is not None:
            summary["metric: memory growth, peer / streaming (MiB)"] = f"{theirs / 2**20:.1f} / {ours / 2**20:.1f}"
    return summary


def render_metric_markdown(cases: list[dict]) -> list[str]:
    """Markdown lines of the metric table (none when the run had no metric case)."""
    metric = [c for c in cases if c["kind"] == "metric"]
    if not metric:
        return []

    def mib(value):
        return "-" if value is None else f"{value / 2**20:.1f}"

    lines = ["", "| mIoU method | maps | classes | map dtype | seconds | CPU seconds | memory growth MiB | counts KiB "
             "(first batch / end) | mIoU |", "|---|---:|---:|---|---:|---:|---:|---|---:|"]
    for c in metric:
        if "seconds" not in c:
            lines.append(f"| {c['method']} | {c['images']} | {c['classes']} | {c.get('map_dtype', 'int64')} | "
                         f"error: {c.get('error')} | - | - | - | - |")
            continue
        state = "-"
        if "state_bytes_at_end" in c:
            state = f"{c['state_bytes_after_first_batch'] / 1024:.0f} / {c['state_bytes_at_end'] / 1024:.0f}"
        lines.append(f"| {c['method']} | {c['images']} | {c['classes']} | {c.get('map_dtype', 'int64')} | "
                     f"{c['seconds']:.3f} | {c.get('cpu_seconds', float('nan')):.3f} | "
                     f"{mib(c.get('memory_growth_bytes'))} | {state} | {c['mean_iou']:.6f} |")
    return lines
