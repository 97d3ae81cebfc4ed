import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import CLIPConfig  # noqa: E402

from fgaseg_hf import FGASegConfig, FGASegModel  # noqa: E402

VOCAB = 64  # tiny text vocabulary: 62 = start of text, 63 = end of text


def tiny_clip_config(vision_layers: int = 4) -> CLIPConfig:
    return CLIPConfig(
        projection_dim=32,
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=VOCAB,
            max_position_embeddings=16, bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1,
            hidden_act="quick_gelu",
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers, num_attention_heads=2,
            image_size=32, patch_size=8, hidden_act="quick_gelu",
        ),
    )


def tiny_config(**overrides) -> FGASegConfig:
    """A tiny FGA-Seg: 8 px patches, 8 x 8 token grid (64 px input), hidden 32."""
    values = dict(
        clip_config=tiny_clip_config(),
        hidden_dim=32,
        decoder_dims=[16, 16],
        decoder_guidance_dims=[16, 16],
        decoder_guidance_proj_dims=[8, 8],
        text_guidance_proj_dim=16,
        appearance_guidance_proj_dim=16,
        window_size=4,
        pooling_size=[2, 2],
        p2t_num_heads=4,
        num_attention_heads=2,
        image_size=64,
        inference_top_k=3,
        class_aggregation_length=8,
    )
    values.update(overrides)
    return FGASegConfig(**values)


def make_input_ids(num_classes: int, num_templates: int = 1, seed: int = 0, length: int = 8) -> torch.Tensor:
    """Random class-major prompts: start token, a few words, end token, end-token padding."""
    generator = torch.Generator().manual_seed(seed)
    rows = num_classes * num_templates
    ids = torch.full((rows, length), VOCAB - 1, dtype=torch.long)
    ids[:, 0] = VOCAB - 2
    for row in range(rows):
        words = int(torch.randint(1, length - 2, (1,), generator=generator))
        ids[row, 1 : 1 + words] = torch.randint(0, VOCAB - 2, (words,), generator=generator)
    return ids


def make_model(seed: int = 0, **overrides) -> FGASegModel:
    torch.manual_seed(seed)
    model = FGASegModel(tiny_config(**overrides))
    with torch.no_grad():
        # Spread the (otherwise tiny, 0.02-std) weights so that logits differ clearly between classes.
        for name, param in model.named_parameters():
            if param.dim() > 1 and not name.startswith("clip.text_model.embeddings"):
                param.mul_(3.0)
    return model.eval()


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield


def tiny_tokenizer():
    """A CLIP tokenizer over the tiny text vocabulary: letters, a few whole words, start/end of text."""
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = letters + [c + "</w>" for c in letters]
    merges = [("s", "k"), ("sk", "y</w>"), ("r", "o"), ("ro", "a"), ("roa", "d</w>"), ("c", "a"), ("ca", "r</w>"),
              ("t", "r"), ("e", "e</w>"), ("tr", "ee</w>")]
    vocab += ["".join(pair) for pair in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=16)


def tiny_processor(config=None, **image_processor_kwargs):
    from fgaseg_hf import FGASegProcessor

    return FGASegProcessor.from_model_config(config or tiny_config(), tiny_tokenizer(), **image_processor_kwargs)


BLOCK_PACKAGE = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "fgaseg_hf" or name.startswith("fgaseg_hf."):
            raise ImportError("fgaseg_hf is blocked in this process")
sys.meta_path.insert(0, _Block())
"""


def run_without_package(script: str, tmp_path, check: bool = True):
    """Run `script` in a fresh offline Python process where `fgaseg_hf` cannot be imported (remote code only)."""
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="info")
    result = subprocess.run([sys.executable, "-c", BLOCK_PACKAGE + script], env=env, capture_output=True, text=True, cwd=tmp_path)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


PARITY_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "parity"


def parity_fixture_folders(matches) -> list:
    """Reference-tensor folders (`tests/fixtures/parity/*`, then every folder in `FGASEG_PARITY_FIXTURES`,
    os.pathsep-separated) whose parsed config.json satisfies `matches(config)`."""
    import json

    folders = sorted(PARITY_FIXTURES.iterdir()) if PARITY_FIXTURES.is_dir() else []
    folders += [Path(p) for p in os.environ.get("FGASEG_PARITY_FIXTURES", "").split(os.pathsep) if p]
    found = []
    for folder in folders:
        config = folder / "config.json"
        if config.is_file() and matches(json.loads(config.read_text())):
            found.append(folder)
    return found


def fixture_params(folders: list) -> dict:
    """`pytest.fixture` arguments over `folders`; with none, one `None` parameter that `require_fixture` fails on,
    so a missing fixture is a failure, never pytest's silent skip of an empty parameter set."""
    return dict(params=folders or [None], ids=[f.name for f in folders] or ["missing"])


def require_fixture(folder):
    assert folder is not None, f"no matching reference fixture under {PARITY_FIXTURES} or FGASEG_PARITY_FIXTURES"
    return folder


def is_ita_fixture(config: dict) -> bool:
    """An ITA fixture: the detectron2 cfg names the FCCLIP meta-architecture and the source is ITA."""
    arch = config.get("cfg", {}).get("MODEL", {}).get("META_ARCHITECTURE")
    return arch == "FCCLIP" and any(k.startswith("ITA") for k in config.get("sources", {}))


def is_fcclip_fixture(config: dict) -> bool:
    """An FC-CLIP fixture: the FCCLIP meta-architecture recorded from the FC-CLIP sources alone (not ITA's)."""
    arch = config.get("cfg", {}).get("MODEL", {}).get("META_ARCHITECTURE")
    sources = config.get("sources", {})
    return arch == "FCCLIP" and "FC-CLIP" in sources and not any(k.startswith("ITA") for k in sources)
