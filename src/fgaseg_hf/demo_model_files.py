"""Keeping the shipped demo model (`fgaseg_hf.DEMO_MODEL`) a complete, shareable model folder: its code files and
metadata are exactly what `save_pretrained` writes from the installed package (`auto_map`, `custom_pipelines`, the
remote-code modules), so the folder works with `trust_remote_code` where fgaseg_hf is not installed, and with
`pipeline(model=folder, trust_remote_code=True)`.

    python -m fgaseg_hf.demo_model_files --check      # exit 1 and list the files that are out of date
    python -m fgaseg_hf.demo_model_files --sync       # rewrite them (code files and metadata only)

The weights, the card (README.md), evaluation.json and the training curve are the build's (scripts/
build_demo_model.py) and are never rewritten here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from . import DEMO_MODEL

WEIGHTS = "model.safetensors"
# Keys that follow the installed transformers or how the files were loaded (HF_HUB_OFFLINE, a local path), not
# this package: ignored when comparing. The loading ones say nothing about a shared folder, so they are not shipped.
VOLATILE_KEYS = {"config.json": ("transformers_version",), "tokenizer_config.json": ("is_local", "local_files_only")}
NOT_SHIPPED = {"tokenizer_config.json": ("is_local", "local_files_only")}


def saved_files(folder: str | Path) -> dict[str, bytes]:
    """What `save_pretrained` of the folder's model and processor writes now, except the weights: {name: bytes}."""
    from . import register_auto_classes
    from .segment import load_model_and_processor

    register_auto_classes()  # the remote-code entries come from the registration
    model, processor = load_model_and_processor(str(folder))
    with tempfile.TemporaryDirectory() as scratch:
        model.save_pretrained(scratch)
        processor.save_pretrained(scratch)
        files = {p.name: p.read_bytes() for p in sorted(Path(scratch).iterdir()) if p.is_file() and p.name != WEIGHTS}
    for name, keys in NOT_SHIPPED.items():
        if name in files:
            data = json.loads(files[name])
            files[name] = (json.dumps({k: v for k, v in data.items() if k not in keys}, indent=2, sort_keys=True)
                           + "\n").encode()
    return files


def _comparable(name: str, content: bytes):
    if name in VOLATILE_KEYS:
        data = json.loads(content)
        return {k: v for k, v in data.items() if k not in VOLATILE_KEYS[name]}
    return content


def differences(folder: str | Path = DEMO_MODEL, expected: dict[str, bytes] | None = None) -> list[str]:
    """Files of `folder` that differ from what `save_pretrained` writes (missing, different, or code files it no
    longer writes), sorted."""
    folder = Path(folder)
    expected = saved_files(folder) if expected is None else expected
    stale = []
    for name, content in expected.items():
        path = folder / name
        if not path.is_file() or _comparable(name, path.read_bytes()) != _comparable(name, content):
            stale.append(name)
    stale += [p.name for p in folder.glob("*.py") if p.name not in expected]
    return sorted(stale)


def sync(folder: str | Path = DEMO_MODEL) -> list[str]:
    """Rewrite the out-of-date code files and metadata of `folder` from the installed package; returns their
    names. In the shipped demo folder, whose code files all come from here, code files that save_pretrained no
    longer writes are removed; in any other folder they are only listed."""
    folder = Path(folder)
    expected = saved_files(folder)
    changed = differences(folder, expected)
    for name in changed:
        if name in expected:
            (folder / name).write_bytes(expected[name])
        elif folder.resolve() == Path(DEMO_MODEL).resolve():
            (folder / name).unlink()
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fgaseg_hf.demo_model_files", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="list the out-of-date files; exit 1 if there are any")
    action.add_argument("--sync", action="store_true", help="rewrite the out-of-date code files and metadata")
    parser.add_argument("--folder", default=DEMO_MODEL, help="model folder (default: the shipped demo model)")
    args = parser.parse_args(argv)
    if not (Path(args.folder) / "config.json").is_file():
        print(f"error: {args.folder}: not a model folder (no config.json)", file=sys.stderr)
        return 2
    if args.sync:
        changed = sync(args.folder)
        print(f"rewrote {len(changed)} file(s) in {args.folder}" + (f": {', '.join(changed)}" if changed else ""))
        return 0
    stale = differences(args.folder)
    for name in stale:
        print(f"out of date: {Path(args.folder) / name}")
    if stale:
        print("run: python -m fgaseg_hf.demo_model_files --sync", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
