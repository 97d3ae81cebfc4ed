"""`import fgaseg_hf` and the CLI's help, --version and argument errors stay light (no torch, no transformers),
while the Auto-class registration still takes effect once transformers is used."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import fgaseg_hf
from fgaseg_hf.cli import DELEGATED, build_parser, main

HEAVY = ("torch", "transformers")


def fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def heavy_modules_after(*commands: list[str]) -> list[dict]:
    """Runs `fgaseg <argv>` for each argv, in order, in one fresh interpreter; returns per command its exit code,
    output and the heavy modules loaded by then (so the first command that loads one is the culprit)."""
    done = fresh_python(
        "import json, sys, contextlib, io\n"
        "from fgaseg_hf.cli import main\n"
        "results = []\n"
        f"for argv in {list(commands)!r}:\n"
        "    out, err = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        "        try:\n"
        "            code = main(argv)\n"
        "        except SystemExit as stop:\n"
        "            code = stop.code\n"
        "    results.append({'code': code, 'out': out.getvalue(), 'err': err.getvalue(),\n"
        f"                    'heavy': [m for m in {HEAVY!r} if m in sys.modules]}})\n"
        "print(json.dumps(results))\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def subcommands() -> list[str]:
    parser = build_parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return sorted(choices)


def test_import_is_light_and_registration_follows_transformers():
    done = fresh_python(
        "import sys, fgaseg_hf\n"
        "before = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "from transformers import AutoConfig, AutoModelForSemanticSegmentation\n"
        "config = AutoConfig.for_model('fgaseg')\n"
        "print(before, type(config).__name__, AutoModelForSemanticSegmentation._model_mapping[type(config)].__name__,"
        " fgaseg_hf.FGASegModel._auto_class)\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "FGASegConfig", "FGASegModel", "AutoModel"]


def test_registration_when_a_submodule_is_imported_first():
    # The submodule's own import of transformers must not register while it is half-initialised.
    done = fresh_python(
        "from fgaseg_hf.modeling_ita import ITAModel\n"
        "from transformers import AutoConfig\n"
        "print(type(AutoConfig.for_model('ita')).__name__, ITAModel._auto_class)\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ITAConfig", "AutoModel"]


def test_registration_when_transformers_was_imported_before():
    done = fresh_python(
        "import transformers, fgaseg_hf\n"
        "print(type(transformers.AutoConfig.for_model('fgaseg')).__name__)\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["FGASegConfig"]


def test_lazy_attributes_resolve_and_unknown_names_raise():
    assert fgaseg_hf.FGASegConfig.__name__ == "FGASegConfig"
    assert set(fgaseg_hf.__all__) >= {"FGASegModel", "ITAProcessor", "DEMO_MODEL", "OpenVocabularySegmentationPipeline"}
    for name in fgaseg_hf._LAZY_ATTRIBUTES:
        assert getattr(fgaseg_hf, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'NoSuchModel'"):
        fgaseg_hf.NoSuchModel


def test_help_version_and_every_subcommand_help_load_neither_torch_nor_transformers():
    commands = subcommands()
    top, version, *helps = heavy_modules_after(["--help"], ["--version"], *([c, "--help"] for c in commands))
    assert top["code"] == 0 and top["heavy"] == [] and "usage: fgaseg" in top["out"]
    assert version["code"] == 0 and version["out"].strip() == f"fgaseg {fgaseg_hf.__version__}"
    assert version["heavy"] == []
    for command, result in zip(commands, helps):
        assert result["code"] == 0, (command, result["err"])
        assert result["out"].startswith(f"usage: fgaseg {command}"), (command, result["out"][:200])
        assert result["heavy"] == [], command


def test_argument_errors_answer_without_torch():
    cases = ((["train"], "--config"), (["segment"], "images"), (["benchmark", "--repeats", "x"], "--repeats"),
             (["evaluate", "--no-such-option"], "--no-such-option"), (["nonsense"], "invalid choice"))
    for (argv, message), result in zip(cases, heavy_modules_after(*(argv for argv, _ in cases))):
        assert result["code"] == 2 and message in result["err"] and result["heavy"] == [], (argv, result)


def test_every_benchmark_option_has_help_text():
    from fgaseg_hf.benchmark import build_parser as benchmark_parser

    for action in benchmark_parser()._actions:
        if action.option_strings and action.dest != "case":
            assert action.help and action.help.strip("() "), action.option_strings


def test_synthetic_defaults_match_the_demo_run_config():
    import yaml

    (result,) = heavy_modules_after(["synthetic", "--help"])
    assert "default: outputs/synthetic_scenes" in result["out"] and "default: 4000" in result["out"]
    run = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs/train/synthetic_demo.yaml").read_text())
    assert run["data"]["path"] == "outputs/synthetic_scenes"


def test_delegated_table_covers_its_subcommands(capsys):
    assert set(DELEGATED) <= set(subcommands())
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"fgaseg {fgaseg_hf.__version__}"
