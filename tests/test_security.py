"""No code hidden in a data file ever runs: every loader of the package meets a pickle whose unpickling would
create a marker file, and must refuse it with one line, the marker never appearing."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fgaseg_hf.safe_io import RestrictedUnpickler, UnsafeFileError, load_restricted_pickle, load_torch_file

SOURCE = Path(__file__).resolve().parents[1] / "src" / "fgaseg_hf"


class _Trap:
    """Unpickling this calls `open(marker, "w")`: the marker file appearing means the loader ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _trap_checkpoint(path: Path, marker: Path, wrap=lambda trap: {"model": {"weight": trap}}) -> Path:
    torch.save(wrap(_Trap(marker)), path)
    assert b"builtins" in path.read_bytes() or path.stat().st_size > 0
    return path


def _error_line(stderr: str) -> str:
    """The one `error:` line of a command's stderr (progress bars aside), without a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a loader ran code from a data file"


def test_the_trap_works_when_loaded_unsafely(tmp_path):
    # The test's own check: an unrestricted load of the same bytes does create the marker.
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_Trap(marker))).close()
    assert marker.exists()


def test_load_torch_file_refuses_pickled_code(tmp_path, marker):
    path = _trap_checkpoint(tmp_path / "model.pth", marker)
    with pytest.raises(UnsafeFileError) as caught:
        load_torch_file(path)
    message = _one_line(str(caught.value))
    assert str(path) in message and re.search(r"\b(io|builtins)\.open\b", message)


def test_fgaseg_converter_refuses_pickled_code(tmp_path, marker, capsys):
    from fgaseg_hf.cli import main
    from fgaseg_hf.conversion import ConversionError, convert_original_checkpoint

    path = _trap_checkpoint(tmp_path / "model_final.pth", marker)
    config = tmp_path / "config.json"
    config.write_text("{}")
    with pytest.raises(ConversionError, match="refused to load"):
        convert_original_checkpoint(str(path), str(config))
    assert main(["convert", "--checkpoint", str(path), "--config", str(config), "--output", str(tmp_path / "out")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and str(path) in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("entry", ["model", "state_dict", None])
def test_ita_converters_refuse_pickled_code(tmp_path, marker, entry):
    from fgaseg_hf.conversion_ita import convert_open_clip_checkpoint, convert_original_checkpoint

    wrap = (lambda trap: {entry: {"w": trap}}) if entry else (lambda trap: {"w": trap})
    path = _trap_checkpoint(tmp_path / "open_clip_pytorch_model.bin", marker, wrap)
    with pytest.raises(UnsafeFileError, match="refused to load"):
        convert_open_clip_checkpoint(path)
    with pytest.raises(UnsafeFileError, match="refused to load"):
        convert_original_checkpoint(path, {"MODEL": {}})


def _tiny_data(tmp_path) -> Path:
    from fgaseg_hf.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path / "scenes", 2, 0, (32, 32), progress=False)


def test_train_clip_pretrained_refuses_pickled_code(tmp_path, marker, capsys):
    from fgaseg_hf.training import main

    data = _tiny_data(tmp_path)
    weights = _trap_checkpoint(tmp_path / "open_clip_pytorch_model.bin", marker, lambda trap: {"w": trap})
    run = {"model": {"family": "ita", "clip_pretrained": str(weights)}, "data": {"path": str(data)},
           "training": {"output_dir": str(tmp_path / "run"), "max_steps": 1}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert main(["--config", str(tmp_path / "run.json")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and str(weights) in line and "refused" in line


def test_train_fgaseg_clip_folder_refuses_pickled_code(tmp_path, marker, capsys):
    from transformers import CLIPConfig

    from fgaseg_hf.training import main

    data = _tiny_data(tmp_path)
    folder = tmp_path / "clip"
    folder.mkdir()
    CLIPConfig().save_pretrained(folder)
    _trap_checkpoint(folder / "pytorch_model.bin", marker, lambda trap: {"w": trap})
    run = {"model": {"family": "fgaseg", "clip_pretrained": str(folder)}, "data": {"path": str(data)},
           "training": {"output_dir": str(tmp_path / "run"), "max_steps": 1}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert main(["--config", str(tmp_path / "run.json")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and str(folder) in line


def test_ade20k_index_is_read_with_a_restricted_unpickler(tmp_path, marker, capsys):
    from fgaseg_hf.data.prepare import main

    base = tmp_path / "ADE20K_2021_17_01"
    base.mkdir()
    index = base / "index_ade20k.pkl"
    index.write_bytes(pickle.dumps({"folder": [_Trap(marker)], "filename": ["ADE_val_00000001.jpg"]}))
    assert main(["ade847", "--root", str(tmp_path), "--no-progress"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and str(index) in line and re.search(r"\b(io|builtins)\.open\b", line)


def test_restricted_unpickler_reads_containers_and_numpy_arrays(tmp_path):
    # What an ADE20K-full index holds: lists of names, nested dicts, numeric and object arrays, numpy scalars.
    value = {
        "filename": ["ADE_val_00000001.jpg"], "folder": ("a/b",), "objectPresence": np.arange(6, dtype=np.uint16).reshape(2, 3),
        "names": np.array(["wall", "sky"], dtype=object), "scale": np.float32(0.5), "flags": {1, 2}, "raw": b"\x00\x01",
    }
    for protocol in (2, 4, 5):
        path = tmp_path / f"index{protocol}.pkl"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        loaded = load_restricted_pickle(path)
        assert loaded["filename"] == value["filename"] and loaded["flags"] == {1, 2} and loaded["raw"] == b"\x00\x01"
        np.testing.assert_array_equal(loaded["objectPresence"], value["objectPresence"])
        assert loaded["objectPresence"].dtype == np.uint16 and loaded["names"].tolist() == ["wall", "sky"]
        assert loaded["scale"] == np.float32(0.5)


@pytest.mark.parametrize("payload", [b"", b"\x80\x04not a pickle", b"\x80\x04\x95"])
def test_restricted_unpickler_bad_bytes_are_one_line(tmp_path, payload):
    path = tmp_path / "index.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafeFileError) as caught:
        load_restricted_pickle(path)
    assert str(path) in _one_line(str(caught.value))


def test_restricted_unpickler_refuses_os_system(tmp_path, marker):
    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "index.pkl"
    path.write_bytes(pickle.dumps(Shell()))
    with pytest.raises(UnsafeFileError, match=r"(posix|os|nt)\.system is not allowed"):
        load_restricted_pickle(path)
    assert RestrictedUnpickler.find_class.__qualname__.startswith("RestrictedUnpickler")


def test_no_unsafe_calls_in_the_package():
    # Every torch.load passes weights_only=True; no eval/exec, plain pickle loads, unsafe yaml or shell=True.
    offenders = []
    for file in SOURCE.rglob("*.py"):
        text = file.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            where = f"{file.relative_to(SOURCE)}:{number}"
            if "torch.load(" in code and "weights_only=True" not in code:
                offenders.append(where)
            if re.search(r"(?<![\w.])(eval|exec)\(", code) or "shell=True" in code:
                offenders.append(where)
            if re.search(r"\bpickle\.loads?\(", code) or re.search(r"yaml\.(load|unsafe_load|full_load)\(", code):
                offenders.append(where)
    assert offenders == []
