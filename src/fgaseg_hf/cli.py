"""The `fgaseg` command. Subcommands: `segment` (images + class names -> label maps and overlay pictures),
`convert` (an original detectron2 checkpoint -> a model folder), and `train`, `evaluate`, `prepare`, `benchmark`,
`synthetic`
(each with its own options; see `fgaseg <command> --help`)."""

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
    if model.config.clip_config.text_config.vocab_size == 49408:
        # The processor (image processor + CLIP tokenizer) makes the folder usable by pipelines and `fgaseg segment`.
        from .clip_tokenizer import build_clip_tokenizer
        from .processing_fgaseg import FGASegProcessor

        tokenizer = tokenizer or build_clip_tokenizer(model.config.clip_config.text_config.max_position_embeddings)
        FGASegProcessor.from_model_config(model.config, tokenizer).save_pretrained(args.output)
    else:
        print("note: the text vocabulary is not CLIP's; no tokenizer was saved", file=sys.stderr)
    print(f"wrote {args.output} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0


def _segment(args) -> int:
    from .segment import SegmentError, segment_images

    if args.device == "cpu":
        from .cpu_memory import keep_freed_memory

        keep_freed_memory()
    try:
        records = segment_images(
            args.images, args.labels, model=args.model, output=args.output, sliding_window=args.sliding_window,
            device=args.device, dtype=args.dtype, batch_size=args.batch_size,
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
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    segment = commands.add_parser("segment", help="segment images into the classes you name")
    segment.add_argument("images", nargs="+", help="image files")
    segment.add_argument("--labels", help='class names, comma-separated ("sky, tree, car"); separate with ";" when '
                         "a name holds commas. Default: the model's own vocabulary")
    segment.add_argument("--model", help="model folder or Hub id (default: the embedded demo model)")
    segment.add_argument("--output", default="fgaseg-output", help="folder for the PNGs (default: %(default)s)")
    segment.add_argument("--json", action="store_true", help="print per-class pixel fractions and scores as JSON")
    segment.add_argument("--sliding-window", action=argparse.BooleanOptionalAction, default=None,
                         help="the original's sliding-window inference (default: the model's processor setting)")
    segment.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    segment.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: %(default)s)")
    segment.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: %(default)s)")
    segment.set_defaults(run=_segment)
    convert = commands.add_parser("convert", help="convert a checkpoint of the original FGA-Seg training")
    convert.add_argument("--checkpoint", required=True, help="original checkpoint (.pth; its 'model' entry is the state_dict)")
    convert.add_argument("--config", required=True, help="original detectron2 YAML (resolving _BASE_) or a JSON with the same cfg names")
    convert.add_argument("--output", required=True, help="folder to write (safetensors, config, remote code)")
    convert.add_argument("--class-names", help="JSON list of class names stored as the model's default vocabulary")
    convert.set_defaults(run=_convert)
    return parser


# Subcommands with their own argument parsers.
DELEGATED = {
    "train": ("fgaseg_hf.training", "fine-tune with transformers' Trainer from a run config"),
    "synthetic": ("fgaseg_hf.data.synthetic", "write the procedural synthetic-scenes dataset"),
    "evaluate": ("fgaseg_hf.evaluation", "mIoU on benchmarks with the original's protocol: JSON, Markdown, card"),
    "prepare": ("fgaseg_hf.data.prepare", "turn raw benchmark downloads into the prepared layouts"),
    "benchmark": ("fgaseg_hf.benchmark", "speed and memory per class count, batch size and dtype: JSON, Markdown"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        return importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
