"""`fgaseg evaluate` end to end on a tiny fake ADE-150 folder and a tiny model, against a direct computation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model, tiny_processor
from PIL import Image

from fgaseg_hf import FGASegModel, FGASegProcessor
from fgaseg_hf.data.benchmarks import BENCHMARKS, class_names
from fgaseg_hf.evaluation import main as evaluate_main
from fgaseg_hf.metrics import ConfusionMatrix
from fgaseg_hf.model_card import parse_model_card

REPO = Path(__file__).resolve().parents[1]
SIZES = [(40, 52), (36, 36), (58, 30)]  # (width, height)
LABEL_VALUES = [0, 2, 5, 7, 255]


@pytest.fixture(scope="module")
def fake_ade150(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    spec = BENCHMARKS["ade150"]
    rng = np.random.default_rng(0)
    for index, (width, height) in enumerate(SIZES):
        stem = f"ADE_val_{index:08d}"
        image_path = root / spec.image_dirs["validation"] / f"{stem}.jpg"
        label_path = root / spec.label_dirs["validation"] / f"{stem}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        # Smooth colour blobs so that the model's outputs vary over the image.
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([(x * 5 + index * 40) % 256, (y * 7) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
        Image.fromarray(pixels).save(image_path, quality=95)
        label = rng.choice(LABEL_VALUES, size=(height, width)).astype(np.uint8)
        Image.fromarray(label).save(label_path)
    return root


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "tiny-fgaseg"
    model = make_model(seed=3, class_aggregation_length=0)
    model.save_pretrained(folder)
    tiny_processor(model.config, sliding_window_canvas=[96, 96]).save_pretrained(folder)
    return folder


def direct_miou(model_folder: Path, root: Path) -> tuple[float, np.ndarray]:
    """The original protocol written out by hand: shorter side to 640 (PIL bilinear, rounded half up), 96 x 96 sliding
    window with the original's processing, pooling 1 x 1; detectron2's confusion matrix and mean over present
    classes."""
    model = FGASegModel.from_pretrained(model_folder).eval()
    model.set_pooling_size([1, 1])
    processor = FGASegProcessor.from_pretrained(model_folder)
    image_processor = processor.image_processor
    names = class_names("ade150")
    input_ids = processor.tokenize_vocabulary(names)["input_ids"]
    K = len(names)
    confusion = np.zeros((K + 1, K + 1), dtype=np.int64)
    spec = BENCHMARKS["ade150"]
    for label_path in sorted((root / spec.label_dirs["validation"]).glob("*.png")):
        image = Image.open(root / spec.image_dirs["validation"] / f"{label_path.stem}.jpg").convert("RGB")
        label = np.asarray(Image.open(label_path)).astype(np.int64)
        scale = 640 / min(image.size)
        resized = image.resize((int(image.width * scale + 0.5), int(image.height * scale + 0.5)), Image.BILINEAR)
        inputs = image_processor(resized, processing_mode="original", do_sliding_window=True)
        with torch.no_grad():
            outputs = model(pixel_values=inputs["pixel_values"], input_ids=input_ids,
                            pruning_groups=inputs["pruning_groups"])
        prediction = image_processor.post_process_semantic_segmentation(
            outputs, target_sizes=[label.shape], processing_mode="original", do_sliding_window=True)[0].numpy()
        gt = np.where(label == 255, K, label)
        confusion += np.bincount((K + 1) * prediction.reshape(-1) + gt.reshape(-1), minlength=(K + 1) ** 2).reshape(K + 1, K + 1)
    tp = np.diag(confusion)[:-1].astype(float)
    pos_gt = confusion[:-1, :-1].sum(0).astype(float)
    pos_pred = confusion[:-1, :-1].sum(1).astype(float)
    valid = pos_gt > 0
    iou = tp[valid] / (pos_gt + pos_pred - tp)[valid]
    return float(iou.mean()), confusion


def test_evaluate_writes_the_directly_computed_miou(fake_ade150, model_folder, tmp_path, capsys):
    output = tmp_path / "eval.json"
    card = tmp_path / "card.md"
    code = evaluate_main(["--model", str(model_folder), "--benchmarks", "ade150", "--root", str(fake_ade150),
                          "--output", str(output), "--card", str(card), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(output.read_text())
    expected, confusion = direct_miou(model_folder, fake_ade150)
    entry = report["results"]["ade150"]
    assert entry["mIoU"] == pytest.approx(expected, abs=1e-12)
    assert report["details"]["ade150"]["images"] == len(SIZES)
    assert report["details"]["ade150"]["classes_with_ground_truth"] == 4  # 0, 2, 5, 7; 255 is ignored
    # Classes without ground truth have no IoU (null) and stay out of the mean; the evaluate definition differs
    # exactly when some absent class is predicted.
    names = class_names("ade150")
    assert [n for n, v in entry["per_class_iou"].items() if v is not None] == [names[i] for i in (0, 2, 5, 7)]
    predicted_absent = confusion[:-1, :-1].sum(1)[[i for i in range(150) if i not in (0, 2, 5, 7)]].sum() > 0
    assert (report["details"]["ade150"]["mIoU_evaluate"] < entry["mIoU"]) == bool(predicted_absent)
    markdown = output.with_suffix(".md").read_text()
    assert f"| ADE20K-150 | 3 | {100 * expected:.2f} |" in markdown
    metadata, _ = parse_model_card(card.read_text())
    value = metadata["model-index"][0]["results"][0]["metrics"][0]["value"]
    assert value == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_two_processes_give_the_one_process_result(fake_ade150, model_folder, tmp_path):
    """torchrun with 2 CPU processes: each evaluates part of the images, the confusion matrices are summed."""
    reports = {}
    for processes in (1, 2):
        output = tmp_path / f"p{processes}.json"
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_port",
                   str(29610 + processes), str(REPO / "scripts" / "evaluate.py"), "--model", str(model_folder),
                   "--benchmarks", "ade150", "--root", str(fake_ade150), "--output", str(output), "--device", "cpu",
                   "--no-progress"]
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        reports[processes] = json.loads(output.read_text())
    assert reports[2]["num_processes"] == 2
    assert reports[1]["results"] == reports[2]["results"]
    assert reports[1]["details"]["ade150"]["pACC"] == reports[2]["details"]["ade150"]["pACC"]


def test_whole_image_protocol_and_voc20b_folding(model_folder, tmp_path, capsys):
    """VOC-20b: 59 prompts, every prediction >= 20 scored as background (20)."""
    spec = BENCHMARKS["voc20b"]
    stem = "2007_000001"
    image_path = tmp_path / spec.image_dirs["validation"] / f"{stem}.jpg"
    label_path = tmp_path / spec.label_dirs["validation"] / f"{stem}.png"
    image_path.parent.mkdir(parents=True)
    label_path.parent.mkdir(parents=True)
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(image_path)
    Image.fromarray(np.full((30, 40), 20, np.uint8)).save(label_path)  # all background
    output = tmp_path / "voc.json"
    code = evaluate_main(["--model", str(model_folder), "--benchmarks", "voc20b", "--root", str(tmp_path),
                          "--output", str(output), "--protocol", "whole", "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(output.read_text())
    iou = report["results"]["voc20b"]["per_class_iou"]
    assert list(iou) == class_names("voc20")[:20] + ["background"]
    # Only background has ground truth: its IoU is the fraction of pixels predicted as any of the 39 context classes.
    model = FGASegModel.from_pretrained(model_folder).eval()
    processor = FGASegProcessor.from_pretrained(model_folder)
    inputs = processor(images=Image.open(image_path), text=class_names("voc20b"))
    with torch.no_grad():
        prediction = processor.post_process_semantic_segmentation(model(**inputs), target_sizes=[(30, 40)])[0]
    assert iou["background"] == pytest.approx(float((prediction >= 20).double().mean()), abs=1e-12)
    # FGA-Seg models always get the plain lists: the class-list choice is not part of their protocol.
    assert report["protocol"]["name"] == "whole" and "class_names" not in report["protocol"]


def test_metric_definitions_from_one_confusion_matrix():
    confusion = ConfusionMatrix(4, ignore_index=255)
    reference = torch.tensor([[0, 0, 1, 255], [1, 1, 2, 2]])
    prediction = torch.tensor([[0, 3, 1, 3], [1, 0, 2, 2]])  # class 3 predicted, never in the reference
    confusion.update(prediction, reference)
    d2 = confusion.compute_detectron2()
    iou = [1 / 3, 2 / 3, 1.0]  # class 0: 1 / (2 + 2 - 1); class 1: 2 / 3; class 2: 2 / 2
    assert d2["mean_iou"] == pytest.approx(np.mean(iou))
    assert np.isnan(d2["per_category_iou"][3])
    assert d2["pixel_accuracy"] == pytest.approx(5 / 7)
    assert d2["frequency_weighted_iou"] == pytest.approx((2 * iou[0] + 3 * iou[1] + 2 * iou[2]) / 7)
    # evaluate's definition counts class 3 (IoU 0) in the mean.
    assert confusion.compute()["mean_iou"] == pytest.approx(np.mean(iou + [0.0]))


def test_clear_errors(model_folder, tmp_path, capsys):
    assert evaluate_main(["--model", str(model_folder), "--benchmarks", "ade999", "--root", str(tmp_path)]) == 2
    assert "unknown benchmark 'ade999'" in capsys.readouterr().err
    assert evaluate_main(["--model", str(model_folder), "--benchmarks", "ade150", "--root", str(tmp_path)]) == 2
    assert "folder" in capsys.readouterr().err and not (tmp_path / "eval.json").exists()
    assert evaluate_main(["--model", str(tmp_path / "nope"), "--benchmarks", "ade150", "--root", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_an_ita_model_is_evaluated_with_its_own_preprocessing(fake_ade150, tmp_path, capsys):
    """The same command on a tiny ITA folder: its processor's test-time resize, no sliding window; the mIoU equals
    the model + processor + post-processing run by hand."""
    from conftest import tiny_tokenizer
    from test_modeling_ita import make_ita

    from fgaseg_hf import ITAModel, ITAProcessor
    from fgaseg_hf.data.benchmarks import published_class_synonyms

    folder = tmp_path / "tiny-ita"
    model = make_ita(min_size_test=48, max_size_test=96)
    model.save_pretrained(folder)
    ITAProcessor.from_model_config(model.config, tiny_tokenizer()).save_pretrained(folder)
    output = tmp_path / "ita.json"
    code = evaluate_main(["--model", str(folder), "--benchmarks", "ade150", "--root", str(fake_ade150), "--output",
                          str(output), "--batch-size", "2", "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(output.read_text())
    model, processor = ITAModel.from_pretrained(folder).eval(), ITAProcessor.from_pretrained(folder)
    # ITA-family models are prompted with FC-CLIP's published synonym lists by default.
    names = [",".join(synonyms) for synonyms in published_class_synonyms("ade150")]
    confusion = ConfusionMatrix(150, ignore_index=255)
    spec = BENCHMARKS["ade150"]
    for label_path in sorted((fake_ade150 / spec.label_dirs["validation"]).glob("*.png")):
        image = Image.open(fake_ade150 / spec.image_dirs["validation"] / f"{label_path.stem}.jpg")
        label = torch.from_numpy(np.asarray(Image.open(label_path)).astype(np.int64))
        with torch.no_grad():
            outputs = model(**processor(images=image, text=names))
        confusion.update(processor.post_process_semantic_segmentation(outputs, target_sizes=[tuple(label.shape)])[0], label)
    assert report["results"]["ade150"]["mIoU"] == pytest.approx(confusion.compute_detectron2()["mean_iou"], abs=1e-12)
    assert "sliding_window" not in report["protocol"] and report["protocol"]["class_names"] == "published"
    card = tmp_path / "card.md"
    code = evaluate_main(["--model", str(folder), "--benchmarks", "ade150", "--root", str(fake_ade150), "--output",
                          str(tmp_path / "x.json"), "--card", str(card), "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    metadata, body = parse_model_card(card.read_text(encoding="utf-8"))
    assert "ita" in metadata["tags"] and "fgaseg" not in metadata["tags"]
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["value"] == report["results"]["ade150"]["mIoU"]
    assert "ITAModel" in body and "FGASegModel" not in body


def test_card_for_a_saved_ita_folder(tmp_path):
    """A card for a trained ITA folder with results: its model-index and ITA's classes in the snippets."""
    from test_modeling_ita import make_ita

    from fgaseg_hf.model_card import render_model_card

    folder = tmp_path / "tiny-ita"
    make_ita().save_pretrained(folder)
    results = {"ade150": {"dataset_name": "ADE20K-150", "dataset_type": "scene_parse_150", "split": "validation",
                          "mIoU": 0.25, "per_class_iou": {"wall": 0.5, "floor": None}}}
    metadata, body = parse_model_card(render_model_card(folder, results, model_name="tiny-ita"))
    (entry,) = metadata["model-index"]
    assert entry["name"] == "tiny-ita" and entry["results"][0]["metrics"][0]["value"] == 0.25
    assert "from fgaseg_hf import ITAModel, ITAProcessor" in body and "ITAModel.from_pretrained" in body
    assert "FGASegModel" not in body and "family: ita" in body
    assert "| ade150 | ADE20K-150 (`scene_parse_150`) | validation | 25.0 |" in body


def test_card_refuses_other_model_types(tmp_path, capsys, monkeypatch):
    """`--card` (like evaluating itself) refuses a folder of another architecture, in one line, before evaluating."""
    from transformers import BertConfig

    folder = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(folder)
    code = evaluate_main(["--model", str(folder), "--benchmarks", "ade150", "--root", str(tmp_path), "--output",
                          str(tmp_path / "x.json"), "--card", str(tmp_path / "card.md")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "'bert'" in err
    assert err.count("\n") == 1 and not (tmp_path / "x.json").exists() and not (tmp_path / "card.md").exists()
    # A location that resolves (as a Hub id would) to a config of another type: the --card check itself.
    import fgaseg_hf.segment

    monkeypatch.setattr(fgaseg_hf.segment, "resolve_model_location", lambda model: model)
    code = evaluate_main(["--model", str(folder), "--benchmarks", "ade150", "--root", str(tmp_path), "--output",
                          str(tmp_path / "x.json"), "--card", str(tmp_path / "card.md")])
    err = capsys.readouterr().err
    from fgaseg_hf.model_card import FAMILIES

    assert code == 2 and err.startswith("error: --card: model cards are written for ") and err.count("\n") == 1
    assert err.endswith(" models only, not 'bert'\n") and all(f.title in err for f in FAMILIES.values())
