"""The README's and the demo card's Python examples run as written, offline, with the shipped demo model; the demo
model folder is what save_pretrained writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fgaseg_hf

REPO = Path(__file__).resolve().parent.parent
# A block whose first line starts so needs the network; every other block must run.
OFFLINE_MARK = "# needs the Hugging Face Hub"
DOCUMENTS = {"README.md": REPO / "README.md", "demo card": Path(fgaseg_hf.DEMO_MODEL) / "README.md"}

# Runs one block, then prints what it left behind: tensors and arrays by shape, lists by length.
DRIVER = """
import inspect, json, sys
namespace = {"__name__": "__main__"}
exec(compile(open(sys.argv[1], encoding="utf-8").read(), "snippet", "exec"), namespace)
summary = {}
for name, value in namespace.items():
    if hasattr(value, "shape"):
        summary[name] = list(value.shape)
    elif isinstance(value, (list, tuple)):
        summary[name] = len(value)
    elif not name.startswith("__") and not (inspect.isfunction(value) or inspect.isclass(value) or inspect.ismodule(value)):
        summary[name] = type(value).__name__
print("SUMMARY " + json.dumps(summary))
"""


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def run_block(code: str, cwd: Path) -> dict:
    (cwd / "snippet.py").write_text(code, encoding="utf-8")
    (cwd / "driver.py").write_text(DRIVER, encoding="utf-8")
    shutil.copytree(REPO / "examples", cwd / "examples", dirs_exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "driver.py", "snippet.py"], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, f"the block failed:\n{code}\n{done.stderr[-3000:]}"
    line = next(line for line in done.stdout.splitlines() if line.startswith("SUMMARY "))
    return json.loads(line[len("SUMMARY "):])


CASES = [(doc, i) for doc, path in DOCUMENTS.items() for i, block in enumerate(python_blocks(path))
         if not block.startswith(OFFLINE_MARK)]


def test_every_block_runs_or_is_marked_as_needing_the_hub():
    readme = python_blocks(DOCUMENTS["README.md"])
    marked = [block for block in readme if block.startswith(OFFLINE_MARK)]
    assert len(readme) >= 3 and 1 <= len(marked) < len(readme)
    for block in readme:
        # Every runnable block names a folder that exists here, not a placeholder.
        assert "path/or/hub-id" not in block and "street.jpg" not in block
    assert ("demo card", 0) in CASES


@pytest.mark.parametrize("document,index", CASES, ids=[f"{d}-{i}" for d, i in CASES])
def test_python_block_runs_as_written(document, index, tmp_path):
    code = python_blocks(DOCUMENTS[document])[index]
    summary = run_block(code, tmp_path)
    image = [256, 256]  # examples/synthetic_scene.png
    if "label_map" in summary:  # the processor and model example
        assert summary["label_map"] == image
        assert summary["probabilities"] == [3] + image
    else:  # the pipeline examples
        assert summary["segmenter"] == "OpenVocabularySegmentationPipeline"


def test_demo_model_folder_is_what_save_pretrained_writes():
    from fgaseg_hf.demo_model_files import differences

    stale = differences()
    assert not stale, f"out of date in {fgaseg_hf.DEMO_MODEL}: {stale}; run: python -m fgaseg_hf.demo_model_files --sync"
    config = json.loads((Path(fgaseg_hf.DEMO_MODEL) / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_fgaseg.FGASegModel"
    assert set(config["custom_pipelines"]) == {"open-vocabulary-segmentation"}
    assert (Path(fgaseg_hf.DEMO_MODEL) / "modeling_fgaseg.py").is_file()


def test_differences_names_a_stale_code_file_and_sync_repairs_a_copy(tmp_path):
    from fgaseg_hf.demo_model_files import differences, sync

    folder = tmp_path / "demo"
    shutil.copytree(fgaseg_hf.DEMO_MODEL, folder)
    (folder / "modeling_fgaseg.py").write_text("# stale\n", encoding="utf-8")
    (folder / "removed_module.py").write_text("# no longer written\n", encoding="utf-8")
    config = json.loads((folder / "config.json").read_text())
    del config["custom_pipelines"]
    config["transformers_version"] = "0.0.1"  # not a difference: it follows the installed transformers
    (folder / "config.json").write_text(json.dumps(config))
    assert differences(folder) == ["config.json", "modeling_fgaseg.py", "removed_module.py"]
    assert sync(folder) == ["config.json", "modeling_fgaseg.py", "removed_module.py"]
    assert differences(folder) == ["removed_module.py"]  # another folder: listed, never deleted
    assert (folder / "removed_module.py").is_file()
    assert (folder / "modeling_fgaseg.py").read_bytes() == (Path(fgaseg_hf.DEMO_MODEL) / "modeling_fgaseg.py").read_bytes()
    assert "custom_pipelines" in json.loads((folder / "config.json").read_text())
