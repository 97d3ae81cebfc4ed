#!/usr/bin/env python
"""Write the procedural "synthetic scenes" segmentation dataset (train/ and validation/ image folders):

    python scripts/make_synthetic_scenes.py --output data/synthetic --train 3000 --validation 300 --size 128 --seed 0

Runs `fgaseg_hf.data.synthetic.main`.
"""

import importlib.util
import sys
from pathlib import Path


def _load_synthetic():
    # Importing the fgaseg_hf package pulls in torch and transformers (seconds); the generator needs only numpy
    # and Pillow, so load its module file directly. find_spec locates the package without importing it.
    package = importlib.util.find_spec("fgaseg_hf")
    if package is None or not package.submodule_search_locations:
        raise SystemExit("fgaseg_hf is not installed: pip install -e .")
    path = Path(next(iter(package.submodule_search_locations))) / "data" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("_fgaseg_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(_load_synthetic().main())
