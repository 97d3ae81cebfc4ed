"""Saved evaluation state of `fgaseg evaluate`, so that `--resume` continues an interrupted run exactly.

Each process saves, per benchmark, one safetensors file ``<benchmark>.rank<r>-of-<n>.safetensors`` in the state
folder: its raw (reference value, prediction) pair counts (`PairCounts`), how many of its images are done, the
seconds spent, and the run's identity (model digest, benchmark and its images, protocol, dtype, class names, and
for ITA-family models the class lists of `--class-names`) in the file's metadata. Files are written under a
temporary name and moved into place with ``os.replace``, so a run killed while saving leaves the previous complete
file; they are read with ``safetensors`` (no pickle).

Counts are integers, and each process always takes the same images (every n-th), so a resumed run adds exactly
the counts an uninterrupted run would have: the results are identical.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

STATE_SUFFIX = ".safetensors"


class StateError(ValueError):
    """A saved state that cannot be used for this run, reported as one line."""


def model_digest(location: str) -> str:
    """sha256 over a model folder's config and weight files (the Hub id itself when it is not a local folder)."""
    folder = Path(location)
    if not folder.is_dir():
        return f"id:{location}"
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and (
        p.suffix in (".safetensors", ".bin", ".pth") or p.name in ("config.json", "preprocessor_config.json")))
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def dataset_digest(ids: list[str]) -> str:
    """sha256 of the ordered image ids of a benchmark."""
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def state_path(folder: Path, key: str, rank: int, world: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return folder / f"{safe}.rank{rank}-of-{world}{STATE_SUFFIX}"


def saved_states(folder: Path, key: str | None = None) -> list[Path]:
    """The state files in `folder` (of benchmark `key` when given)."""
    if not folder.is_dir():
        return []
    pattern = "*" if key is None else state_path(folder, key, 0, 1).name.split(".rank")[0]
    return sorted(folder.glob(f"{pattern}.rank*-of-*{STATE_SUFFIX}"))


def save_state(path: Path, counts, done: int, seconds: float, identity: dict[str, Any], finished: bool) -> None:
    """Write one process's state atomically (temporary file in the same folder, then ``os.replace``)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.contiguous() for name, tensor in counts.state_dict().items()}
    metadata = {"identity": json.dumps(identity, sort_keys=True), "done": str(int(done)),
                "seconds": repr(float(seconds)), "finished": "1" if finished else "0", "format": "fgaseg-eval-1"}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(temporary), metadata=metadata)
    os.replace(temporary, path)


def load_state(path: Path, identity: dict[str, Any]):
    """Read a state file written by `save_state` for a run with this `identity`.

    Returns:
        ``(PairCounts, done, seconds, finished)``.

    Raises:
        StateError: unreadable file, or one written for a different model, benchmark, protocol or settings (the
            message names the first difference).
    """
    from safetensors import safe_open

    from .metrics.pair_counts import PairCounts

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # a truncated or foreign file: safetensors raises its own error types
        raise StateError(f"--resume: cannot read the saved state {path}: {error}") from None
    if metadata.get("format") != "fgaseg-eval-1":
        raise StateError(f"--resume: {path} is not a saved fgaseg evaluation state")
    saved = json.loads(metadata.get("identity", "{}"))
    for name in sorted(set(saved) | set(identity)):
        if saved.get(name) != identity.get(name):
            raise StateError(
                f"--resume: the saved evaluation in {path.parent} was made with another {name.replace('_', ' ')} "
                f"({_short(saved.get(name))}, now {_short(identity.get(name))}); resume with the same settings or "
                "use another --state-dir"
            )
    try:
        counts = PairCounts.from_state_dict(tensors)
    except ValueError as error:
        raise StateError(f"--resume: {path}: {error}") from None
    return counts, int(metadata["done"]), float(metadata["seconds"]), metadata["finished"] == "1"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def check_world_size(folder: Path, key: str, world: int) -> None:
    """Refuse states saved by another number of processes (each process resumes its own share of the images)."""
    for path in saved_states(folder, key):
        written = int(path.name.rsplit("-of-", 1)[1].split(".")[0])
        if written != world:
            raise StateError(
                f"--resume: the saved evaluation of {key} in {folder} ran on {written} process(es); resume it with "
                f"{written}, not {world}"
            )
