"""The `fgaseg` command. Subcommands: `convert` (an original detectron2 checkpoint -> a model folder)."""

from __future__ import annotations

import argparse
import json
import sys


def _convert(args) -> int:
    from .conversion import ConversionError, convert_original_checkpoint

    tokenizer = None
    try:
        names = None
        if args.class_names:
            with open(args.class_names, encoding="utf-8") as handle:
                names = json.load(handle)
            from .clip_tokenizer import build_clip_tokenizer

            tokenizer = build_clip_tokenizer()
        model = convert_original_checkpoint(args.checkpoint, args.config, names, tokenizer)
    except (ConversionError, ValueError, TypeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model.save_pretrained(args.output)
    if tokenizer is not None:
        tokenizer.save_pretrained(args.output)
    print(f"wrote {args.output} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgaseg", description="FGA-Seg open-vocabulary semantic segmentation")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="convert a checkpoint of the original FGA-Seg training")
    convert.add_argument("--checkpoint", required=True, help="original checkpoint (.pth; its 'model' entry is the state_dict)")
    convert.add_argument("--config", required=True, help="original detectron2 YAML (resolving _BASE_) or a JSON with the same cfg names")
    convert.add_argument("--output", required=True, help="folder to write (safetensors, config, remote code)")
    convert.add_argument("--class-names", help="JSON list of class names stored as the model's default vocabulary")
    convert.set_defaults(run=_convert)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
