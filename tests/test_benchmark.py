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
    assert output.with_suffix(".png").is_file()  # the seconds-per-image chart
    assert "| tiny | train_step | 4 | - | 1 | float32 |" in table and "| streaming | 2 | 150 |" in table
    forward = next(c for c in report["cases"] if c["kind"] == "forward" and c["classes"] == 5)
    assert len(forward["kept_classes_per_stage"]) == 3 and all(1 <= k <= 5 for k in forward["kept_classes_per_stage"])


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
    assert "kept_classes_per_stage" not in forward and forward["images_per_s"] == pytest.approx(2 / forward["median_s"])
    train = cases[3]
    # Only ITA's head trains: CLIP is frozen.
    from fgaseg_hf.benchmark import build_model

    model = build_model("tiny_ita", torch.device("cpu"))
    head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("clip."))
    assert train["trainable_parameters"] == head < train["parameters"]


def test_pruning_counts_records_and_fixes_the_classes_each_stage_keeps():
    from fgaseg_hf.benchmark import bench_for, build_model, pruning_counts
    from fgaseg_hf.fgaseg_decoder import ClassSelection

    model, bench = build_model("tiny", torch.device("cpu")), bench_for("tiny")
    unpatched = ClassSelection.prune
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embeds = bench.encode(model, bench.text_inputs(model, 30, generator))
        pixels = bench.pixel_inputs(model, 2, generator)
        expected = model(**pixels, **embeds)
        recorded: list[int] = []
        with pruning_counts(recorded):
            counted = model(**pixels, **embeds)
        fixed: list[int] = []
        with pruning_counts(fixed, [9, 6, 4]):
            forced = model(**pixels, **embeds)
        after = model(**pixels, **embeds)
    # Counting changes nothing; the last stage's count is the largest number of classes an image keeps.
    assert torch.equal(counted.logits, expected.logits) and len(recorded) == 3
    assert recorded[-1] == int(expected.kept_classes.sum(dim=1).max()) and recorded == sorted(recorded, reverse=True)
    assert fixed == [9, 6, 4] and forced.kept_classes.sum(dim=1).tolist() == [4, 4]
    # The patch is undone on exit.
    assert ClassSelection.prune is unpatched and torch.equal(after.logits, expected.logits)


def test_original_pruning_adds_the_like_for_like_image_case(tmp_path):
    output = tmp_path / "bench.json"
    code = main(["--preset", "tiny", "--classes", "171", "--batch-sizes", "1", "--warmup", "0", "--repeats", "1",
                 "--sliding-window-classes", "", "--no-training", "--no-metric", "--original-pruning", "--no-isolate",
                 "--device", "cpu", "--output", str(output)])
    assert code == 0
    report = json.loads(output.read_text())
    fixed = [c for c in report["cases"] if c.get("fixed_kept_classes")]
    assert [(c["kind"], c["kept_classes_per_stage"]) for c in fixed] == [("image", [46, 42, 42])]
    key = "tiny: seconds per image at 171 classes, pruning as the original's measurement (46/42/42)"
    assert report["summary"][key] == fixed[0]["median_s"]
    assert "| tiny | image | 171 | 46/42/42 (fixed) |" in output.with_suffix(".md").read_text()


def test_cuda_plan_covers_the_gpu_targets():
    """Planned without a GPU: the CUDA run holds every case the issue's GPU targets are stated in."""
    from fgaseg_hf.benchmark import parse_args, plan_cases

    cases = plan_cases(parse_args(["--device", "cuda"]))
    forward = {(c["classes"], c["batch_size"], c["dtype"], c["compile"]) for c in cases if c["kind"] == "forward"}
    for dtype in ("float32", "bfloat16", "float16"):
        assert {(171, 8, dtype, False), (171, 8, dtype, True)} <= forward
    assert {(c["kind"], c["classes"]) for c in cases if c["kind"] == "sliding_window"} == {
        ("sliding_window", 171), ("sliding_window", 847)
    }
    training = [(c["dtype"], c["batch_size"], c["classes"], c["gradient_checkpointing"]) for c in cases
                if c["kind"] == "train_step"]
    assert training == [("bfloat16", 4, 171, False), ("bfloat16", 4, 171, True)]
    # On CPU: fp32 only, no compile, training batch 1.
    cpu = plan_cases(parse_args(["--device", "cpu"]))
    assert {c["dtype"] for c in cpu if "dtype" in c} == {"float32"} and not any(c.get("compile") for c in cpu)
    assert {c["batch_size"] for c in cpu if c["kind"] == "train_step"} == {1}


def test_store_everything_reference_equals_the_streaming_metric():
    rng = np.random.default_rng(1)
    predictions = [rng.integers(0, 6, (9, 7)) for _ in range(3)]
    references = [np.where(rng.random((9, 7)) < 0.2, 255, rng.integers(0, 5, (9, 7))) for _ in range(3)]
    confusion = ConfusionMatrix(6, ignore_index=255)
    for p, r in zip(predictions, references):
        confusion.update(torch.from_numpy(p), torch.from_numpy(r))
    assert store_everything_miou(predictions, references, 6, 255) == pytest.approx(float(confusion.compute()["mean_iou"]))


def test_chart_draws_every_image_series_and_the_original_for_vitb(tmp_path):
    from PIL import Image

    from fgaseg_hf.benchmark_chart import COLOURS, ORIGINAL_COLOUR, ORIGINAL_IMAGE_SECONDS, image_time_series, plot_image_times

    cases = [
        {"kind": "image", "preset": "vitb_384_fast_cat", "classes": 171, "median_s": 2.0},
        {"kind": "image", "preset": "vitb_384_fast_cat", "classes": 20, "median_s": 1.0},
        {"kind": "image", "preset": "vitb_384_fast_cat", "classes": 171, "median_s": 1.5, "fixed_kept_classes": [46, 42, 42]},
        {"kind": "forward", "preset": "vitb_384_fast_cat", "classes": 20, "median_s": 9.0, "batch_size": 1},
        {"kind": "image", "preset": "vitb_384_fast_cat", "classes": 59, "error": "failed"},
    ]
    series = image_time_series(cases)
    assert series == {
        "vitb_384_fast_cat": [(20, 1.0), (171, 2.0)],
        "vitb_384_fast_cat, the original's pruning counts": [(171, 1.5)],
        "original FGA-Seg (vitb_384_fast_cat)": sorted(ORIGINAL_IMAGE_SECONDS.items()),
    }
    assert plot_image_times(cases, tmp_path / "chart.png")
    colours = {colour for _, colour in Image.open(tmp_path / "chart.png").convert("RGB").getcolors(1 << 20)}
    assert {COLOURS[0], COLOURS[1], ORIGINAL_COLOUR} <= colours
    # Only the tiny config: no original to compare with; no image case: no chart.
    assert list(image_time_series([{**cases[0], "preset": "tiny"}])) == ["tiny"]
    assert not plot_image_times(cases[3:], tmp_path / "none.png") and not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("preset, model_class, kinds", [
    # CAT-Seg runs FGA-Seg's cases (sliding window, training with and without checkpointing), without top-k pruning.
    ("tiny_catseg", "CATSegModel", [("text", None), ("image", None), ("forward", 2), ("sliding_window", None),
                                    ("train_step", 1), ("train_step", 1)]),
    # FC-CLIP runs ITA's: no sliding window, no checkpointing variant.
    ("tiny_fcclip", "FCCLIPModel", [("text", None), ("image", None), ("forward", 2), ("train_step", 1)]),
])
def test_tiny_catseg_and_fcclip_benchmarks_measure_their_own_models(preset, model_class, kinds, tmp_path):
    from fgaseg_hf.benchmark import build_model, model_family

    output = tmp_path / "bench.json"
    code = main(["--preset", preset, "--classes", "3", "--batch-sizes", "2", "--sliding-window-classes", "3",
                 "--training-classes", "4", "--no-metric", "--no-isolate", "--device", "cpu", "--output", str(output)])
    assert code == 0
    cases = json.loads(output.read_text())["cases"]
    assert [(c["kind"], c.get("batch_size")) for c in cases] == kinds
    model = build_model(preset, torch.device("cpu"))
    assert type(model).__name__ == model_class and model_family(preset) == preset[len("tiny_"):]
    parent = build_model("tiny" if preset == "tiny_catseg" else "tiny_ita", torch.device("cpu"))
    total = sum(p.numel() for p in model.parameters())
    assert total != sum(p.numel() for p in parent.parameters())  # its own architecture, not the parent's
    for case in cases:
        assert "error" not in case and case["parameters"] == total and case["peak_memory_bytes"] > 0
        assert 0 < case["min_s"] <= case["median_s"] <= case["max_s"] and case["repeats"] == 1
        assert "kept_classes_per_stage" not in case  # neither has top-k pruning
    forward = cases[2]
    assert forward["images_per_s"] == pytest.approx(2 / forward["median_s"])
    train = [c for c in cases if c["kind"] == "train_step"]
    if preset == "tiny_fcclip":
        # Only the head trains: FC-CLIP's CLIP is frozen.
        head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("clip."))
        assert train[0]["trainable_parameters"] == head < total
    else:
        assert [c["gradient_checkpointing"] for c in train] == [False, True]
        assert train[0]["trainable_parameters"] == train[1]["trainable_parameters"] < total
    assert f"| {preset} | forward | 3 | - | 2 | float32 |" in output.with_suffix(".md").read_text()


def test_benchmark_families_of_the_packaged_presets():
    """Every packaged preset is benchmarked as its own family (planned only: no large model is built)."""
    import fgaseg_hf
    from fgaseg_hf.benchmark import FCCLIPBench, FGASegBench, ITABench, bench_for, model_family, parse_args, plan_cases

    for preset in fgaseg_hf.available_presets():
        expected = "catseg" if preset.startswith("catseg_") else "fgaseg"
        assert model_family(preset) == expected and type(bench_for(preset)) is FGASegBench
    for preset in fgaseg_hf.available_ita_presets():
        assert model_family(preset) == "ita" and type(bench_for(preset)) is ITABench
    assert fgaseg_hf.available_fcclip_presets()
    for preset in fgaseg_hf.available_fcclip_presets():
        assert model_family(preset) == "fcclip" and type(bench_for(preset)) is FCCLIPBench
    cases = plan_cases(parse_args(["--preset", "catseg_vitb_384", "--preset", "fcclip_convnext_large",
                                   "--device", "cpu", "--no-metric", "--original-pruning"]))
    by_preset = {p: {c["kind"] for c in cases if c["preset"] == p} for p in ("catseg_vitb_384", "fcclip_convnext_large")}
    assert "sliding_window" in by_preset["catseg_vitb_384"] and "sliding_window" not in by_preset["fcclip_convnext_large"]
    assert not any(c.get("fixed_kept_classes") for c in cases)  # no top-k pruning to fix in either


def test_bad_presets_are_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    assert main(["--preset", str(bad), "--no-isolate", "--output", str(tmp_path / "b.json")]) == 2
    assert main(["--preset", "catseg_nope", "--no-isolate", "--output", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: --preset {bad}: not valid JSON (Expecting property name enclosed in double quotes: " \
        "line 1 column 2 (char 1))"
    assert err[1].startswith("error: --preset catseg_nope: unknown FGA-Seg preset 'catseg_nope'")
    assert not (tmp_path / "b.json").exists()
