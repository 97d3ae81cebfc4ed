"""Helpers shared by the parity tests of the FCCLIP meta-architecture (ITA and FC-CLIP fixtures): input batches as
the original builds them, the replayed point-sampling draws, matcher recording, and a writer of original
(detectron2 / open_clip) key names for a model of ours, to feed the converter sizes no fixture has."""

from __future__ import annotations

import re

import torch


def diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def normalised_batch(images, pixel_mean, pixel_std, divisibility: int = 32):
    """`(uint8 - mean) / std`, then zero padding bottom/right to the batch maximum rounded up to `divisibility`
    (`ImageList.from_tensors`); returns the batch and the pixel mask."""
    mean = torch.tensor(pixel_mean).view(3, 1, 1)
    std = torch.tensor(pixel_std).view(3, 1, 1)
    normalised = [(image.float() - mean) / std for image in images]
    height = -(-max(i.shape[1] for i in normalised) // divisibility) * divisibility
    width = -(-max(i.shape[2] for i in normalised) // divisibility) * divisibility
    pixels = torch.zeros(len(images), 3, height, width)
    mask = torch.zeros(len(images), height, width, dtype=torch.long)
    for index, image in enumerate(normalised):
        pixels[index, :, : image.shape[1], : image.shape[2]] = image
        mask[index, : image.shape[1], : image.shape[2]] = 1
    return pixels, mask


class ReplayedRand:
    """Redirect `torch.rand` to a seeded generator while the loss runs, as the fixture harness did."""

    def __init__(self, seed):
        self.generator = torch.Generator().manual_seed(seed)
        self.shapes = []

    def __enter__(self):
        self.real = torch.rand

        def rand(*shape, **kwargs):
            kwargs.pop("device", None)
            self.shapes.append(tuple(shape))
            return self.real(*shape, generator=self.generator, **kwargs)

        torch.rand = rand
        return self

    def __exit__(self, *exc):
        torch.rand = self.real


def record_matches(criterion):
    calls = []
    original = criterion.matcher.forward

    def forward(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        return calls[-1]

    criterion.matcher.forward = forward
    return calls, lambda: setattr(criterion.matcher, "forward", original)


def check_matches(calls, expected):
    assert len(calls) == len(expected)
    for ours, ref in zip(calls, expected):
        for (q, t), (rq, rt) in zip(ours, ref):
            assert q.tolist() == rq.tolist() and t.tolist() == rt.tolist()


# ----------------------------------------------------------------------------- our names -> the original's
def _reverse(rule: tuple[str, str]):
    """A converter rule (original pattern, our template) turned around: (regex over our names, original template)."""
    pattern, target = rule
    groups = re.findall(r"\((?:[^()])*\)", pattern)
    template = pattern
    for index, group in enumerate(groups, start=1):
        template = template.replace(group, f"\\{index}", 1)
    template = template.replace("\\.", ".")
    parts = re.split(r"\\(\d)", target)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<g{p}>.+?)" for i, p in enumerate(parts))
    return re.compile(regex + "$"), template


def original_state_dict(model) -> dict:
    """`model.state_dict()` under the original checkpoint's names (the inverse of `conversion_ita`): fused q/k/v
    projections re-fused, the text projection transposed, `backbone.clip_model.` before the CLIP's keys."""
    from fgaseg_hf import conversion_ita as conv

    rules = [(_reverse(r), conv.CLIP_PREFIX) for r in conv._CLIP_RULES] + [(_reverse(r), "") for r in conv._HEAD_RULES]
    state, fused = {}, {}
    for key, value in model.state_dict().items():
        match = re.fullmatch(r"(clip\.text_model\.text_model\.encoder|decoder)\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", key)
        if match:
            if match.group(1) == "decoder":
                base = f"{conv.FCCLIP_MARKER}{match.group(2)}.self_attn.in_proj_{match.group(4)}"
            else:
                base = f"{conv.CLIP_PREFIX}transformer.resblocks.{match.group(2)}.attn.in_proj_{match.group(4)}"
            fused.setdefault(base, {})[match.group(3)] = value
            continue
        if key == "clip.text_model.text_projection.weight":
            state[conv.CLIP_PREFIX + "text_projection"] = value.t().contiguous()
            continue
        if key.startswith("default_"):
            continue
        for (regex, template), prefix in rules:
            found = regex.match(key)
            if found:
                values = {int(name[1:]): text for name, text in found.groupdict().items()}
                original = template
                for index in sorted(values, reverse=True):
                    original = original.replace(f"\\{index}", values[index])
                if conv._apply(conv._HEAD_RULES if not prefix else conv._CLIP_RULES, original) == key:
                    state[prefix + original] = value
                    break
        else:
            raise AssertionError(f"no original name for {key}")
    for base, parts in fused.items():
        state[base] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return state


def run_recorded_training(fx, inputs: dict):
    """The fixture's training forward, as recorded: train mode, the per-image (not batch-invariant) path, the
    recorded point-sampling random numbers and every matcher call. Returns `(output, matcher_calls, rand)`."""
    model = fx.model.train()
    saved, model.config.batch_invariant = model.config.batch_invariant, False
    calls, restore = record_matches(model.criterion(len(fx.inputs["train_classes"])))
    try:
        with ReplayedRand(fx.inputs["point_rand_seed"]) as rand:
            out = model(**inputs)
    finally:
        restore()
        model.eval()
        model.config.batch_invariant = saved
    return out, calls, rand


def check_training_predictions(fx, out, calls, rand, logits_tolerance: float) -> None:
    """What ITA and FC-CLIP training share: the random draws, the text classifier, every prediction of the deep
    supervision, the matchings and the set of weighted loss terms (their values are each test's own check)."""
    train = fx.outputs["train"]
    assert rand.shapes == [tuple(c["shape"]) for c in fx.inputs["point_rand_tape"]]
    assert torch.equal(out.text_classifier, train["text_classifier"])
    for p in range(train["decoder_pred_logits"].shape[0]):
        assert diff(out.all_class_logits[p], train["decoder_pred_logits"][p]) < logits_tolerance
        assert diff(out.all_mask_logits[p], train["decoder_pred_masks"][p]) < logits_tolerance
    check_matches(calls, train["matcher_indices"])
    assert set(out.loss_dict) == set(train["losses_weighted"])
