"""fgaseg_hf: FGA-Seg open-vocabulary semantic segmentation as a transformers model."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForSemanticSegmentation,
    AutoProcessor,
)

from .configuration_fgaseg import FGASegConfig, available_presets
from .image_processing_fgaseg import FGASegImageProcessor
from .modeling_fgaseg import FGASegModel, FGASegOutput, FGASegPreTrainedModel
from .pipeline_fgaseg import OpenVocabularySegmentationPipeline, register_pipelines
from .processing_fgaseg import FGASegProcessor

AutoConfig.register("fgaseg", FGASegConfig, exist_ok=True)
AutoModel.register(FGASegConfig, FGASegModel, exist_ok=True)
AutoModelForSemanticSegmentation.register(FGASegConfig, FGASegModel, exist_ok=True)
AutoImageProcessor.register(FGASegConfig, image_processor_classes={"pil": FGASegImageProcessor}, exist_ok=True)
AutoProcessor.register(FGASegConfig, FGASegProcessor, exist_ok=True)
# Saved folders carry the defining files, so that trust_remote_code loads them where fgaseg_hf is not installed.
FGASegConfig.register_for_auto_class()
FGASegModel.register_for_auto_class("AutoModel")
FGASegImageProcessor.register_for_auto_class("AutoImageProcessor")
FGASegProcessor.register_for_auto_class("AutoProcessor")
register_pipelines()

__all__ = [
    "FGASegConfig",
    "FGASegImageProcessor",
    "FGASegModel",
    "FGASegOutput",
    "FGASegPreTrainedModel",
    "FGASegProcessor",
    "OpenVocabularySegmentationPipeline",
    "available_presets",
]
__version__ = "0.1.0"
