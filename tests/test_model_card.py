"""Model cards (FGA-Seg and ITA): generated cards parse and the Hub accepts them, results become a valid model-index,
the committed cards in model_cards/ match the generator, and the CLI writes files."""

import copy
import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config
from huggingface_hub import ModelCard

from fgaseg_hf import FGASegConfig
from fgaseg_hf.model_card import (
    CARD_TEMPLATE,
    ITA_CLIP_HUB_ID,
    REQUIRED_METADATA_KEYS,
    default_model_name,
    main,
    parse_model_card,
    render_model_card,
    validate_model_index,
    write_model_card,
)

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"
# card file -> (preset, base model, the architecture's tag)
PRESET_CARDS = {
    "fgaseg-vitb16-384.md": ("vitb_384_fast_cat", "openai/clip-vit-base-patch16", "fgaseg"),
    "fgaseg-vitl14-336.md": ("vitl_336_fast_cat", "openai/clip-vit-large-patch14-336", "fgaseg"),
    "ita-convnext-large-d-320.md": ("ita_convnext_large_d_320", ITA_CLIP_HUB_ID, "ita"),
}
RESULTS = {
    "ade150": {"dataset_name": "ADE20K-150", "dataset_type": "scene_parse_150", "split": "validation",
               "mIoU": 0.312, "per_class_iou": {"wall": 0.71, "floor": 0.655, "lamp": None}},
    "pc59": {"dataset_name": "Pascal Context-59", "dataset_type": "pascal_context", "split": "validation",
             "mIoU": 0.574},
}


def preset_card(preset: str, base_model: str) -> str:
    name = next(file for file, (p, _, _) in PRESET_CARDS.items() if p == preset)[:-3]
    return render_model_card(preset, model_name=name, base_model=base_model)


@pytest.mark.parametrize("file", sorted(PRESET_CARDS))
def test_preset_cards_parse_and_hub_accepts_them(file):
    preset, base_model, tag = PRESET_CARDS[file]
    text = preset_card(preset, base_model)
    front = yaml.safe_load(text.split("---\n")[1])
    for key in REQUIRED_METADATA_KEYS:
        assert key in front
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "image-segmentation"
    assert {tag, "open-vocabulary", "semantic-segmentation", "clip"} <= set(front["tags"])
    assert front["base_model"] == base_model and "model-index" not in front
    metadata, body = parse_model_card(text)
    assert metadata == front
    data = ModelCard(text, ignore_metadata_errors=False).data
    assert data.license == "apache-2.0" and data.base_model == base_model
    assert "never released" in body and "fgaseg train --config" in body and "fgaseg evaluate" in body
    assert f'"{preset}"' in body and f"  preset: {preset}\n" in body and f"# {file[:-3]}\n" in body
    if tag == "fgaseg":
        config = FGASegConfig.from_preset(preset)
        assert f"{config.clip_resolution} x {config.clip_resolution} px" in body and f'preset="{preset}"' in body


def test_card_names_the_clip_variant():
    assert "CLIP ViT-B/16 at 384 px" in preset_card("vitb_384_fast_cat", "openai/clip-vit-base-patch16")
    assert "CLIP ViT-L/14 at 336 px" in preset_card("vitl_336_fast_cat", "openai/clip-vit-large-patch14-336")


@pytest.mark.parametrize("file", sorted(PRESET_CARDS))
def test_committed_cards_are_up_to_date(file):
    preset, base_model, _ = PRESET_CARDS[file]
    committed = (CARDS / file).read_text(encoding="utf-8")
    assert committed == preset_card(preset, base_model), (
        f"model_cards/{file} is stale: python -m fgaseg_hf.model_card --preset {preset} --output model_cards/{file}"
    )


def test_committed_template_is_the_renderers():
    assert (CARDS / "template.md").read_text(encoding="utf-8") == CARD_TEMPLATE


def test_results_become_a_valid_model_index():
    text = render_model_card("vitb_384_fast_cat", RESULTS, model_name="my-fgaseg", datasets=["my-org/coco-stuff"],
                             extra_sections={"Training data": "COCO-Stuff, 171 classes."})
    metadata, body = parse_model_card(text)
    assert metadata["datasets"] == ["my-org/coco-stuff"] and "base_model" not in metadata
    validate_model_index(metadata)
    (entry,) = metadata["model-index"]
    assert entry["name"] == "my-fgaseg"
    assert len(entry["results"]) == len(RESULTS)
    for result, expected in zip(entry["results"], RESULTS.values()):
        assert result["task"] == {"type": "image-segmentation", "name": "Semantic Segmentation"}
        assert result["dataset"] == {"name": expected["dataset_name"], "type": expected["dataset_type"],
                                     "split": expected["split"]}
        assert result["metrics"] == [{"type": "mean_iou", "value": expected["mIoU"], "name": "mIoU"}]
    hub = ModelCard(text, ignore_metadata_errors=False).data
    assert [r.metric_value for r in hub.eval_results] == [e["mIoU"] for e in RESULTS.values()]
    assert hub.model_name == "my-fgaseg"
    assert "| ade150 | ADE20K-150 (`scene_parse_150`) | validation | 31.2 |" in body
    assert "| floor | 65.5 |" in body and "| lamp | n/a |" in body
    assert "## Training data\n\nCOCO-Stuff, 171 classes." in body


@pytest.mark.parametrize("mutate", [
    lambda r: r["ade150"].pop("dataset_type"),
    lambda r: r["ade150"].update(mIoU=31.2),          # a percentage, not a fraction
    lambda r: r["ade150"].update(mIoU="0.3"),
    lambda r: r["ade150"].update(split=""),
    lambda r: r["ade150"].update(per_class_iou={"wall": 1.5}),
    lambda r: r["ade150"].update(miou=0.3),           # unknown field
    lambda r: r.update(pc59=[0.5]),
])
def test_malformed_results_raise(mutate):
    results = copy.deepcopy(RESULTS)
    mutate(results)
    with pytest.raises(ValueError):
        render_model_card("vitb_384_fast_cat", results, model_name="x")


@pytest.mark.parametrize("index", [
    3,
    [],
    [{"results": []}],
    [{"name": "x", "results": [{"task": {"type": "image-segmentation"}, "dataset": {"name": "a"},
                                "metrics": [{"type": "mean_iou", "value": 0.3}]}]}],
    [{"name": "x", "results": [{"task": {"type": "image-segmentation"}, "dataset": {"name": "a", "type": "b"},
                                "metrics": [{"type": "mean_iou", "value": "high"}]}]}],
    [{"name": "x", "results": [{"task": {"type": "image-segmentation"}, "dataset": {"name": "a", "type": "b"},
                                "metrics": []}]}],
])
def test_malformed_model_index_raises(index):
    with pytest.raises(ValueError):
        validate_model_index({"model-index": index})
    text = "---\n" + yaml.safe_dump({"license": "mit", "model-index": index}) + "---\nbody\n"
    with pytest.raises(ValueError):
        parse_model_card(text)


def test_parse_rejects_missing_front_matter():
    with pytest.raises(ValueError):
        parse_model_card("# no metadata\n")


def test_write_model_card_for_a_saved_folder(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    path = write_model_card(tmp_path, results=RESULTS, model_name="tiny", repo_id="me/tiny")
    assert path == tmp_path / "README.md"
    metadata, body = parse_model_card(path.read_text(encoding="utf-8"))
    assert metadata["model-index"][0]["name"] == "tiny"
    assert 'model="me/tiny"' in body and "No trained weights." not in body


@pytest.mark.parametrize("file", sorted(PRESET_CARDS))
def test_cli_writes_preset_card(file, tmp_path):
    """The CLI's defaults (card name, base model) give the committed card."""
    preset = PRESET_CARDS[file][0]
    assert default_model_name(preset) == file[:-3]
    output = tmp_path / "cards" / "card.md"
    assert main(["--preset", preset, "--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == (CARDS / file).read_text(encoding="utf-8")


def test_cli_writes_trained_folder_card(tmp_path, capsys):
    model_dir = tmp_path / "run"
    tiny_config().save_pretrained(model_dir)
    results_file = tmp_path / "eval.json"
    results_file.write_text(json.dumps({"results": RESULTS}), encoding="utf-8")
    assert main(["--model-dir", str(model_dir), "--results", str(results_file), "--model-name", "run-1",
                 "--write"]) == 0
    metadata, _ = parse_model_card((model_dir / "README.md").read_text(encoding="utf-8"))
    assert [r["metrics"][0]["value"] for r in metadata["model-index"][0]["results"]] == [0.312, 0.574]

    results_file.write_text(json.dumps({"ade150": {"mIoU": 0.3}}), encoding="utf-8")
    assert main(["--model-dir", str(model_dir), "--results", str(results_file), "--model-name", "run-1"]) == 2
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- ITA
def ita_row(body: str, name: str) -> str:
    return next(line for line in body.splitlines() if line.startswith(f"| {name} | "))


def test_ita_preset_card():
    from fgaseg_hf import ITAConfig

    config = ITAConfig.from_preset("ita_convnext_large_d_320")
    metadata, body = parse_model_card(preset_card("ita_convnext_large_d_320", ITA_CLIP_HUB_ID))
    assert {"ita", "fc-clip"} <= set(metadata["tags"]) and "fgaseg" not in metadata["tags"]
    assert metadata["base_model"] == ITA_CLIP_HUB_ID
    assert "An ITA open-vocabulary semantic segmentation model" in body and "frozen CLIP ConvNeXt-Large" in body
    # Usage and fine-tuning name ITA's classes and its way to start from open_clip weights.
    assert "from fgaseg_hf import ITAModel, ITAProcessor" in body and "FGASeg" not in body
    assert "  family: ita\n" in body and "convert_open_clip_checkpoint(weights" in body
    assert "open_clip_pytorch_model.bin" in body and "--model-name my-ita" in body
    # The architecture table reads the preset.
    assert "192, 384, 768, 1536" in ita_row(body, "CLIP") and "3, 3, 27, 3" in ita_row(body, "CLIP")
    assert "embedding size 768; frozen" in ita_row(body, "CLIP")
    assert "6 deformable layers, width 256" in ita_row(body, "Pixel decoder")
    decoder = ita_row(body, "Decoder")
    assert "10 predictions" in decoder and "180 learned + 20 text queries" in decoder
    assert "without self-attention" in decoder
    ensemble = ita_row(body, "Ensemble")
    assert "alpha 0.4" in ensemble and "beta 0.8" in ensemble
    assert (f"{len(config.seen_class_names)} training classes" in ensemble if config.seen_class_names
            else "no training classes" in ensemble)
    assert ita_row(body, "Prompt templates").startswith("| Prompt templates | 14 (ViLD's)")
    assert "shortest edge 800 px, longest at most 1333 px" in ita_row(body, "Test size")
    assert "No evaluation results. The original authors of ITA never released" in body


def test_ita_card_from_a_config_object_follows_it():
    from test_modeling_ita import tiny_ita_config

    config = tiny_ita_config(geometric_ensemble_alpha=0.25, num_learned_queries=7, min_size_test=48, max_size_test=96)
    metadata, body = parse_model_card(render_model_card(config, model_name="tiny-ita"))
    assert "ita" in metadata["tags"] and "base_model" not in metadata
    assert "on a frozen CLIP ConvNeXt," in body and "| Preset |" not in body
    assert "8, 16, 24, 32" in ita_row(body, "CLIP") and "7 learned + 20 text queries" in ita_row(body, "Decoder")
    assert "alpha 0.25" in ita_row(body, "Ensemble") and "2 training classes" in ita_row(body, "Ensemble")
    assert "| Prompt templates | 2: " in body and "shortest edge 48 px, longest at most 96 px" in body
    # The snippets still start from the released CLIP.
    assert f'hf_hub_download("{ITA_CLIP_HUB_ID}"' in body


def test_ita_preset_json_is_recognised_by_content(tmp_path):
    preset = tmp_path / "my_ita.json"
    preset.write_text((ROOT / "configs" / "ita_convnext_large_d_320.json").read_text(encoding="utf-8"))
    _, body = parse_model_card(render_model_card(preset, model_name="my-ita"))
    assert "from fgaseg_hf import ITAModel" in body and 'ita_preset_values("path/to/config.json")' in body


def test_cli_writes_ita_folder_card(tmp_path):
    from test_modeling_ita import make_ita

    model_dir = tmp_path / "ita-run"
    make_ita().save_pretrained(model_dir)
    results_file = tmp_path / "eval.json"
    results_file.write_text(json.dumps(RESULTS), encoding="utf-8")
    assert main(["--model-dir", str(model_dir), "--results", str(results_file), "--model-name", "ita-run-1",
                 "--repo-id", "me/ita-run-1", "--write"]) == 0
    metadata, body = parse_model_card((model_dir / "README.md").read_text(encoding="utf-8"))
    assert "ita" in metadata["tags"] and metadata["model-index"][0]["name"] == "ita-run-1"
    assert [r["metrics"][0]["value"] for r in metadata["model-index"][0]["results"]] == [0.312, 0.574]
    assert 'ITAModel.from_pretrained("me/ita-run-1")' in body and "FGASegModel" not in body
    assert "trained with `fgaseg_hf` on a frozen open_clip CLIP" in body and "No trained weights." not in body
    path = write_model_card(model_dir, model_name="ita-run-2")
    assert parse_model_card(path.read_text(encoding="utf-8"))[0]["tags"][0] == "ita"


def test_unknown_folders_and_presets_are_refused(tmp_path, capsys):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    from fgaseg_hf.model_card import FAMILIES

    with pytest.raises(ValueError, match="model cards are written for .* models only, not 'bert'") as error:
        render_model_card(tmp_path, model_name="x")
    assert all(family.title in str(error.value) for family in FAMILIES.values())
    assert main(["--preset", "no_such_preset"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'no_such_preset'" in err and "ita_convnext_large_d_320" in err


@pytest.mark.parametrize("preset, file, license", [
    ("catseg_vitb_384", "catseg-vitb16-384.md", "mit"),
    ("catseg_vitl_336", "catseg-vitl14-336.md", "mit"),
    ("fcclip_convnext_large", "fcclip-convnext-large.md", "apache-2.0"),
])
def test_cli_defaults_give_the_committed_card_with_the_familys_licence(preset, file, license, tmp_path):
    """No --license / --model-name: each family's own licence and card name reproduce the committed card."""
    output = tmp_path / file
    assert main(["--preset", preset, "--output", str(output)]) == 0
    text = output.read_text(encoding="utf-8")
    assert text == (CARDS / file).read_text(encoding="utf-8")
    assert parse_model_card(text)[0]["license"] == license
    assert main(["--preset", preset, "--license", "cc-by-4.0", "--output", str(output)]) == 0
    assert parse_model_card(output.read_text(encoding="utf-8"))[0]["license"] == "cc-by-4.0"


def test_split_modules_are_reexported():
    """The families and the model-index code live in their own modules; the old import paths name the same objects."""
    from fgaseg_hf import model_card, model_card_families, model_card_index

    assert {f.model_type: f.license for f in model_card.FAMILIES.values()} == {
        "fgaseg": "apache-2.0", "catseg": "mit", "fcclip": "apache-2.0", "ita": "apache-2.0"}
    assert model_card.FAMILIES is model_card_families.FAMILIES
    for name in ("validate_model_index", "validate_results", "build_metadata", "REQUIRED_METADATA_KEYS"):
        assert getattr(model_card, name) is getattr(model_card_index, name)
    assert model_card.clip_variant is model_card_families.clip_variant
    assert model_card.ITA_CLIP_HUB_ID is model_card_families.ITA_CLIP_HUB_ID


# ----------------------------------------------------------------------------- FC-CLIP: published weights
FCCLIP_CARD = "fcclip-convnext-large.md"


def fcclip_card() -> str:
    return render_model_card("fcclip_convnext_large", model_name=FCCLIP_CARD[:-3], base_model=ITA_CLIP_HUB_ID)


def test_committed_fcclip_card_is_up_to_date():
    assert (CARDS / FCCLIP_CARD).read_text(encoding="utf-8") == fcclip_card(), (
        f"model_cards/{FCCLIP_CARD} is stale: python -m fgaseg_hf.model_card --preset fcclip_convnext_large "
        f"--output model_cards/{FCCLIP_CARD}"
    )


def test_fcclip_card_describes_the_authors_weights_and_results():
    metadata, body = parse_model_card(fcclip_card())
    assert metadata["license"] == "apache-2.0" and "fc-clip" in metadata["tags"] and "ita" not in metadata["tags"]
    assert "model-index" not in metadata  # the published numbers are theirs, not a measurement of this card's model
    assert "never released" not in body and "No trained weights" not in body
    assert "the original authors' checkpoint" in body and "fcclip_cocopan.pth" in body
    assert "https://drive.google.com/file/d/1-91PIns86vyNaL3CzMmDD39zKGnPMtvj" in body
    assert "fgaseg convert --checkpoint fcclip_cocopan.pth --config fc-clip/configs/coco/panoptic-segmentation/" in body
    assert "Reported by FC-CLIP's authors" in body and "| ADE20K (A-150) | 26.8 | 16.8 | 34.1 | `ade150` |" in body
    assert "fgaseg evaluate --model path/to/fcclip-convnext-large --benchmarks ade150,ade847,pc59,pc459,voc20" in body
    assert "250 learned queries" in body and "then self-attention" in body and "text queries" not in body
    assert "from fgaseg_hf import FCCLIPModel, ITAProcessor" in body and "from_pretrained: path/to/" in body
    assert "## Citation" in body and "@inproceedings{yu2023fcclip" in body


def test_card_for_a_converted_fcclip_folder(tmp_path):
    from fgaseg_hf import FCCLIPConfig

    config = FCCLIPConfig(
        vision_config=dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_norm_eps=1e-6),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         projection_dim=32, max_position_embeddings=16),
        feature_size=32, mask_feature_size=32, hidden_dim=32, num_attention_heads=2, encoder_layers=1,
        dim_feedforward=64, decoder_layers=3, num_learned_queries=5,
    )
    config.save_pretrained(tmp_path)
    metadata, body = parse_model_card(render_model_card(tmp_path, RESULTS, model_name="my-fcclip"))
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.312
    assert "published checkpoint converted with `fgaseg_hf`" in body and "Reported by FC-CLIP's authors" not in body
    assert "FCCLIPModel.from_pretrained" in body and "ITAModel" not in body and "## Citation" in body
    assert default_model_name("fcclip_convnext_large") == "fcclip-convnext-large"
