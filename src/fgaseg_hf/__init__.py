"""fgaseg_hf: FGA-Seg open-vocabulary semantic segmentation as a transformers model.

Importing the package is light: the classes below (and torch, transformers) load on first use, and the model
families are registered with transformers' Auto classes and pipelines as soon as transformers is imported (see
`lazy_imports`), so `import fgaseg_hf` followed by `AutoModel.from_pretrained(folder)` or `pipeline(...)` works.
"""

from pathlib import Path

from .lazy_imports import DeferredRegistration

__version__ = "0.1.0"

# The demo model shipped inside the package: a complete model folder, as `save_pretrained` writes it (tiny, trained
# on synthetic scenes, closed-vocabulary; see its README.md).
DEMO_MODEL = str(Path(__file__).resolve().parent / "demo_model")

# Public name -> the submodule defining it, imported on first access. Add one line per new public name.
_LAZY_ATTRIBUTES = {
    "CATSegConfig": "configuration_catseg",
    "CATSegModel": "modeling_catseg",
    "FCCLIPConfig": "configuration_fcclip",
    "available_fcclip_presets": "configuration_fcclip",
    "FCCLIPModel": "modeling_fcclip",
    "FCCLIPOutput": "modeling_fcclip",
    "FGASegConfig": "configuration_fgaseg",
    "available_presets": "configuration_fgaseg",
    "ITAConfig": "configuration_ita",
    "available_ita_presets": "configuration_ita",
    "FGASegImageProcessor": "image_processing_fgaseg",
    "ITAImageProcessor": "image_processing_ita",
    "FGASegModel": "modeling_fgaseg",
    "FGASegOutput": "modeling_fgaseg",
    "FGASegPreTrainedModel": "modeling_fgaseg",
    "ITAModel": "modeling_ita",
    "ITAOutput": "modeling_ita",
    "ITAPreTrainedModel": "modeling_ita",
    "OpenVocabularySegmentationPipeline": "pipeline_fgaseg",
    "FGASegProcessor": "processing_fgaseg",
    "ITAProcessor": "processing_ita",
}

# One line per model family: (model_type, config, model, image processor, processor), names from _LAZY_ATTRIBUTES.
# Each is registered with AutoConfig / AutoModel / AutoModelForSemanticSegmentation / AutoImageProcessor /
# AutoProcessor, and for remote code, so that saved folders carry the defining files and load with
# trust_remote_code where fgaseg_hf is not installed.
AUTO_REGISTRATIONS = [
    ("fgaseg", "FGASegConfig", "FGASegModel", "FGASegImageProcessor", "FGASegProcessor"),
    ("ita", "ITAConfig", "ITAModel", "ITAImageProcessor", "ITAProcessor"),
    # CAT-Seg (FGA-Seg's parent) on FGA-Seg's blocks, with FGA-Seg's processors.
    ("catseg", "CATSegConfig", "CATSegModel", "FGASegImageProcessor", "FGASegProcessor"),
    # FC-CLIP (ITA's parent) on ITA's parts, with ITA's processors.
    ("fcclip", "FCCLIPConfig", "FCCLIPModel", "ITAImageProcessor", "ITAProcessor"),
]


def __getattr__(name):
    if name not in _LAZY_ATTRIBUTES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_LAZY_ATTRIBUTES[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES))


_registered: list[bool] = []


def register_auto_classes() -> None:
    """Register every family of `AUTO_REGISTRATIONS` and the open-vocabulary pipeline with transformers (done
    automatically; idempotent)."""
    if _registered:
        return
    _registered.append(True)
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForSemanticSegmentation,
        AutoProcessor,
    )

    from .pipeline_fgaseg import register_pipelines

    for model_type, *names in AUTO_REGISTRATIONS:
        config, model, image_processor, processor = (__getattr__(name) for name in names)
        AutoConfig.register(model_type, config, exist_ok=True)
        AutoModel.register(config, model, exist_ok=True)
        AutoModelForSemanticSegmentation.register(config, model, exist_ok=True)
        AutoImageProcessor.register(config, image_processor_classes={"pil": image_processor}, exist_ok=True)
        AutoProcessor.register(config, processor, exist_ok=True)
        config.register_for_auto_class()
        model.register_for_auto_class("AutoModel")
        image_processor.register_for_auto_class("AutoImageProcessor")
        processor.register_for_auto_class("AutoProcessor")
    register_pipelines()


_registration = DeferredRegistration(__name__, register_auto_classes)
_registration.install()

__all__ = ["AUTO_REGISTRATIONS", "DEMO_MODEL", "__version__", "register_auto_classes", *sorted(_LAZY_ATTRIBUTES)]
