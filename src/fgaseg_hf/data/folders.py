"""Split folders as `fgaseg synthetic` writes them: `images/`, `annotations/` and a `metadata.jsonl` whose
`file_name` / `annotation_file_name` keys become the `image` / `annotation` Image() columns."""

from __future__ import annotations

import os
from pathlib import Path


def load_split_folder(split_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """One split folder as a `datasets.Dataset`, offline (the `imagefolder` builder ships with `datasets`)."""
    import datasets

    split_dir = Path(split_dir)
    if not (split_dir / "metadata.jsonl").read_text().strip():  # imagefolder cannot load an empty split
        features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
        return datasets.Dataset.from_dict({"image": [], "annotation": []}, features=features)
    # Each split folder is its own imagefolder, whose single split is named "train". Its progress bars would say
    # "Downloading data: N files" about a local folder: hidden while it loads.
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(
            "imagefolder", data_dir=str(split_dir), split="train", cache_dir=None if cache_dir is None else str(cache_dir)
        )
    finally:
        if shown:
            datasets.enable_progress_bars()
