"""Numerical parity with the original FGA-Seg code, through the converter, on the reference fixtures.

Fixture folders: `tests/fixtures/parity/*` plus every folder in `FGASEG_PARITY_FIXTURES`
(os.pathsep-separated). A folder is an FGA-Seg fixture when its config.json names the FGASeg architecture.
Inputs are prepared exactly as the fixture's README describes (CLIP normalisation, zero padding to a multiple
of 32, bilinear resize of the padded canvas to the CLIP resolution).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_params, parity_fixture_folders, require_fixture

from fgaseg_hf.conversion import convert_original_checkpoint
from fgaseg_hf.image_processing_fgaseg import FGASegImageProcessor

REPO = Path(__file__).resolve().parents[1]
CLIP_MEAN = torch.tensor([122.7709383, 116.7460125, 104.09373615]).view(3, 1, 1)
CLIP_STD = torch.tensor([68.5005327, 66.6321579, 70.323163]).view(3, 1, 1)


FOLDERS = parity_fixture_folders(lambda config: config.get("MODEL.META_ARCHITECTURE") == "FGASeg")


def test_fixtures_are_found():
    assert FOLDERS, "no FGA-Seg parity fixture found (expected tests/fixtures/parity/fast_cat or FGASEG_PARITY_FIXTURES)"


class Fixture:
    def __init__(self, folder: Path):
        self.folder = folder
        self.inputs = torch.load(folder / "inputs.pt", weights_only=False)
        self.outputs = torch.load(folder / "outputs.pt", weights_only=False)
        self.model = convert_original_checkpoint(str(folder / "checkpoint.pth"), str(folder / "config.json"))

    def pixel_values(self, names: list[str]) -> torch.Tensor:
        images = [(self.inputs["eval"][n]["image"].float() - CLIP_MEAN) / CLIP_STD for n in names]
        height = -(-max(i.shape[1] for i in images) // 32) * 32
        width = -(-max(i.shape[2] for i in images) // 32) * 32
        canvas = torch.zeros(len(images), 3, height, width)
        for index, image in enumerate(images):
            canvas[index, :, : image.shape[1], : image.shape[2]] = image
        size = self.model.config.clip_resolution
        return F.interpolate(canvas, size=(size, size), mode="bilinear", align_corners=False)

    def run(self, names, token_ids, scope="image", **kwargs):
        self.model.decoder.top_k_scope = scope
        with torch.no_grad():
            return self.model(self.pixel_values(names), token_ids, **kwargs)


@pytest.fixture(scope="module", **fixture_params(FOLDERS))
def fx(request):
    torch.set_num_threads(1)
    return Fixture(require_fixture(request.param))


def _kept_ids(stages) -> torch.Tensor:
    """Compose the per-stage relative keep masks of image 0 into vocabulary ids."""
    ids = torch.arange(stages[0]["valid"].shape[1])
    for stage in stages:
        ids = ids[stage["valid"][0]]
    return ids


@pytest.mark.parametrize("name", ["img_384x384", "img_312x424"])
def test_single_image_head_output(fx, name):
    ref = fx.outputs["eval"][name]
    out = fx.run([name], fx.inputs["token_ids"])
    # Ours returns logits; the original's head output is sigmoid(logits) with pruned classes at 0.
    probs = torch.sigmoid(out.logits)
    assert (probs - ref["head_output"]).abs().max() <= 1e-5
    assert torch.equal(out.kept_classes[0].nonzero().squeeze(1), ref["kept_class_ids"])


def test_intermediates(fx):
    name = "img_384x384"
    it = fx.outputs["eval"][name]["intermediates"]
    out = fx.run([name], fx.inputs["token_ids"], output_hidden_states=True, output_correlations=True, output_alignment_logits=True)
    assert (out.text_embeds - it["text_embeds"]).abs().max() <= 1e-5
    assert (out.image_embeds.flatten(2).transpose(1, 2) - it["clip_dense_features"][:, 1:]).abs().max() <= 1e-5
    layers = fx.model.config.guidance_layers
    assert (out.vision_hidden_states[layers[0] + 1] - it["clip_layer3_out_seq_first"].transpose(0, 1)).abs().max() <= 1e-5
    assert (out.vision_hidden_states[layers[1] + 1] - it["clip_layer7_out_seq_first"].transpose(0, 1)).abs().max() <= 1e-5
    assert (out.refined_text_embeds[0, :, 0] - it["p2t_out"][:, 0]).abs().max() <= 1e-5
    assert (out.correlation - it["corr_global"]).abs().max() <= 1e-5
    assert (out.local_correlation[:, 0] - it["local_align_out"][0]).abs().max() <= 1e-5
    reference = it["projector_align_out"]
    assert ((out.alignment_logits - reference).abs().max() / reference.abs().max()) <= 1e-5


def test_many_classes_pruning(fx):
    ref = fx.outputs["eval_many_classes"]
    ids = fx.inputs["eval_many_classes"]["token_ids"]
    out = fx.run([fx.inputs["eval_many_classes"]["image_name"]], ids)
    assert torch.equal(out.kept_classes[0].nonzero().squeeze(1), ref["kept_class_ids"])
    assert torch.equal(out.kept_classes[0], ref["head_output_selected_mask"])
    assert torch.equal(_kept_ids(ref["fast_topk_stages"]), ref["kept_class_ids"])
    # sem_seg is bilinear(sigmoid(sigmoid(head))) in the original: invert the outer sigmoid and the resize's
    # linearity does the rest, so compare on our side instead.
    size = fx.inputs["eval_many_classes"]["height"], fx.inputs["eval_many_classes"]["width"]
    ours = F.interpolate(torch.sigmoid(torch.sigmoid(out.logits)), size=size, mode="bilinear", align_corners=False)[0]
    pruned = ~out.kept_classes[0]
    ours[pruned] = 0.5  # the original's double sigmoid turns a zero-filled (pruned) class into exactly 0.5
    assert (ours - ref["sem_seg"]).abs().max() <= 1e-5


def test_batched_original_scope_matches(fx):
    """With the original's batch-pooled top-k ("batch" scope) a batched call reproduces the original's."""
    ref = fx.outputs["eval_many_classes_batched"]
    names = fx.inputs["eval_many_classes"]["batched_image_names"]
    out = fx.run(names, fx.inputs["eval_many_classes"]["token_ids"], scope="batch")
    assert torch.equal(out.kept_classes, ref["head_output_selected_mask"])
    size = tuple(ref["height_width"])
    ours = F.interpolate(torch.sigmoid(torch.sigmoid(out.logits[:1])), size=size, mode="bilinear", align_corners=False)[0]
    assert (ours - ref["sem_seg"]).abs().max() <= 1e-5


def test_batched_default_scope_is_batch_invariant(fx):
    """Per-image pruning (our default): each image of a batch gets exactly its single-image result."""
    names = fx.inputs["eval_many_classes"]["batched_image_names"]
    ids = fx.inputs["eval_many_classes"]["token_ids"]
    fx.model.decoder.top_k_scope = "image"
    with torch.no_grad():
        # Each image prepared alone (the original pads a batch to a common canvas, which changes the input).
        batched = fx.model(torch.cat([fx.pixel_values([n]) for n in names]), ids)
    for index, name in enumerate(names):
        single = fx.run([name], ids)
        assert torch.equal(batched.kept_classes[index], single.kept_classes[0])
        assert (batched.logits[index] - single.logits[0]).abs().max() <= 1e-5
    # The fixture's pooled run kept classes that image 0 alone prunes: per-image scope must not.
    pooled = fx.outputs["eval_many_classes_batched"]["head_output_selected_mask"][0]
    assert torch.equal(batched.kept_classes[0], fx.outputs["eval_many_classes"]["head_output_selected_mask"])
    assert not torch.equal(batched.kept_classes[0], pooled)


def test_batched_small_vocabulary(fx):
    key = next(k for k in fx.outputs["eval_batched"])
    ref = fx.outputs["eval_batched"][key]
    out = fx.run(ref["image_names"], fx.inputs["token_ids"])
    assert torch.equal(out.kept_classes, ref["head_output_selected_mask"])
    first = fx.inputs["eval"][ref["image_names"][0]]
    size = first["height"], first["width"]
    ours = F.interpolate(torch.sigmoid(torch.sigmoid(out.logits[:1])), size=size, mode="bilinear", align_corners=False)[0]
    assert (ours - ref["sem_seg"]).abs().max() <= 1e-5


def test_training_loss_terms(fx):
    model = fx.model
    ref = fx.outputs["train"]
    images = fx.inputs["train"]["images"]
    labels = torch.stack([s.long() for s in fx.inputs["train"]["sem_seg"]])
    pixel_values = torch.stack([(i.float() - CLIP_MEAN) / CLIP_STD for i in images])
    size = model.config.clip_resolution
    pixel_values = F.interpolate(pixel_values, size=(size, size), mode="bilinear", align_corners=False)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    model.train()
    try:
        out = model(pixel_values, fx.inputs["token_ids"], labels=labels)
    finally:
        after = {k: v.clone() for k, v in model.state_dict().items() if k in before}
        model.load_state_dict(before, strict=False)
        model.eval()
    rel = lambda a, b: float((a.detach() - b).abs() / b.abs())  # noqa: E731
    assert rel(out.loss, ref["loss_sem_seg"]) <= 1e-5
    for name, value in ref["loss_terms"].items():
        assert rel(out.loss_terms[name], value) <= 1e-5, name
    heads = ref["head_outputs"]
    assert (out.logits - heads["pred_logits"]).abs().max() <= 1e-4
    for index in range(3):
        assert (out.auxiliary_logits[index] - heads[f"mask_aux{index}"]).abs().max() <= 1e-4
    assert (out.alignment_logits - heads["align_out"]).abs().max() / heads["align_out"].abs().max() <= 1e-5
    # The projector's BatchNorm statistics move as in the original.
    for key, value in ref["bn_running_stats_after"].items():
        ours = key.replace("sem_seg_head.predictor.proj.vis.1.1", "alignment_projector.norm1").replace(
            "sem_seg_head.predictor.proj.vis.3.1", "alignment_projector.norm2"
        )
        assert torch.allclose(after[ours].float(), value.float(), atol=1e-6), key


@pytest.mark.slow
def test_sliding_window_scenario_pruning(fx):
    """The original's sliding-window batch (4 crops of the 640 x 640 canvas + the whole image, top-k pooled over the
    views) takes the original's pruning decisions."""
    ref = fx.outputs["eval_sliding_window"]
    processor = _original_processor(fx)
    inputs = processor(fx.inputs["eval"][ref["image_name"]]["image"], do_sliding_window=True)
    with torch.no_grad():
        out = fx.model(**inputs, input_ids=fx.inputs["token_ids"])
    expected = torch.ones(inputs["pixel_values"].shape[0], out.kept_classes.shape[1], dtype=torch.bool)
    for stage in ref["fast_topk_stages"]:
        expected[expected.clone()] = stage["valid"].reshape(-1)
    assert torch.equal(out.kept_classes, expected)


# ----------------------------------------------------------------------------------------------------------------
# End to end through FGASegImageProcessor's "original" mode: uint8 images in, the original's `sem_seg` out.
def _original_processor(fx, **kwargs):
    ref = fx.outputs["eval_sliding_window"]
    return FGASegImageProcessor.from_model_config(
        fx.model.config, processing_mode="original", sliding_window_canvas=list(ref["out_res"]),
        sliding_window_overlap=ref["overlap"], **kwargs,
    )


def _sem_seg(fx, names, token_ids, output_size, **kwargs):
    processor = _original_processor(fx)
    images = [fx.inputs["eval"][n]["image"] for n in names]
    inputs = processor(images, **kwargs)
    with torch.no_grad():
        out = fx.model(**inputs, input_ids=token_ids)
    sizes = [tuple(i.shape[1:]) for i in images]
    probs = processor.post_process_probabilities(out, target_sizes=[output_size] * len(names), image_sizes=sizes, **kwargs)
    labels = processor.post_process_semantic_segmentation(out, target_sizes=[output_size] * len(names), image_sizes=sizes, **kwargs)
    return probs, labels


def _assert_sem_seg(probs, labels, reference):
    assert (probs - reference).abs().max() <= 1e-5
    # The label map is the argmax of those probabilities (ties aside, which random data does not produce).
    assert torch.equal(labels, reference.argmax(dim=0))


@pytest.mark.parametrize("name", ["img_384x384", "img_312x424"])
def test_processor_original_mode_reproduces_sem_seg(fx, name):
    item = fx.inputs["eval"][name]
    probs, labels = _sem_seg(fx, [name], fx.inputs["token_ids"], (item["height"], item["width"]))
    _assert_sem_seg(probs[0], labels[0], fx.outputs["eval"][name]["sem_seg"])


def test_processor_original_mode_reproduces_batched_sem_seg(fx):
    """The original pads a batch to one canvas and pools top-k over it: image 0's sem_seg, 40 classes."""
    ref = fx.outputs["eval_many_classes_batched"]
    names = fx.inputs["eval_many_classes"]["batched_image_names"]
    fx.model.decoder.top_k_scope = "batch"
    try:
        probs, labels = _sem_seg(fx, names, fx.inputs["eval_many_classes"]["token_ids"], tuple(ref["height_width"]))
    finally:
        fx.model.decoder.top_k_scope = "image"
    _assert_sem_seg(probs[0], labels[0], ref["sem_seg"])


def test_processor_original_mode_reproduces_pruned_sem_seg(fx):
    ref = fx.outputs["eval_many_classes"]
    item = fx.inputs["eval_many_classes"]
    probs, labels = _sem_seg(fx, [item["image_name"]], item["token_ids"], (item["height"], item["width"]))
    _assert_sem_seg(probs[0], labels[0], ref["sem_seg"])
    assert bool((probs[0][~ref["head_output_selected_mask"]] == 0.5).all())


def test_processor_reproduces_sliding_window_sem_seg(fx):
    ref = fx.outputs["eval_sliding_window"]
    probs, labels = _sem_seg(
        fx, [ref["image_name"]], fx.inputs["token_ids"], tuple(ref["height_width"]), do_sliding_window=True
    )
    _assert_sem_seg(probs[0], labels[0], ref["sem_seg"])
