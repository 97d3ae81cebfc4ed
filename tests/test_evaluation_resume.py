"""`fgaseg evaluate` at benchmark scale: saved counts and --resume (one and two processes), users' own folders and
datasets, the report's account of every pixel, and one clear line for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model, tiny_processor
from PIL import Image

from fgaseg_hf.evaluation import main as evaluate_main

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["sky", "road", "car", "tree"]
OUTSIDE = 9  # a label id outside the four classes
TIMING = ("seconds", "images_per_second")


def write_folder(root: Path, count: int = 5, seed: int = 0) -> Path:
    """images/ + annotations/ paired by name, class_names.json beside them; labels hold 255 (void) and 9."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for index in range(count):
        height, width = int(rng.integers(20, 34)), int(rng.integers(20, 34))
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([(x * 9 + index * 50) % 256, (y * 11) % 256, ((x + y) * 5) % 256], -1).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{index:03d}.png")
        label = rng.choice([0, 1, 2, 255], size=(height, width)).astype(np.uint8)  # "tree" (3) never appears
        if index in (1, 3):
            label[:2, :3] = OUTSIDE
        Image.fromarray(label).save(root / "annotations" / f"{index:03d}.png")
    (root / "class_names.json").write_text(json.dumps(CLASSES))
    return root


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "tiny-fgaseg"
    model = make_model(seed=4, class_aggregation_length=0)
    model.save_pretrained(folder)
    tiny_processor(model.config, sliding_window_canvas=[64, 64]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "scenes")


def run(model_folder, data, output, *extra) -> int:
    return evaluate_main(["--model", str(model_folder), "--data", str(data), "--output", str(output), "--device",
                          "cpu", "--protocol", "whole", "--no-progress", *extra])


def without_timing(report: dict) -> dict:
    report = json.loads(json.dumps(report))
    for details in report["details"].values():
        for key in TIMING:
            details.pop(key)
    return report


@pytest.fixture(scope="module")
def uninterrupted(model_folder, data, tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("whole") / "eval.json"
    assert run(model_folder, data, output) == 0
    return json.loads(output.read_text())


def test_report_accounts_for_every_pixel(uninterrupted, data, model_folder, capsys, tmp_path):
    (details,) = uninterrupted["details"].values()
    labels = [np.asarray(Image.open(p)) for p in sorted((data / "annotations").glob("*.png"))]
    values = np.concatenate([label.reshape(-1) for label in labels])
    assert details["images"] == 5
    assert details["pixels_scored"] == int(np.isin(values, [0, 1, 2, 3]).sum())
    assert details["pixels_ignored"] == int((values == 255).sum())
    assert details["pixels_outside_class_list"] == int((values == OUTSIDE).sum()) == 12
    assert details["label_ids_outside_class_list"] == {str(OUTSIDE): 12}
    assert details["classes_without_ground_truth"] == ["tree"]
    assert uninterrupted["results"]["folder:scenes"]["per_class_iou"]["tree"] is None
    assert "detectron2's mIoU" in uninterrupted["absent_classes"]
    # The warning on stderr, the refusal with --strict naming the file.
    assert run(model_folder, data, tmp_path / "again.json") == 0
    err = capsys.readouterr().err
    assert f"12 pixels carry label ids outside its 4 classes ({OUTSIDE})" in err
    assert run(model_folder, data, tmp_path / "strict.json", "--strict") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: folder:scenes: image 001: label ids outside the 4 classes (9)")
    text = (tmp_path / "again.md").read_text()
    assert "| folder:scenes | " in text and " | 12 | 9 | 1 |" in text and "Without ground truth in this split: tree" in text


def test_interrupted_then_resumed_gives_the_uninterrupted_result(uninterrupted, model_folder, data, tmp_path, capsys):
    output = tmp_path / "eval.json"
    state = tmp_path / "eval.state"
    # Saved after 2 images, stopped after 3: the third image's counts are lost and counted again on resume.
    assert run(model_folder, data, output, "--save-every", "2", "--interrupt-after", "3") == 130
    assert "continue with --resume" in capsys.readouterr().err
    assert not output.exists() and [p.name for p in state.iterdir()] == ["folder_scenes.rank0-of-1.safetensors"]
    from safetensors import safe_open

    with safe_open(str(state / "folder_scenes.rank0-of-1.safetensors"), framework="pt") as handle:
        assert handle.metadata()["done"] == "2" and handle.metadata()["finished"] == "0"
    # Interrupted again after one more image (saved after it), then resumed to the end.
    assert run(model_folder, data, output, "--resume", "--save-every", "1", "--interrupt-after", "1") == 130
    capsys.readouterr()
    assert run(model_folder, data, output, "--resume") == 0
    assert without_timing(json.loads(output.read_text())) == without_timing(uninterrupted)
    assert not state.exists()  # its own state files removed once the report is written


def test_a_resume_against_other_settings_is_refused_in_one_line(model_folder, data, tmp_path, capsys):
    output = tmp_path / "eval.json"
    assert run(model_folder, data, output, "--save-every", "1", "--interrupt-after", "1") == 130
    capsys.readouterr()

    def refused(*args, folder=model_folder, source=data) -> str:
        assert run(folder, source, output, *args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        return err

    assert "holds a saved, unfinished evaluation: pass --resume" in refused()
    other_model = tmp_path / "other-model"
    make_model(seed=5, class_aggregation_length=0).save_pretrained(other_model)
    tiny_processor(sliding_window_canvas=[64, 64]).save_pretrained(other_model)
    assert "made with another model" in refused("--resume", folder=other_model)
    assert "made with another protocol" in refused("--resume", "--batch-size", "2")
    other_data = write_folder(tmp_path / "other", count=2)
    assert "is of folder_scenes, not of folder:other" in refused("--resume", source=other_data)
    assert "--resume: nothing to resume in" in refused("--resume", "--state-dir", str(tmp_path / "empty"))
    # A damaged state file (not one this command wrote: its own are replaced atomically) is one line too.
    (tmp_path / "eval.state" / "folder_scenes.rank0-of-1.safetensors").write_bytes(b"\x00" * 20)
    assert "cannot read the saved state" in refused("--resume")


@pytest.mark.slow
@pytest.mark.slow
def test_two_processes_resume(uninterrupted, model_folder, data, tmp_path):
    """torchrun with 2 CPU processes, each stopped after one image, resumed with 2: the one-process result."""
    output = tmp_path / "eval.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

    def torchrun(processes: int, port: int, *extra) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_port",
                   str(port), str(REPO / "scripts" / "evaluate.py"), "--model", str(model_folder), "--data", str(data),
                   "--output", str(output), "--device", "cpu", "--protocol", "whole", "--no-progress", *extra]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    stopped = torchrun(2, 29631, "--save-every", "1", "--interrupt-after", "1")
    assert stopped.returncode != 0 and not output.exists()
    assert sorted(p.name for p in (tmp_path / "eval.state").iterdir()) == [
        "folder_scenes.rank0-of-2.safetensors", "folder_scenes.rank1-of-2.safetensors"]
    # One process cannot take over the shares of two.
    refused = evaluate_main(["--model", str(model_folder), "--data", str(data), "--output", str(output), "--device",
                             "cpu", "--protocol", "whole", "--no-progress", "--resume"])
    assert refused == 2
    resumed = torchrun(2, 29632, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["num_processes"] == 2
    assert without_timing(report)["results"] == without_timing(uninterrupted)["results"]
    expected = without_timing(uninterrupted)["details"]
    assert without_timing(report)["details"] == expected


def test_synthetic_layout_and_a_parquet_dataset_score_alike(model_folder, tmp_path):
    """The folder `fgaseg synthetic` writes (validation split, class_names.json above it) and the same pairs as a
    parquet file with its own column names give one result."""
    import datasets

    from fgaseg_hf.data.synthetic import CLASS_NAMES, write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "synthetic", num_train=1, num_validation=3, size=(24, 32),
                                   progress=False)
    output = tmp_path / "synthetic.json"
    assert run(model_folder, root, output) == 0
    folder_report = json.loads(output.read_text())
    split = root / "validation"
    rows = [json.loads(line) for line in (split / "metadata.jsonl").read_text().splitlines()]
    table = datasets.Dataset.from_dict(
        {"picture": [str(split / r["file_name"]) for r in rows], "mask": [str(split / r["annotation_file_name"])
                                                                        for r in rows]}
    ).cast_column("picture", datasets.Image()).cast_column("mask", datasets.Image())
    table.to_parquet(str(tmp_path / "scenes.parquet"))
    (tmp_path / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    output = tmp_path / "parquet.json"
    code = evaluate_main(["--model", str(model_folder), "--dataset", str(tmp_path / "scenes.parquet"), "--classes",
                          str(tmp_path / "classes.txt"), "--image-column", "picture", "--label-column", "mask",
                          "--output", str(output), "--device", "cpu", "--protocol", "whole", "--no-progress"])
    assert code == 0
    parquet_report = json.loads(output.read_text())
    (folder_entry,), (parquet_entry,) = folder_report["results"].values(), parquet_report["results"].values()
    assert folder_entry["per_class_iou"] == parquet_entry["per_class_iou"]
    assert list(folder_entry["per_class_iou"]) == CLASS_NAMES
    assert folder_report["details"]["folder:synthetic"]["images"] == 3


def test_bad_data_is_one_line(model_folder, tmp_path, capsys):
    def refused(source: Path, *extra) -> str:
        assert run(model_folder, source, tmp_path / "x.json", *extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        return err

    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "annotations").mkdir()
    (empty / "class_names.json").write_text(json.dumps(CLASSES))
    assert "the dataset holds no image" in refused(empty)
    broken = write_folder(tmp_path / "broken", count=2)
    (broken / "images" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    err = refused(broken)
    assert "image 001: cannot read the image" in err and str(broken / "images" / "001.png") in err
    truncated = write_folder(tmp_path / "truncated", count=2)
    label = truncated / "annotations" / "000.png"
    label.write_bytes(label.read_bytes()[:60])
    assert "cannot read the label map" in refused(truncated) and not (tmp_path / "x.json").exists()
    rgb = write_folder(tmp_path / "rgb", count=1)
    Image.new("RGB", Image.open(rgb / "images" / "000.png").size).save(rgb / "annotations" / "000.png")
    assert "the label map is a RGB image" in refused(rgb)
    unlisted = write_folder(tmp_path / "unlisted", count=1)
    (unlisted / "class_names.json").unlink()
    assert "no class list; pass --classes" in refused(unlisted)
    # No prepared benchmark: the command that makes it.
    assert evaluate_main(["--model", str(model_folder), "--benchmarks", "pc59", "--root", str(tmp_path)]) == 2
    assert "`fgaseg prepare pc59 --root" in capsys.readouterr().err


def test_state_files_are_replaced_atomically(tmp_path, monkeypatch):
    """A run killed while saving keeps the previous complete state: the new one is written beside it, then moved."""
    from fgaseg_hf.evaluation_state import StateError, load_state, save_state, saved_states, state_path
    from fgaseg_hf.metrics import PairCounts

    identity = {"model": "m", "benchmark": "ade150"}
    first = PairCounts().update(np.array([[1, 2]]), np.array([[1, 255]]))
    path = state_path(tmp_path, "ade150", 0, 1)
    save_state(path, first, done=3, seconds=1.5, identity=identity, finished=False)

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_state(path, PairCounts().update(np.array([[0]]), np.array([[0]])), 4, 2.0, identity, False)
    monkeypatch.undo()
    counts, done, seconds, finished = load_state(path, identity)
    assert (done, seconds, finished) == (3, 1.5, False)
    assert [a.tolist() for a in counts.pairs()] == [a.tolist() for a in first.pairs()]
    assert saved_states(tmp_path) == [path]  # the unfinished temporary file is not taken for a state
    with pytest.raises(StateError, match="made with another benchmark"):
        load_state(path, {**identity, "benchmark": "pc59"})
