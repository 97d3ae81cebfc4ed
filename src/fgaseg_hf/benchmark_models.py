"""The models `fgaseg benchmark` measures and how it drives each one (inputs, text encoding, image processor).

A benchmark preset is one of the package's presets (FGA-Seg, CAT-Seg, ITA or FC-CLIP, from `configs/`, built with
random weights) or a tiny config for smoke runs ("tiny", "tiny_catseg", "tiny_ita", "tiny_fcclip"). Two drivers
serve the four families, as the architectures share their parts: `FGASegBench` for FGA-Seg and CAT-Seg (FGA-Seg
with the no_fast decoder and without its three additions), `ITABench` for ITA and `FCCLIPBench` for FC-CLIP (ITA
without the dominant-category text queries).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import contextmanager

from .lazy_imports import LazyModule

# Imported on first use, so that `fgaseg benchmark --help` and argument errors answer without torch.
torch = LazyModule("torch")

ORIGINAL_IMAGE_SIZE = (512, 683)  # (height, width), the image of the original's measurements
PROMPT_TOKENS = 12  # a typical tokenised prompt: "a photo of a <name> in the scene" plus start/end
TINY = {
    "image_size": 64, "hidden_dim": 32, "decoder_dims": [16, 16], "decoder_guidance_dims": [16, 16],
    "decoder_guidance_proj_dims": [8, 8], "text_guidance_proj_dim": 16, "appearance_guidance_proj_dim": 16,
    "window_size": 4, "p2t_num_heads": 4, "num_attention_heads": 2, "guidance_layer_indexes": [1, 2],
    "clip_config": {
        "projection_dim": 32,
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "max_position_embeddings": 16},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
                          "image_size": 64, "patch_size": 8},
    },
}
TINY_ITA = {
    "vision_config": {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "layer_norm_eps": 1e-6},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "projection_dim": 32, "max_position_embeddings": 16, "hidden_act": "gelu"},
    "clip_image_size": 32, "feature_size": 32, "mask_feature_size": 32, "encoder_layers": 1,
    "encoder_feedforward_dim": 64, "num_attention_heads": 2, "hidden_dim": 32, "dim_feedforward": 64,
    "decoder_layers": 3, "num_learned_queries": 4, "num_text_queries": 4, "prompt_templates": ["a {}", "the {}"],
    "train_num_points": 64, "min_size_test": 64, "max_size_test": 96,
}
# The parents on their children's tiny sizes: CAT-Seg takes FGA-Seg's (its config switches the additions off and
# ignores their sizes), FC-CLIP ITA's without the text queries (its config's defaults drop the dominant categories).
TINY_CATSEG = TINY
TINY_FCCLIP = {k: v for k, v in TINY_ITA.items() if k != "num_text_queries"}
# Tiny preset -> (family, config values).
TINY_PRESETS = {"tiny": ("fgaseg", TINY), "tiny_catseg": ("catseg", TINY_CATSEG), "tiny_ita": ("ita", TINY_ITA),
                "tiny_fcclip": ("fcclip", TINY_FCCLIP)}
ITA_TRAIN_CROP = 1024  # FC-CLIP's large-scale-jitter crop
FAMILY_NAMES = {"fgaseg": "FGA-Seg", "catseg": "CAT-Seg", "ita": "ITA", "fcclip": "FC-CLIP"}


def model_family(preset: str) -> str:
    """"fgaseg", "catseg", "ita" or "fcclip": a tiny preset's, a packaged ITA / FC-CLIP preset's by its name, else
    that of an FGA-Seg-style preset (a name or a JSON file), CAT-Seg when it holds CAT-Seg's switches."""
    from .configuration_fcclip import available_fcclip_presets
    from .configuration_ita import available_ita_presets

    if preset in TINY_PRESETS:
        return TINY_PRESETS[preset][0]
    if preset in available_fcclip_presets():
        return "fcclip"
    if preset in available_ita_presets():
        return "ita"
    from .configuration_catseg import CATSEG_SWITCHES
    from .configuration_fgaseg import preset_values

    values = preset_values(preset)
    return "catseg" if all(values.get(k) == v for k, v in CATSEG_SWITCHES.items()) else "fgaseg"


def is_ita(preset: str) -> bool:
    """Whether the preset is ITA-like (ITA or FC-CLIP: Mask2Former on a ConvNeXt CLIP, no sliding window)."""
    return model_family(preset) in ("ita", "fcclip")


def check_benchmark_preset(preset: str) -> None:
    """Build the preset's config (no weights) so that a missing file, bad JSON or an impossible size is one
    `ValueError` / `OSError` before any case runs."""
    if preset in TINY_PRESETS:
        return
    try:
        family = model_family(preset)
        if family == "fgaseg":  # a packaged name or a JSON path
            from .configuration_fgaseg import FGASegConfig, preset_values

            FGASegConfig(**preset_values(preset))
        else:
            _model_classes(family)[0].from_preset(preset)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error})") from None


def _model_classes(family: str):
    if family == "catseg":
        from .configuration_catseg import CATSegConfig
        from .modeling_catseg import CATSegModel

        return CATSegConfig, CATSegModel
    if family == "ita":
        from .configuration_ita import ITAConfig
        from .modeling_ita import ITAModel

        return ITAConfig, ITAModel
    if family == "fcclip":
        from .configuration_fcclip import FCCLIPConfig
        from .modeling_fcclip import FCCLIPModel

        return FCCLIPConfig, FCCLIPModel
    from .configuration_fgaseg import FGASegConfig
    from .modeling_fgaseg import FGASegModel

    return FGASegConfig, FGASegModel


def build_model(preset: str, device: torch.device):
    """The preset's model with random weights (seeded): FGA-Seg, CAT-Seg, ITA or FC-CLIP (`model_family`)."""
    torch.manual_seed(0)
    family = model_family(preset)
    config_class, model_class = _model_classes(family)
    if preset in TINY_PRESETS:
        config = config_class(**json.loads(json.dumps(TINY_PRESETS[preset][1])))
    else:
        config = config_class.from_preset(preset)
    return model_class(config).to(device).eval()


def random_prompts(model, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """`(T, templates, PROMPT_TOKENS)` token ids: start, random words, end (real prompts are about this long)."""
    text = model.config.clip_config.text_config
    templates = model.config.num_templates
    length = min(PROMPT_TOKENS, text.max_position_embeddings)
    ids = torch.randint(0, text.vocab_size - 2, (num_classes, templates, length), generator=generator)
    ids[..., 0] = text.bos_token_id
    ids[..., -1] = text.eos_token_id
    return ids


class FGASegBench:
    """How the benchmark drives FGA-Seg and CAT-Seg: prompts `(T, templates, tokens)`, square CLIP-resolution
    inputs."""

    def text_inputs(self, model, classes: int, generator) -> dict:
        return {"input_ids": random_prompts(model, classes, generator)}

    def encode(self, model, text: dict) -> dict:
        return {"text_embeds": model.get_text_embeddings(text["input_ids"])}

    def pixel_inputs(self, model, batch: int, generator) -> dict:
        size = model.config.clip_resolution
        return {"pixel_values": torch.randn(batch, 3, size, size, generator=generator)}

    def image_processor(self, model, sliding: bool):
        from .image_processing_fgaseg import FGASegImageProcessor

        return FGASegImageProcessor.from_model_config(model.config, do_sliding_window=sliding)

    def train_inputs(self, model, case: dict, generator) -> dict:
        model.apply_finetune_policy(case.get("policy", "attention"))
        size, batch = model.config.clip_resolution, case["batch_size"]
        return {"pixel_values": torch.randn(batch, 3, size, size, generator=generator),
                "labels": torch.randint(0, case["classes"], (batch, size, size), generator=generator)}


class ITABench:
    """How the benchmark drives ITA: every class in every template (plus the bare-name dominant vocabulary), images
    at the test-time size of the 512x683 image, training on the recipe's 1024 px crops with block-shaped labels."""

    image_size = ORIGINAL_IMAGE_SIZE  # (height, width) of the image whose test-time size the forward cases use

    def text_inputs(self, model, classes: int, generator) -> dict:
        text = model.config.text_config
        templates = len(model.config.prompt_templates)
        length = min(PROMPT_TOKENS, text.max_position_embeddings)

        def rows(count):
            ids = torch.zeros(count, text.max_position_embeddings, dtype=torch.long)  # open_clip pads with 0
            ids[:, :length] = torch.randint(1, text.vocab_size - 2, (count, length), generator=generator)
            ids[:, 0], ids[:, length - 1] = text.bos_token_id, text.eos_token_id
            mask = torch.zeros_like(ids)
            mask[:, :length] = 1
            return ids, mask

        input_ids, attention_mask = rows(classes * templates)
        dominant_ids, dominant_mask = rows(classes + 1)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "dominant_input_ids": dominant_ids,
                "dominant_attention_mask": dominant_mask, "synonym_to_class": torch.arange(classes)}

    def encode(self, model, text: dict) -> dict:
        model.clip._text_cache.clear()  # time the text tower, not the cache
        classifier, synonym_to_class = model.text_classifier(
            text["input_ids"], text["attention_mask"], text["synonym_to_class"]
        )
        vocabulary = model.dominant_vocabulary(text["dominant_input_ids"], text["dominant_attention_mask"])
        return {"text_embeds": classifier[:-1], "synonym_to_class": synonym_to_class, "dominant_text_embeds": vocabulary}

    def pixel_inputs(self, model, batch: int, generator) -> dict:
        processor = self.image_processor(model, sliding=False)
        height, width = processor.resized_size(*self.image_size)
        canvas = processor.canvas_size([(height, width)])
        pixel_mask = torch.zeros(batch, *canvas, dtype=torch.long)
        pixel_mask[:, :height, :width] = 1
        return {"pixel_values": torch.randn(batch, 3, *canvas, generator=generator) * pixel_mask[:, None],
                "pixel_mask": pixel_mask}

    def image_processor(self, model, sliding: bool):
        from .image_processing_ita import ITAImageProcessor

        if sliding:
            raise ValueError("ITA has no sliding-window inference")
        return ITAImageProcessor.from_model_config(model.config)

    def train_inputs(self, model, case: dict, generator) -> dict:
        size, batch = ITA_TRAIN_CROP if case["preset"] not in TINY_PRESETS else 64, case["batch_size"]
        # A 4 x 4 grid of random classes: about as many segments (masks to match) as a real scene.
        blocks = torch.randint(0, case["classes"], (batch, 1, 4, 4), generator=generator).float()
        labels = torch.nn.functional.interpolate(blocks, size=(size, size), mode="nearest")[:, 0].long()
        return {"pixel_values": torch.randn(batch, 3, size, size, generator=generator), "labels": labels}


@contextmanager
def pruning_counts(record: list[int], fixed: Sequence[int] | None = None):
    """Appends to `record` how many classes each top-k pruning stage keeps (the largest count over the images).

    With `fixed`, stage i keeps exactly `fixed[i]` classes instead (the ones whose best auxiliary logit is highest):
    the work of a model whose pruning kept that many, whatever these random weights would keep. Outputs then differ
    from the model's; only the timings are meaningful."""
    from .fgaseg_decoder import ClassSelection

    original = ClassSelection.prune

    def prune(self, aux_logits, top_k, groups):
        if fixed is None:
            selection, keep = original(self, aux_logits, top_k, groups)
        else:
            scores = aux_logits.detach().amax(dim=(2, 3))
            if self.mask is not None:
                scores = scores.masked_fill(~self.mask, float("-inf"))
            count = min(fixed[len(record) % len(fixed)], scores.shape[1])
            keep = scores.topk(count, dim=1).indices.sort(dim=1).values
            selection = ClassSelection(self.ids.gather(1, keep), torch.ones_like(keep, dtype=torch.bool))
        record.append(int(keep.shape[1]))
        return selection, keep

    ClassSelection.prune = prune
    try:
        yield record
    finally:
        ClassSelection.prune = original


class FCCLIPBench(ITABench):
    """ITA's driver without the dominant-category vocabulary: FC-CLIP has no text queries, so its text cost is the
    classifier alone and its forward takes no dominant-category inputs."""

    def text_inputs(self, model, classes: int, generator) -> dict:
        text = super().text_inputs(model, classes, generator)
        return {k: v for k, v in text.items() if not k.startswith("dominant_")}

    def encode(self, model, text: dict) -> dict:
        model.clip._text_cache.clear()  # time the text tower, not the cache
        classifier, synonym_to_class = model.text_classifier(
            text["input_ids"], text["attention_mask"], text["synonym_to_class"]
        )
        return {"text_embeds": classifier[:-1], "synonym_to_class": synonym_to_class}


def bench_for(preset: str):
    """The driver of the preset's family: CAT-Seg runs as FGA-Seg, FC-CLIP as ITA without text queries."""
    return {"ita": ITABench, "fcclip": FCCLIPBench}.get(model_family(preset), FGASegBench)()
