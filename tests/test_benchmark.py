"""`fgaseg benchmark`: one smoke run on the tiny config (the benchmark is not a test; its numbers live in the README)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fgaseg_hf.benchmark import main, store_everything_miou
from fgaseg_hf.metrics import ConfusionMatrix


def test_tiny_benchmark_writes_every_case(tmp_path):
    output = tmp_path / "bench.json"
    code = main(["--preset", "tiny", "--classes", "3,5", "--batch-sizes", "1,2", "--warmup", "0", "--repeats", "1",
                 "--sliding-window-classes", "3", "--training-classes", "4", "--metric-images", "2", "--no-isolate",
                 "--device", "cpu", "--output", str(output)])
    assert code == 0
    report = json.loads(output.read_text())
    kinds = [(c["kind"], c.get("classes"), c.get("batch_size")) for c in report["cases"]]
    for classes in (3, 5):
        assert ("text", classes, None) in kinds and ("image", classes, None) in kinds
        assert ("forward", classes, 1) in kinds and ("forward", classes, 2) in kinds
    assert ("sliding_window", 3, None) in kinds and ("train_step", 4, 1) in kinds
    for case in report["cases"]:
        assert "error" not in case
        if case["kind"] == "forward":
            assert case["images_per_s"] == pytest.approx(case["batch_size"] / case["median_s"])
        if case["kind"] != "metric":
            assert case["min_s"] <= case["median_s"] <= case["max_s"] and case["peak_memory_bytes"] > 0
    assert report["summary"]["metric: same mIoU"] is True
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["torch"] == torch.__version__
    table = output.with_suffix(".md").read_text()
    assert "| tiny | train_step | 4 | 1 | float32 |" in table and "| streaming | 2 | 150 |" in table


def test_tiny_ita_benchmark_runs_the_ita_cases(tmp_path):
    output = tmp_path / "bench.json"
    code = main(["--preset", "tiny_ita", "--classes", "3", "--batch-sizes", "2", "--warmup", "0", "--repeats", "1",
                 "--training-classes", "4", "--no-metric", "--no-isolate", "--device", "cpu", "--output", str(output)])
    assert code == 0
    cases = json.loads(output.read_text())["cases"]
    assert [(c["kind"], c.get("batch_size")) for c in cases] == [
        ("text", None), ("image", None), ("forward", 2), ("train_step", 1)
    ]  # no sliding window, no checkpointing variant
    assert all("error" not in c for c in cases)
    forward = cases[2]
    assert "kept_classes_per_image" not in forward and forward["images_per_s"] == pytest.approx(2 / forward["median_s"])
    train = cases[3]
    # Only ITA's head trains: CLIP is frozen.
    from fgaseg_hf.benchmark import build_model

    model = build_model("tiny_ita", torch.device("cpu"))
    head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("clip."))
    assert train["trainable_parameters"] == head < train["parameters"]


def test_store_everything_reference_equals_the_streaming_metric():
    rng = np.random.default_rng(1)
    predictions = [rng.integers(0, 6, (9, 7)) for _ in range(3)]
    references = [np.where(rng.random((9, 7)) < 0.2, 255, rng.integers(0, 5, (9, 7))) for _ in range(3)]
    confusion = ConfusionMatrix(6, ignore_index=255)
    for p, r in zip(predictions, references):
        confusion.update(torch.from_numpy(p), torch.from_numpy(r))
    assert store_everything_miou(predictions, references, 6, 255) == pytest.approx(float(confusion.compute()["mean_iou"]))
