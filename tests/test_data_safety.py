"""Nothing of the user's is lost or overwritten: commands that write a folder refuse a non-empty one unless
`--overwrite`, then remove only what they wrote themselves; `--resume` after a run killed while saving picks the
newest complete checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from test_training import losses, run_config

from fgaseg_hf.checkpoints import resolve_resume, resumable_checkpoints
from fgaseg_hf.data.synthetic import main as synthetic_main
from fgaseg_hf.data.synthetic import write_synthetic_dataset
from fgaseg_hf.safe_io import MANIFEST_NAME, OutputFolder, OutputFolderError
from fgaseg_hf.training import run_training
from fgaseg_hf.training_families import TrainingConfigError


def _error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _user_files(root):
    """Files a user keeps in the folder, some where the command writes its own."""
    files = {
        root / "notes.txt": b"my notes",
        root / "train" / "images" / "holiday.png": b"not generated",
        root / "validation" / "annotations" / "mine.png": b"hand-drawn labels",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_synthetic_refuses_a_folder_with_other_files(tmp_path, capsys):
    files = _user_files(tmp_path / "data")
    code = synthetic_main(["--output", str(tmp_path / "data"), "--train", "2", "--validation", "1", "--size", "16",
                           "--no-progress"])
    assert code == 2
    line = _error_line(capsys.readouterr().err)
    assert str(tmp_path / "data") in line and "--overwrite" in line
    assert all(path.read_bytes() == data for path, data in files.items())
    assert not (tmp_path / "data" / "train" / "images" / "00000.png").exists()


def test_synthetic_overwrite_removes_only_what_it_wrote(tmp_path):
    root = tmp_path / "data"
    files = _user_files(root)
    write_synthetic_dataset(root, 3, 2, (16, 16), progress=False, overwrite=True)
    assert sorted(p.name for p in (root / "train" / "images").iterdir()) == ["00000.png", "00001.png", "00002.png", "holiday.png"]
    # A smaller second run: its own stale scenes go, the user's files stay.
    write_synthetic_dataset(root, 1, 1, (16, 16), progress=False, overwrite=True)
    assert sorted(p.name for p in (root / "train" / "images").iterdir()) == ["00000.png", "holiday.png"]
    assert sorted(p.name for p in (root / "validation" / "annotations").iterdir()) == ["00000.png", "mine.png"]
    assert all(path.read_bytes() == data for path, data in files.items())
    recorded = json.loads((root / MANIFEST_NAME).read_text())["files"]
    assert "train/images/00000.png" in recorded and "notes.txt" not in recorded and "train/images/00001.png" not in recorded


def test_overwrite_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "images" / "00000.png").write_bytes(b"the user's own picture")
    code = synthetic_main(["--output", str(root), "--train", "1", "--validation", "1", "--size", "16", "--no-progress",
                           "--overwrite"])
    assert code == 2
    line = _error_line(capsys.readouterr().err)
    assert "00000.png" in line and "not written by fgaseg" in line
    assert (root / "train" / "images" / "00000.png").read_bytes() == b"the user's own picture"


def test_a_manifest_cannot_point_outside_the_folder(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    root = tmp_path / "data"
    root.mkdir()
    (root / MANIFEST_NAME).write_text(json.dumps({"files": ["../precious.txt", str(outside)]}))
    OutputFolder(root, overwrite=True).prepare()
    assert outside.read_text() == "keep"
    with pytest.raises(OutputFolderError, match="outside the folder"):
        OutputFolder(root).claim(["../escape.png"])


def test_segment_never_replaces_files_it_did_not_write(tmp_path, capsys):
    from PIL import Image

    from fgaseg_hf.cli import main

    image = tmp_path / "street.png"
    Image.new("RGB", (8, 8)).save(image)
    out = tmp_path / "out"
    out.mkdir()
    (out / "street_labels.png").write_bytes(b"someone else's file")
    (out / "unrelated.txt").write_text("kept")
    assert main(["segment", str(image), "--labels", "sky", "--output", str(out)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "street_labels.png" in line and "not written by fgaseg" in line
    assert main(["segment", str(image), "--labels", "sky", "--output", str(out), "--overwrite"]) == 2
    assert "not written by fgaseg" in _error_line(capsys.readouterr().err)
    assert (out / "street_labels.png").read_bytes() == b"someone else's file" and (out / "unrelated.txt").exists()


def test_segment_replaces_its_own_earlier_outputs_only_with_overwrite(tmp_path):
    out = tmp_path / "out"
    folder = OutputFolder(out, additive=True)
    folder.claim(["street_labels.png"])
    (out / "street_labels.png").write_bytes(b"first run")
    (out / "notes.txt").write_text("kept")
    with pytest.raises(OutputFolderError, match="written by an earlier run.*--overwrite"):
        OutputFolder(out, additive=True).check(["street_labels.png"])
    again = OutputFolder(out, overwrite=True, additive=True)
    again.claim(["street_labels.png", "other_labels.png"])
    assert set(json.loads((out / MANIFEST_NAME).read_text())["files"]) == {"street_labels.png", "other_labels.png"}


# ----------------------------------------------------------------------------------------- resume
def _complete_checkpoint(folder, step: int):
    folder.mkdir(parents=True)
    save_file({"weight": torch.full((4,), float(step))}, str(folder / "model.safetensors"))
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["no_state", "truncated_state", "truncated_weights", "truncated_optimizer",
                                    "no_weights"])
def test_resume_skips_a_checkpoint_the_run_was_killed_writing(tmp_path, damage):
    for step in (2, 4):
        _complete_checkpoint(tmp_path / f"checkpoint-{step}", step)
    broken = tmp_path / "checkpoint-6"
    _complete_checkpoint(broken, 6)
    {
        "no_state": lambda: (broken / "trainer_state.json").unlink(),
        "truncated_state": lambda: _truncate(broken / "trainer_state.json"),
        "truncated_weights": lambda: _truncate(broken / "model.safetensors"),
        "truncated_optimizer": lambda: _truncate(broken / "optimizer.pt"),
        "no_weights": lambda: (broken / "model.safetensors").unlink(),
    }[damage]()
    newest, skipped = resumable_checkpoints(tmp_path)
    assert newest == tmp_path / "checkpoint-4"
    assert [path for path, _ in skipped] == [broken]
    notes = []
    assert resolve_resume(True, tmp_path, notes.append) == str(tmp_path / "checkpoint-4")
    assert len(notes) == 1 and "checkpoint-6" in notes[0]
    with pytest.raises(TrainingConfigError, match="cannot resume from it"):
        resolve_resume(str(broken), tmp_path)


def test_resume_with_nothing_to_resume_is_one_line(tmp_path, capsys):
    from fgaseg_hf.training import main

    (tmp_path / "run").mkdir()
    _complete_checkpoint(tmp_path / "run" / "checkpoint-3", 3)
    (tmp_path / "run" / "checkpoint-3" / "trainer_state.json").unlink()
    with pytest.raises(TrainingConfigError, match="no complete checkpoint-N folder .* nothing to resume"):
        resolve_resume(True, tmp_path / "run", lambda line: None)
    scenes = write_synthetic_dataset(tmp_path / "scenes", 2, 0, (16, 16), progress=False)
    config = run_config(scenes, tmp_path / "run")
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["--config", str(tmp_path / "run.json"), "--resume"]) == 2
    assert "nothing to resume" in _error_line(capsys.readouterr().err)


def test_a_killed_save_resumes_from_the_previous_checkpoint(tmp_path):
    scenes = write_synthetic_dataset(tmp_path / "scenes", 4, 0, (72, 72), progress=False)
    full = run_config(scenes, tmp_path / "full", max_steps=2, save_strategy="steps", save_steps=1,
                      per_device_train_batch_size=2)
    run_training(full)
    expected = losses(tmp_path / "full" / "training_history.json")
    run = tmp_path / "killed"
    run.mkdir()
    for step in (1, 2):
        shutil.copytree(tmp_path / "full" / f"checkpoint-{step}", run / f"checkpoint-{step}")
    # Killed while saving step 2: its weights are cut short and the trainer state was never written.
    _truncate(run / "checkpoint-2" / "model.safetensors")
    (run / "checkpoint-2" / "trainer_state.json").unlink()
    run_training(run_config(scenes, run, max_steps=2, save_strategy="steps", save_steps=1, per_device_train_batch_size=2),
                 resume_from_checkpoint=True)
    history = json.loads((run / "training_history.json").read_text())["log_history"]
    # Step 1 comes from checkpoint-1's state; step 2 was trained again from it, exactly as the uninterrupted run did.
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2]
    got = losses(run / "training_history.json")
    assert got[2] == pytest.approx(expected[2], rel=1e-6, abs=1e-7)
    assert json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2


def test_train_refuses_a_non_empty_output_folder_unless_overwrite(tmp_path, capsys):
    from fgaseg_hf.training import main

    scenes = write_synthetic_dataset(tmp_path / "scenes", 2, 0, (72, 72), progress=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.csv").write_text("keep me")
    config = run_config(scenes, run, max_steps=1, per_device_train_batch_size=2)
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["--config", str(tmp_path / "run.json")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(run) in line and "--overwrite" in line
    assert main(["--config", str(tmp_path / "run.json"), "--overwrite"]) == 0
    recorded = set(json.loads((run / MANIFEST_NAME).read_text())["files"])
    assert "model.safetensors" in recorded and "training_history.json" in recorded and "results.csv" not in recorded
    # A second --overwrite run removes its own files first, and still keeps the user's.
    (run / "training_history.json").write_text("stale")
    assert main(["--config", str(tmp_path / "run.json"), "--overwrite"]) == 0
    assert json.loads((run / "training_history.json").read_text())["log_history"]
    assert (run / "results.csv").read_text() == "keep me"


def test_train_never_replaces_a_same_named_file_and_keeps_the_trained_model(tmp_path, capsys):
    from fgaseg_hf.training import main

    scenes = write_synthetic_dataset(tmp_path / "scenes", 2, 0, (72, 72), progress=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("the user's own config")
    config = run_config(scenes, run, max_steps=1, per_device_train_batch_size=2)
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["--config", str(tmp_path / "run.json"), "--overwrite"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(run / "config.json") in line and "was not written by fgaseg" in line and "saved in" in line
    assert (run / "config.json").read_text() == "the user's own config"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.unsaved-")]
    assert len(kept) == 1 and (kept[0] / "model.safetensors").is_file()
    assert json.loads((kept[0] / "training_history.json").read_text())["log_history"]
    assert not any(p.name.startswith(".run.fgaseg-staging-") for p in tmp_path.iterdir())


# ----------------------------------------------------------------------------------------- convert
def _convert(out, *extra):
    from conftest import PARITY_FIXTURES

    from fgaseg_hf.cli import main

    fixture = PARITY_FIXTURES / "catseg_b"
    return main(["convert", "--checkpoint", str(fixture / "checkpoint.pth"), "--config", str(fixture / "config.json"),
                 "--output", str(out), *extra])


def test_convert_overwrite_replaces_only_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "converted"
    out.mkdir()
    (out / "notes.txt").write_bytes(b"my notes")
    assert _convert(out) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(out) in line and "--overwrite" in line and not (out / "config.json").exists()
    assert _convert(out, "--overwrite") == 0
    recorded = set(json.loads((out / MANIFEST_NAME).read_text())["files"])
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= recorded
    assert "notes.txt" not in recorded
    # Its own files: refused without --overwrite, replaced with it; the user's file survives both byte-identical.
    (out / "config.json").write_text("stale")
    assert _convert(out) == 2 and "--overwrite" in _error_line(capsys.readouterr().err)
    assert (out / "config.json").read_text() == "stale"
    assert _convert(out, "--overwrite") == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "catseg"
    assert (out / "notes.txt").read_bytes() == b"my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted"]  # no staging folder left beside it


def test_convert_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "converted"
    out.mkdir()
    (out / "config.json").write_bytes(b'{"mine": true}')
    assert _convert(out, "--overwrite") == 2
    line = _error_line(capsys.readouterr().err)
    assert "config.json" in line and "not written by fgaseg" in line
    assert (out / "config.json").read_bytes() == b'{"mine": true}'
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]  # nothing else was moved in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted"]


# ----------------------------------------------------------------------------------------- prepare
def _ade150_raw(root, value=3):
    from PIL import Image

    base = root / "ADEChallengeData2016"
    (base / "annotations" / "validation").mkdir(parents=True, exist_ok=True)
    (base / "images" / "validation").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (3, 2)).save(base / "images" / "validation" / "ADE_val_00000001.jpg")
    Image.new("L", (3, 2), value).save(base / "annotations" / "validation" / "ADE_val_00000001.png")
    return base / "annotations_detectron2" / "validation" / "ADE_val_00000001.png"


def _prepare(*argv):
    from fgaseg_hf.data.prepare import main

    return main([*map(str, argv), "--no-progress"])


def test_prepare_replaces_its_own_files_only_with_overwrite(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    root = tmp_path / "datasets"
    prepared = _ade150_raw(root)
    (root / "notes.txt").write_bytes(b"my notes")
    assert _prepare("ade150", "--root", root) == 0
    assert np.asarray(Image.open(prepared)).tolist() == [[2, 2, 2], [2, 2, 2]]
    _ade150_raw(root, value=6)
    assert _prepare("ade150", "--root", root) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(prepared) in line and "--overwrite" in line
    assert np.asarray(Image.open(prepared)).tolist() == [[2, 2, 2], [2, 2, 2]]
    assert _prepare("ade150", "--root", root, "--overwrite") == 0
    assert np.asarray(Image.open(prepared)).tolist() == [[5, 5, 5], [5, 5, 5]]
    assert (root / "notes.txt").read_bytes() == b"my notes"


def test_prepare_never_replaces_a_prepared_file_it_did_not_write(tmp_path, capsys):
    root = tmp_path / "datasets"
    prepared = _ade150_raw(root)
    prepared.parent.mkdir(parents=True)
    prepared.write_bytes(b"prepared by the original script")
    for extra in ((), ("--overwrite",)):
        assert _prepare("ade150", "--root", root, *extra) == 2
        line = _error_line(capsys.readouterr().err)
        assert str(prepared) in line and "not written by fgaseg" in line
    assert prepared.read_bytes() == b"prepared by the original script"


def _zip(path, members: dict):
    import zipfile

    with zipfile.ZipFile(path, "w") as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return path


def test_prepare_unpacks_nothing_over_the_users_files(tmp_path, capsys):
    root = tmp_path / "datasets"
    mine = root / "ADEChallengeData2016" / "sceneCategories.txt"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my edited list")
    archive = _zip(tmp_path / "ADE.zip", {"ADEChallengeData2016/objectInfo150.csv": "a",
                                          "ADEChallengeData2016/sceneCategories.txt": "theirs"})
    for extra in ((), ("--overwrite",)):
        assert _prepare("ade150", "--root", root, "--archive", archive, *extra) == 2
        line = _error_line(capsys.readouterr().err)
        assert str(mine) in line and "not written by fgaseg" in line
    assert mine.read_bytes() == b"my edited list"
    assert sorted(p.name for p in root.rglob("*")) == ["ADEChallengeData2016", "sceneCategories.txt"]  # nothing unpacked


def test_prepare_replaces_what_it_unpacked_only_with_overwrite(tmp_path, capsys):
    root = tmp_path / "datasets"
    _ade150_raw(tmp_path / "staging")
    (root / "notes.txt").parent.mkdir(parents=True)
    (root / "notes.txt").write_bytes(b"my notes")
    archive = tmp_path / "ADE.zip"
    import zipfile

    with zipfile.ZipFile(archive, "w") as handle:
        for file in (tmp_path / "staging").rglob("*"):
            handle.write(file, file.relative_to(tmp_path / "staging"))
    assert _prepare("ade150", "--root", root, "--archive", archive) == 0
    recorded = set(json.loads((root / MANIFEST_NAME).read_text())["files"])
    assert "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png" in recorded
    assert "ADEChallengeData2016/annotations_detectron2/validation/ADE_val_00000001.png" in recorded
    assert "notes.txt" not in recorded and not [p for p in root.iterdir() if p.name.startswith(".fgaseg-unpack")]
    assert _prepare("ade150", "--root", root, "--archive", archive) == 2
    assert "--overwrite" in _error_line(capsys.readouterr().err)
    assert _prepare("ade150", "--root", root, "--archive", archive, "--overwrite") == 0
    assert (root / "notes.txt").read_bytes() == b"my notes"


def _tar(path, add):
    import io
    import tarfile

    with tarfile.open(path, "w") as handle:
        for info, data in add:
            handle.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _tar_member(name, data=b"x", kind=None, target=""):
    import tarfile

    info = tarfile.TarInfo(name)
    if kind is None:
        info.size = len(data)
        return info, data
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("case", ["dotdot_zip", "absolute_zip", "dotdot_tar", "absolute_tar", "symlink_tar",
                                  "hardlink_tar", "dotdot_folder_tar", "symlink_zip", "manifest_zip"])
def test_prepare_refuses_archive_members_that_escape(tmp_path, capsys, case):
    import stat
    import tarfile
    import zipfile

    outside = tmp_path / "precious.txt"
    outside.write_bytes(b"keep")
    root = tmp_path / "datasets"
    if case.endswith("_zip"):
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as handle:
            handle.writestr("ADEChallengeData2016/ok.txt", "fine")
            if case == "symlink_zip":
                info = zipfile.ZipInfo("ADEChallengeData2016/link")
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                handle.writestr(info, str(outside))
            else:
                name = {"dotdot_zip": "../precious.txt", "absolute_zip": str(outside), "manifest_zip": MANIFEST_NAME}[case]
                handle.writestr(zipfile.ZipInfo(name), "overwritten")
        problem = {"symlink_zip": "is a link", "manifest_zip": "own record"}.get(case, "outside")
    else:
        archive = tmp_path / "bad.tar"
        members = [_tar_member("ADEChallengeData2016/ok.txt")]
        members += {
            "dotdot_tar": [_tar_member("../precious.txt", b"overwritten")],
            "absolute_tar": [_tar_member(str(outside), b"overwritten")],
            "symlink_tar": [_tar_member("ADEChallengeData2016/link", kind=tarfile.SYMTYPE, target=str(tmp_path)),
                            _tar_member("ADEChallengeData2016/link/precious.txt", b"overwritten")],
            "hardlink_tar": [_tar_member("ADEChallengeData2016/link", kind=tarfile.LNKTYPE, target=str(outside))],
            "dotdot_folder_tar": [_tar_member("ADEChallengeData2016/../../escaped", kind=tarfile.DIRTYPE)],
        }[case]
        _tar(archive, members)
        problem = "is a link" if "link" in case else "outside"
    assert _prepare("ade150", "--root", root, "--archive", archive) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(archive) in line and problem in line, line
    assert outside.read_bytes() == b"keep"
    assert not root.exists() or not any(root.rglob("*"))  # refused before anything was unpacked


# ----------------------------------------------------------------------------------------- benchmark, evaluate
def _benchmark(output, *extra):
    from fgaseg_hf.benchmark import main

    return main(["--preset", "tiny", "--metric-only", "--metric-images", "1", "--warmup", "0", "--repeats", "1",
                 "--no-isolate", "--device", "cpu", "--output", str(output), *extra])


def test_benchmark_never_replaces_the_users_report(tmp_path, capsys):
    output = tmp_path / "bench.json"
    (tmp_path / "bench.md").write_bytes(b"my table")
    for extra in ((), ("--overwrite",)):
        assert _benchmark(output, *extra) == 2
        line = _error_line(capsys.readouterr().err)
        assert str(tmp_path / "bench.md") in line and "not written by fgaseg" in line
    assert (tmp_path / "bench.md").read_bytes() == b"my table" and not output.exists()


def test_benchmark_replaces_its_own_report_only_with_overwrite(tmp_path, capsys):
    output = tmp_path / "bench.json"
    (tmp_path / "notes.txt").write_bytes(b"my notes")
    assert _benchmark(output) == 0
    assert json.loads(output.read_text())["cases"]
    output.write_text("stale")
    assert _benchmark(output) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(output) in line and "--overwrite" in line and output.read_text() == "stale"
    assert _benchmark(output, "--overwrite") == 0
    assert json.loads(output.read_text())["cases"] and (tmp_path / "notes.txt").read_bytes() == b"my notes"
    assert {"bench.json", "bench.md"} <= set(json.loads((tmp_path / MANIFEST_NAME).read_text())["files"])


@pytest.fixture(scope="module")
def scenes_folder(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes") / "scenes", 0, 1, (16, 16), progress=False)


def _evaluate(model, data, output, *extra):
    from fgaseg_hf.evaluation import main

    return main(["--model", str(model), "--data", str(data), "--output", str(output), "--device", "cpu",
                 "--protocol", "whole", "--no-progress", *map(str, extra)])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from conftest import make_model, tiny_processor

    folder = tmp_path_factory.mktemp("model") / "tiny-fgaseg"
    model = make_model(seed=4, class_aggregation_length=0)
    model.save_pretrained(folder)
    tiny_processor(model.config, sliding_window_canvas=[64, 64]).save_pretrained(folder)
    return folder


def test_evaluate_never_replaces_the_users_files(tiny_model, scenes_folder, tmp_path, capsys):
    card = tmp_path / "README.md"
    card.write_bytes(b"my model card")
    for extra in ((), ("--overwrite",)):
        assert _evaluate(tiny_model, scenes_folder, tmp_path / "eval.json", "--card", card, *extra) == 2
        line = _error_line(capsys.readouterr().err)
        assert str(card) in line and "not written by fgaseg" in line
    assert card.read_bytes() == b"my model card" and not (tmp_path / "eval.json").exists()


def test_evaluate_replaces_its_own_report_only_with_overwrite(tiny_model, scenes_folder, tmp_path, capsys):
    output = tmp_path / "eval.json"
    (tmp_path / "notes.txt").write_bytes(b"my notes")
    assert _evaluate(tiny_model, scenes_folder, output) == 0, capsys.readouterr().err
    first = json.loads(output.read_text())
    (tmp_path / "eval.md").write_text("stale")
    assert _evaluate(tiny_model, scenes_folder, output) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(output) in line and "--overwrite" in line and (tmp_path / "eval.md").read_text() == "stale"
    assert _evaluate(tiny_model, scenes_folder, output, "--overwrite") == 0
    assert json.loads(output.read_text())["results"] == first["results"]
    assert (tmp_path / "eval.md").read_text() != "stale" and (tmp_path / "notes.txt").read_bytes() == b"my notes"
    assert not (tmp_path / "eval.state").exists()  # its resume state is still removed after a finished run
