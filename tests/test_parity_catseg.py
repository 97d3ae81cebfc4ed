"""Numerical parity with the original CAT-Seg code (cvlab-kaist/CAT-Seg), through the converter, on the `catseg_b`
reference fixture: every scenario (single images, a batch, the sliding window, pad_len truncation alone and
batched, the training loss). Inputs go through `FGASegImageProcessor`'s "original" mode, outputs through its
post-processing, so the tests cover the whole path from uint8 images to the original's `sem_seg`.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import fixture_params, parity_fixture_folders, require_fixture

from fgaseg_hf.conversion import convert_original_checkpoint
from fgaseg_hf.image_processing_fgaseg import FGASegImageProcessor
from fgaseg_hf.modeling_catseg import CATSegModel

FOLDERS = parity_fixture_folders(lambda config: config.get("MODEL.META_ARCHITECTURE") == "CATSeg")
# Largest differences measured on CPU float32 (torch 2.13): logits 3.0e-6, probabilities 4.2e-7, loss 7e-8 relative.
PROB_TOL = 1e-5
LOGIT_TOL = 1e-5


def test_fixtures_are_found():
    assert FOLDERS, "no CAT-Seg parity fixture found (expected tests/fixtures/parity/catseg_b)"


class Fixture:
    def __init__(self, folder):
        self.folder = folder
        self.inputs = torch.load(folder / "inputs.pt", weights_only=False)
        self.outputs = torch.load(folder / "outputs.pt", weights_only=False)
        self.model = convert_original_checkpoint(str(folder / "checkpoint.pth"), str(folder / "config.json"))
        self._many = None

    def many_classes_model(self, tmp_path_factory):
        """The same checkpoint converted with the fixture's patched pad_len (the cfg's `derived.pad_len`)."""
        if self._many is None:
            cfg = json.loads((self.folder / "config.json").read_text())
            cfg["derived"]["pad_len"] = self.inputs["eval_many_classes"]["pad_len"]
            path = tmp_path_factory.mktemp("catseg_cfg") / "config.json"
            path.write_text(json.dumps(cfg))
            self._many = convert_original_checkpoint(str(self.folder / "checkpoint.pth"), str(path))
        return self._many

    def processor(self, **kwargs):
        return FGASegImageProcessor.from_model_config(self.model.config, processing_mode="original", **kwargs)

    def images(self, names):
        return [self.inputs["eval"][n]["image"] for n in names]


@pytest.fixture(scope="module", **fixture_params(FOLDERS))
def fx(request):
    torch.set_num_threads(1)
    return Fixture(require_fixture(request.param))


def _assert_labels(labels, reference):
    """The label map is the argmax of the reference probabilities, except at pixels where the two best classes are
    within float noise of each other."""
    top2 = reference.topk(2, dim=0).values
    differs = labels != reference.argmax(dim=0)
    assert bool(((top2[0] - top2[1])[differs] <= 1e-5).all())
    assert differs.float().mean() < 1e-3


def _run(model, processor, images, token_ids, output_size, **kwargs):
    inputs = processor(images, **kwargs)
    with torch.no_grad():
        out = model(**inputs, input_ids=token_ids, output_hidden_states=True, output_correlations=True)
    sizes = [tuple(i.shape[1:]) for i in images]
    probs = processor.post_process_probabilities(
        out, target_sizes=[output_size] * len(images), image_sizes=sizes, **kwargs
    )
    labels = processor.post_process_semantic_segmentation(
        out, target_sizes=[output_size] * len(images), image_sizes=sizes, **kwargs
    )
    return inputs, out, probs, labels


def test_converted_folder_says_catseg(fx, tmp_path):
    model = fx.model
    assert type(model) is CATSegModel and model.config.model_type == "catseg"
    assert model.pixel_text_attention is None and model.alignment_projector is None
    assert not hasattr(model.decoder, "local_alignment") and model.config.decoder_mode == "no_fast"
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "catseg" and saved["architectures"] == ["CATSegModel"]
    assert saved["auto_map"]["AutoModel"].endswith("modeling_catseg.CATSegModel")


@pytest.mark.parametrize("name", ["img_384x384", "img_264x440"])
def test_single_image(fx, name):
    ref = fx.outputs["eval"][name]
    item = fx.inputs["eval"][name]
    inputs, out, probs, labels = _run(fx.model, fx.processor(), [item["image"]], fx.inputs["token_ids"],
                                      (item["height"], item["width"]))
    it = ref["intermediates"]
    assert list(inputs["pixel_values"].shape) == it["clip_input_shape"]
    assert (inputs["pixel_values"][:, :, ::8, ::8] - it["clip_input_sub8"]).abs().max() <= 1e-5
    assert (out.logits - ref["head_output"]).abs().max() <= LOGIT_TOL
    assert (torch.sigmoid(out.logits) - torch.sigmoid(ref["head_output"])).abs().max() <= PROB_TOL
    assert (probs[0] - ref["sem_seg"]).abs().max() <= PROB_TOL
    _assert_labels(labels[0], ref["sem_seg"])
    assert (out.text_embeds - it["text_embeds"]).abs().max() <= 1e-5
    assert (out.correlation - it["corr"]).abs().max() <= 1e-5
    assert out.kept_classes.all()


def test_clip_intermediates(fx):
    it = fx.outputs["eval"]["img_384x384"]["intermediates"]
    _, out, _, _ = _run(fx.model, fx.processor(), fx.images(["img_384x384"]), fx.inputs["token_ids"], (48, 48))
    assert (out.image_embeds.flatten(2).transpose(1, 2) - it["clip_dense_features"][:, 1:]).abs().max() <= 1e-5
    first, second = fx.model.config.guidance_layers
    assert (out.vision_hidden_states[first + 1] - it["clip_layer3_out_seq_first"].transpose(0, 1)).abs().max() <= 1e-5
    assert (out.vision_hidden_states[second + 1] - it["clip_layer7_out_seq_first"].transpose(0, 1)).abs().max() <= 1e-5


def test_batched_call(fx):
    """The original pads the batch to one canvas and returns image 0 only: same canvas, same image-0 result."""
    key = next(iter(fx.outputs["eval_batched"]))
    ref = fx.outputs["eval_batched"][key]
    first = fx.inputs["eval"][ref["image_names"][0]]
    inputs, out, probs, _ = _run(fx.model, fx.processor(), fx.images(ref["image_names"]), fx.inputs["token_ids"],
                                 (first["height"], first["width"]))
    assert list(inputs["pixel_values"].shape) == ref["clip_input_shape"]
    assert (inputs["pixel_values"][:, :, ::8, ::8] - ref["clip_input_sub8"]).abs().max() <= 1e-5
    assert (out.logits[:1] - ref["head_output_image0"]).abs().max() <= LOGIT_TOL
    assert (probs[0] - ref["sem_seg"]).abs().max() <= PROB_TOL


def test_sliding_window(fx):
    """4 crops of 384 px from the 640 x 640 canvas plus the global view, pooling [1, 1] as `eval.sh`."""
    ref = fx.outputs["eval_sliding_window"]
    fx.model.set_pooling_size(ref["pooling_sizes"])
    try:
        processor = fx.processor(
            sliding_window_canvas=list(ref["out_res"]), sliding_window_overlap=ref["overlap"],
            sliding_window_crop_size=ref["kernel"],
        )
        inputs, out, probs, labels = _run(fx.model, processor, fx.images([ref["image_name"]]), fx.inputs["token_ids"],
                                          tuple(ref["height_width"]), do_sliding_window=True)
    finally:
        fx.model.set_pooling_size([2, 2])
    assert processor.num_views_per_image() == ref["num_views"] and processor._stride() == ref["stride"]
    assert list(inputs["pixel_values"].shape) == ref["clip_input_shape"]
    assert (inputs["pixel_values"][:, :, ::16, ::16] - ref["clip_input_sub16"]).abs().max() <= 1e-5
    means = inputs["pixel_values"].double().mean(dim=(2, 3))
    assert (means - ref["clip_input_channel_mean"]).abs().max() <= 1e-5
    assert (out.logits[-1:] - ref["head_output_global_view"]).abs().max() <= LOGIT_TOL
    assert (probs[0] - ref["sem_seg"]).abs().max() <= PROB_TOL
    _assert_labels(labels[0], ref["sem_seg"])


def test_sliding_window_default_crop_is_the_originals(fx):
    processor = fx.processor()
    assert processor.crop_size == 384 and processor.num_views_per_image() == 5


def test_many_classes_truncation(fx, tmp_path_factory):
    ref = fx.outputs["eval_many_classes"]
    item = fx.inputs["eval_many_classes"]
    model = fx.many_classes_model(tmp_path_factory)
    assert model.config.class_aggregation_length == ref["pad_len_truncation"]["pad_len"]
    _, out, probs, labels = _run(model, fx.processor(), fx.images([item["image_name"]]), item["token_ids"],
                                 tuple(item["height_width"]) if "height_width" in item else (item["height"], item["width"]))
    kept = ref["pad_len_truncation"]["selected_class_ids_sorted"]
    assert torch.equal(out.kept_classes[0].nonzero().squeeze(1), kept[0])
    assert torch.equal(~out.kept_classes, ref["truncated_mask"])
    assert bool((out.logits[~out.kept_classes] == -100).all())
    assert (out.logits - ref["head_output"]).abs().max() <= LOGIT_TOL
    # The original keeps the classes in `topk(sorted=False)` order, ours in ascending order: same set, same costs.
    used = ref["pad_len_truncation"]["selected_class_ids_in_used_order"][0]
    assert (out.correlation - ref["corr_used"][:, :, used.argsort()]).abs().max() <= 1e-5
    assert (probs[0] - ref["sem_seg"]).abs().max() <= PROB_TOL
    assert bool((probs[0][ref["truncated_mask"][0]] == 0).all())


def test_many_classes_truncation_is_per_image(fx, tmp_path_factory):
    ref = fx.outputs["eval_many_classes_batched"]
    model = fx.many_classes_model(tmp_path_factory)
    _, out, probs, _ = _run(model, fx.processor(), fx.images(ref["image_names"]),
                            fx.inputs["eval_many_classes"]["token_ids"], tuple(ref["height_width"]))
    assert torch.equal(~out.kept_classes, ref["truncated_mask"])
    kept1 = ref["pad_len_truncation"]["selected_class_ids_sorted"][1]
    assert (out.logits[1, kept1] - ref["head_output_kept_image1"]).abs().max() <= LOGIT_TOL
    assert (probs[0] - ref["sem_seg"]).abs().max() <= PROB_TOL


def test_training_loss(fx):
    ref = fx.outputs["train"]
    images = fx.inputs["train"]["images"]
    labels = torch.stack([s.long() for s in fx.inputs["train"]["sem_seg"]])
    inputs = fx.processor()(images)
    model = fx.model
    model.train()
    try:
        out = model(**inputs, input_ids=fx.inputs["token_ids"], labels=labels)
    finally:
        model.eval()
    assert float((out.loss.detach() - ref["loss_sem_seg"]).abs() / ref["loss_sem_seg"]) <= 1e-5
    assert set(out.loss_terms) == {"loss_main"}
    assert (out.logits.detach() - ref["head_output_pred_logits"]).abs().max() <= LOGIT_TOL
    assert out.auxiliary_logits is None and out.alignment_logits is None
    out.loss.backward()
    assert model.decoder.head.weight.grad is not None and model.decoder.head.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
