#!/usr/bin/env python
"""Convert a checkpoint of the original FGA-Seg training into a folder `FGASegModel.from_pretrained` loads.

    python scripts/convert_original_checkpoint.py --checkpoint model_final.pth \
        --config configs_original/vitb_384_fast_cat.yaml --output fgaseg-vitb [--class-names coco.json]
"""

from __future__ import annotations

import argparse
import json
import sys

from fgaseg_hf.conversion import ConversionError, convert_original_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="original checkpoint (.pth; its 'model' entry is the state_dict)")
    parser.add_argument("--config", required=True, help="original detectron2 YAML (resolving _BASE_) or a JSON with the same cfg names")
    parser.add_argument("--output", required=True, help="folder to write (safetensors, config, remote code)")
    parser.add_argument("--class-names", help="JSON list of class names stored as the model's default vocabulary")
    args = parser.parse_args(argv)
    names = None
    if args.class_names:
        with open(args.class_names, encoding="utf-8") as handle:
            names = json.load(handle)
    try:
        model = convert_original_checkpoint(args.checkpoint, args.config, names)
    except (ConversionError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model.save_pretrained(args.output)
    if names:
        from fgaseg_hf.clip_tokenizer import build_clip_tokenizer

        build_clip_tokenizer().save_pretrained(args.output)
    print(f"wrote {args.output} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
