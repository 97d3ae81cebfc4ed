"""The `fgaseg` command. Subcommands: `segment` (images + class names -> label maps and overlay pictures),
`convert` (an original detectron2 checkpoint -> a model folder), and `train`, `evaluate`, `prepare`, `benchmark`,
`synthetic`
(each with its own options; see `fgaseg <command> --help`)."""

from __future__ import annotations

import argparse
import json
import sys

# Only the standard library at the top: help, --version and argument errors answer without torch or transformers
# (each subcommand imports what it needs when it runs).
from . import __version__


def _convert(args) -> int:
    from .conversion import ConversionError
    from .conversion_auto import convert_to_folder

    if args.from_hub is None and not (args.checkpoint and args.config):
        print("error: give --checkpoint and --config, or --from-hub catseg-vitb|catseg-vitl", file=sys.stderr)
        return 2
    try:
        names = None
        if args.class_names:
            with open(args.class_names, encoding="utf-8") as handle:
                names = json.load(handle)
        report = convert_to_folder(
            args.output, checkpoint=args.checkpoint, config=args.config, from_hub=args.from_hub, class_names=names,
            overwrite=args.overwrite,
        )
    except (ConversionError, ValueError, TypeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.output}: {report['family']} ({report['parameters']:,} parameters)")
    return 0


def _segment(args) -> int:
    from .segment import SegmentError, segment_images

    if args.device == "cpu":
        from .cpu_memory import keep_freed_memory

        keep_freed_memory()
    try:
        records = segment_images(
            args.images, args.labels, model=args.model, output=args.output, sliding_window=args.sliding_window,
            device=args.device, dtype=args.dtype, batch_size=args.batch_size, overwrite=args.overwrite,
        )
    except (SegmentError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(records if len(records) > 1 else records[0], indent=2))
    else:
        for record in records:
            present = sorted(((f, n) for n, f in record["classes"].items() if f > 0), reverse=True)
            summary = ", ".join(f"{n} {f:.1%}" for f, n in present)
            print(f"{record['image']} -> {record['overlay_png']} ({summary})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgaseg", description="FGA-Seg open-vocabulary semantic segmentation")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    segment = commands.add_parser("segment", help="segment images into the classes you name")
    segment.add_argument("images", nargs="+", help="image files")
    segment.add_argument("--labels", help='class names, comma-separated ("sky, tree, car"); separate with ";" when '
                         "a name holds commas. Default: the model's own vocabulary")
    segment.add_argument("--model", help="model folder or Hub id (default: the embedded demo model)")
    segment.add_argument("--output", default="fgaseg-output", help="folder for the PNGs (default: %(default)s)")
    segment.add_argument("--json", action="store_true",
                         help="print per image a record of its PNGs, per-class pixel fractions and scores as JSON: "
                         "one object for one image, a list of them for several")
    segment.add_argument("--sliding-window", action=argparse.BooleanOptionalAction, default=None,
                         help="the original's sliding-window inference (default: the model's processor setting)")
    segment.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    segment.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: %(default)s)")
    segment.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: %(default)s)")
    segment.add_argument("--overwrite", action="store_true",
                         help="replace outputs an earlier run wrote in --output (files fgaseg did not write are never replaced)")
    segment.set_defaults(run=_segment)
    convert = commands.add_parser(
        "convert", help="convert an original FGA-Seg, CAT-Seg, ITA or FC-CLIP checkpoint (detected from the cfg or keys)"
    )
    convert.add_argument("--checkpoint", help="original checkpoint (.pth; its 'model' entry is the state_dict)")
    convert.add_argument("--config", help="original detectron2 YAML (resolving _BASE_) or a JSON with the same cfg names")
    convert.add_argument("--from-hub", choices=["catseg-vitb", "catseg-vitl"],
                         help="download CAT-Seg's released ViT-B/16 or ViT-L/14 weights (Hugging Face Space "
                         "hamacojr/CAT-Seg-weights) and convert them with the matching original config")
    convert.add_argument("--output", required=True, help="folder to write (safetensors, config, remote code)")
    convert.add_argument("--class-names", help="JSON list of class names stored as the model's default vocabulary")
    convert.add_argument("--overwrite", action="store_true",
                         help="write into a non-empty --output, replacing what an earlier run wrote there (files "
                         "fgaseg did not write are never replaced)")
    convert.set_defaults(run=_convert)
    return parser


# Subcommands with their own argument parsers: name -> (module with main(argv), help line). The module is imported
# only when the subcommand runs; its top level should stay light (see LIGHT_PARSERS otherwise).
DELEGATED = {
    "train": ("fgaseg_hf.training", "fine-tune with transformers' Trainer from a run config"),
    "synthetic": ("fgaseg_hf.data.synthetic", "write the procedural synthetic-scenes dataset"),
    "evaluate": ("fgaseg_hf.evaluation", "mIoU on benchmarks with the original's protocol: JSON, Markdown, card"),
    "prepare": ("fgaseg_hf.data.prepare", "turn raw benchmark downloads into the prepared layouts"),
    "benchmark": ("fgaseg_hf.benchmark", "speed and memory per class count, batch size and dtype: JSON, Markdown"),
    "demo": ("fgaseg_hf.demo.cli", "serve the web demo (Gradio) on localhost: upload a photo, type classes"),
}


# Subcommands whose module imports torch at its top: a light module with the same `build_parser()`, so that
# `--help` and argument errors answer before the heavy import.
LIGHT_PARSERS = {
    "train": "fgaseg_hf.training_cli",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        if argv[0] in LIGHT_PARSERS:
            importlib.import_module(LIGHT_PARSERS[argv[0]]).build_parser().parse_args(argv[1:])
        return importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
