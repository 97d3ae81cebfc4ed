#!/usr/bin/env python
"""Convert a checkpoint of the original FGA-Seg training into a folder `FGASegModel.from_pretrained` loads
(the same as `fgaseg convert`):

    python scripts/convert_original_checkpoint.py --checkpoint model_final.pth \
        --config vitb_384_fast_cat.yaml --output fgaseg-vitb [--class-names coco.json]
"""

import sys

from fgaseg_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
