"""Which `checkpoint-N` folder of a training run can be resumed from.

`Trainer` writes a checkpoint file by file (weights, optimizer, scheduler, RNG states, `trainer_state.json` last) with
no final rename, so a run killed while saving leaves the newest folder incomplete, and transformers'
`get_last_checkpoint` would pick it anyway. Here a checkpoint counts only when its `trainer_state.json` parses, its
weights file is whole (safetensors: the header covers the file; torch files: the zip's central directory, written
last, is there) and its other state files are whole too; `--resume` takes the newest such folder.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_TORCH_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")


def _whole_torch_file(path: Path) -> bool:
    # torch.save writes a zip whose central directory comes last: a truncated file has none.
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _whole_safetensors(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:  # refuses a header that does not cover the whole file
            handle.keys()
        return True
    except Exception:  # any failure means the file is not whole
        return False


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` cannot be resumed from (one phrase), or None when it is complete."""
    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json (the save did not finish)"
    except (OSError, ValueError):
        return "trainer_state.json is truncated or not JSON"
    weights = [folder / name for name in _WEIGHTS if (folder / name).is_file()]
    if not weights:
        return "no model weights"
    for file in weights:
        if file.suffix == ".safetensors" and not _whole_safetensors(file):
            return f"{file.name} is truncated or corrupt"
        if file.suffix == ".bin" and not _whole_torch_file(file):
            return f"{file.name} is truncated or corrupt"
        if file.suffix == ".json":
            try:
                shards = set(json.loads(file.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"{file.name} is truncated or not a shard index"
            for shard in sorted(shards):
                path = folder / shard
                whole = _whole_safetensors(path) if shard.endswith(".safetensors") else _whole_torch_file(path)
                if not path.is_file() or not whole:
                    return f"weight shard {shard} is missing or truncated"
    for name in _TORCH_STATE:
        if (folder / name).exists() and not _whole_torch_file(folder / name):
            return f"{name} is truncated or corrupt"
    return None


def resumable_checkpoints(output_dir: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """`(newest complete checkpoint or None, [(newer incomplete checkpoint, why)])` in a run's output folder."""
    root = Path(output_dir)
    if not root.is_dir():
        return None, []
    found = sorted(
        ((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))),
        reverse=True,
    )
    skipped = []
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped





def resolve_resume(resume, output_dir: str | os.PathLike, report=None) -> str | None:
    """What `Trainer.train(resume_from_checkpoint=...)` gets for `--resume`: None (a fresh run), the newest
    complete checkpoint of `output_dir` (`resume=True`), or the checked folder given. Incomplete newer checkpoints
    are passed over, each told to `report` (default: stderr); nothing to resume is a `TrainingConfigError`."""
    import sys

    from .training_families import TrainingConfigError

    if resume is None or resume is False:
        return None
    report = report or (lambda line: print(line, file=sys.stderr))
    if resume is True:
        newest, skipped = resumable_checkpoints(output_dir)
        for path, problem in skipped:
            report(f"note: --resume passes over {path}: {problem}")
        if newest is None:
            found = f" ({len(skipped)} incomplete)" if skipped else ""
            raise TrainingConfigError(f"--resume: no complete checkpoint-N folder in {output_dir}{found}; nothing to resume")
        return str(newest)
    problem = checkpoint_problem(resume)
    if problem is not None:
        raise TrainingConfigError(f"--resume {resume}: cannot resume from it: {problem}")
    return str(resume)
__all__ = ["checkpoint_problem", "resolve_resume", "resumable_checkpoints"]
