"""One converter for every family: detect what an original checkpoint holds, convert it, save the processor beside it.

The architecture comes from the cfg's `MODEL.META_ARCHITECTURE` ("FGASeg", "CATSeg", "FCCLIP"; FC-CLIP and ITA share
"FCCLIP" and are told apart by ITA's dominant-category projection, `backbone.add_tgt_em`), or, when the cfg does not
name one, from the checkpoint's keys. `CONVERTERS` is the one place a family plugs in.

`download_published` fetches CAT-Seg's released weights (Hugging Face Space `hamacojr/CAT-Seg-weights`) with
huggingface_hub; the matching original cfg values ship as data in the presets (`original_cfg`).
"""

from __future__ import annotations

import os

from .conversion import CLIP, HEAD, ConversionError, is_catseg_state, load_original_checkpoint, read_original_config

ITA_CLIP = "backbone.clip_model."
ITA_DOMINANT = "backbone.add_tgt_em.weight"
FAMILY_NAMES = {"FGASeg": "FGA-Seg", "CATSeg": "CAT-Seg", "ITA": "ITA", "FCCLIP": "FC-CLIP"}

# Released checkpoints `--from-hub` knows: (repo id, repo type, file, preset holding the original cfg).
PUBLISHED = {
    "catseg-vitb": ("hamacojr/CAT-Seg-weights", "space", "model_base.pth", "catseg_vitb_384"),
    "catseg-vitl": ("hamacojr/CAT-Seg-weights", "space", "model_large.pth", "catseg_vitl_336"),
}


def _convert_fgaseg_family(state, cfg, class_names, tokenizer):
    from .conversion import convert_original_checkpoint

    return convert_original_checkpoint(state, cfg, class_names, tokenizer)


def _convert_ita_family(state, cfg, class_names, tokenizer):
    from .conversion_ita import convert_original_checkpoint

    if class_names:
        raise ConversionError("--class-names is not supported for ITA / FC-CLIP checkpoints (they keep the cfg's vocabulary)")
    return convert_original_checkpoint(state, cfg)


# Architecture -> converter(state, cfg, class_names, tokenizer) -> model. FC-CLIP goes through the ITA converter,
# which builds it from the cfg (no dominant-category projection: `num_text_queries` 0).
CONVERTERS = {
    "FGASeg": _convert_fgaseg_family,
    "CATSeg": _convert_fgaseg_family,
    "ITA": _convert_ita_family,
    "FCCLIP": _convert_ita_family,
}


def _meta_architecture(cfg: dict) -> str | None:
    for key in ("MODEL.META_ARCHITECTURE", "cfg.MODEL.META_ARCHITECTURE"):
        if cfg.get(key):
            return str(cfg[key])
    return None


def architecture_from_keys(state: dict) -> str | None:
    """FGA-Seg, CAT-Seg, ITA or FC-CLIP from the checkpoint's key names; None when none fits."""
    if any(k.startswith(CLIP) for k in state) and HEAD + "transformer.conv1.weight" in state:
        return "CATSeg" if is_catseg_state(state) else "FGASeg"
    if any(k.startswith(ITA_CLIP) for k in state) and any(k.startswith("sem_seg_head.predictor.") for k in state):
        return "ITA" if ITA_DOMINANT in state else "FCCLIP"
    return None


def detect_architecture(state: dict, cfg: dict) -> str:
    """The architecture a checkpoint holds (a key of `CONVERTERS`); `ConversionError` naming what was found."""
    from_keys = architecture_from_keys(state)
    named = _meta_architecture(cfg)
    if named is None:
        if from_keys is None:
            sample = ", ".join(sorted(state)[:3]) or "no tensors"
            raise ConversionError(
                f"the cfg names no MODEL.META_ARCHITECTURE and the checkpoint's keys fit none of FGA-Seg, CAT-Seg, "
                f"ITA, FC-CLIP (keys like: {sample})"
            )
        return from_keys
    if named == "FCCLIP":
        named = "ITA" if ITA_DOMINANT in state else "FCCLIP"
    if named not in CONVERTERS:
        raise ConversionError(
            f"MODEL.META_ARCHITECTURE {named!r} is not one of FGASeg, CATSeg, FCCLIP (FC-CLIP or ITA): cannot convert it"
        )
    if from_keys != named:
        found = FAMILY_NAMES.get(from_keys, "no known architecture")
        raise ConversionError(
            f"the cfg says {FAMILY_NAMES[named]} (MODEL.META_ARCHITECTURE {named!r}) but the checkpoint's keys hold {found}"
        )
    return named


def convert_checkpoint(checkpoint, config, class_names=None, tokenizer=None):
    """Any supported original checkpoint (path or state dict; optimizer / trainer entries beside `model` are
    ignored) + its cfg (path, or a dict of dotted cfg names) -> `(model, architecture)`."""
    state = checkpoint if isinstance(checkpoint, dict) else load_original_checkpoint(str(checkpoint))
    cfg = dict(config) if isinstance(config, dict) else read_original_config(str(config))
    architecture = detect_architecture(state, cfg)
    if architecture in ("ITA", "FCCLIP") and not isinstance(config, dict):
        cfg = str(config)  # the ITA converter reads its own cfg layout (nested, with `_BASE_`)
    return CONVERTERS[architecture](state, cfg, class_names, tokenizer), architecture


def build_processor(model, tokenizer=None):
    """The processor a converted model is saved with (CLIP's BPE tokenizer; None for another text vocabulary)."""
    from .clip_tokenizer import build_clip_tokenizer

    config = model.config
    if config.model_type in ("fgaseg", "catseg"):
        text = config.clip_config.text_config
        if text.vocab_size != 49408:
            return None
        from .processing_fgaseg import FGASegProcessor

        tokenizer = tokenizer or build_clip_tokenizer(text.max_position_embeddings)
        return FGASegProcessor.from_model_config(config, tokenizer)
    from .processing_ita import ITAProcessor

    text = config.text_config
    if text.vocab_size != 49408:
        return None
    return ITAProcessor.from_model_config(config, tokenizer or build_clip_tokenizer(text.max_position_embeddings))


def published_source(name: str) -> tuple[str, str, str, dict]:
    """`(repo_id, repo_type, filename, original cfg)` of a released checkpoint `--from-hub` knows."""
    if name not in PUBLISHED:
        raise ConversionError(f"--from-hub {name!r} is not known; choose one of {', '.join(PUBLISHED)}")
    repo_id, repo_type, filename, preset = PUBLISHED[name]
    cfg = dict(preset_file_block(preset, "original_cfg"))
    return repo_id, repo_type, filename, cfg


def preset_file_block(preset: str, block: str) -> dict:
    """A top-level block of a preset file other than "model" (e.g. the original cfg values of a release)."""
    import json

    from .configuration_fgaseg import PRESET_DIR

    path = os.path.join(PRESET_DIR, f"{preset}.json")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if block not in data:
        raise ConversionError(f"preset {preset!r} has no {block!r} block")
    return data[block]


def download_published(name: str) -> tuple[str, dict]:
    """Download a released checkpoint with huggingface_hub; returns `(local path, original cfg)`. Offline (or on
    any download failure) a `ConversionError` says what to download and from where."""
    repo_id, repo_type, filename, cfg = published_source(name)
    url = f"https://huggingface.co/spaces/{repo_id}/blob/main/{filename}"
    import logging

    # huggingface_hub logs each failed request as a warning; the one line below says all of it.
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id=repo_id, filename=filename, repo_type=repo_type)
    except Exception as error:  # offline, no such file, interrupted: all mean "get it by hand"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(
            f"could not download {filename} from the Hugging Face Space {repo_id} ({reason}); download {url} by hand "
            f"and run: fgaseg convert --checkpoint {filename} --config <CAT-Seg's configs/"
            f"{'vitb_384' if 'base' in filename else 'vitl_336'}.yaml> --output <folder>"
        ) from None
    finally:
        hub_logger.setLevel(level)
    return path, cfg


def _save_into(folder, model, processor) -> None:
    """Save through a staging folder: what save_pretrained names is checked against the user's files (as if
    adding, so that a same-named file fgaseg did not write is refused) before an earlier run's files are removed."""
    from .safe_io import OutputFolder

    def write(staging):
        model.save_pretrained(staging)
        if processor is not None:
            processor.save_pretrained(staging)

    additive = OutputFolder(folder.path, overwrite=True, option=folder.option, additive=True)
    folder.write_staged(write, check_with=additive, before_claim=folder.prepare)


def convert_to_folder(output, checkpoint=None, config=None, from_hub: str | None = None, class_names=None,
                      overwrite: bool = False) -> dict:
    """`fgaseg convert`: convert (downloading first with `from_hub`), then save the model and its processor in
    `output`. Returns `{"family", "architecture", "parameters", "notes"}`.

    A non-empty `output` is refused unless `overwrite`; then the files an earlier run recorded there are replaced
    and a file fgaseg did not write is never touched (`safe_io.OutputFolder`)."""
    from .clip_tokenizer import build_clip_tokenizer
    from .safe_io import OutputFolder

    folder = OutputFolder(output, overwrite)
    folder.prepare(modify=False)  # before the conversion: a refusal costs nothing
    if from_hub is not None:
        if checkpoint or config:
            raise ConversionError("--from-hub downloads the checkpoint and brings its config: drop --checkpoint / --config")
        checkpoint, config = download_published(from_hub)
    tokenizer = build_clip_tokenizer() if class_names else None
    model, architecture = convert_checkpoint(checkpoint, config, class_names, tokenizer)
    notes = []
    processor = build_processor(model, tokenizer)
    if processor is None:
        notes.append("the text vocabulary is not CLIP's; no processor was saved")
    _save_into(folder, model, processor)
    return {
        "family": FAMILY_NAMES[architecture], "architecture": architecture,
        "parameters": sum(p.numel() for p in model.parameters()), "notes": notes,
    }


__all__ = [
    "CONVERTERS", "PUBLISHED", "architecture_from_keys", "build_processor", "convert_checkpoint", "convert_to_folder",
    "detect_architecture", "download_published", "published_source",
]
