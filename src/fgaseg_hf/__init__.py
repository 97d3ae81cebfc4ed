"""fgaseg_hf: FGA-Seg open-vocabulary semantic segmentation as a transformers model."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForSemanticSegmentation,
    AutoProcessor,
)

from .configuration_fgaseg import FGASegConfig, available_presets
from .configuration_ita import ITAConfig, available_ita_presets
from .image_processing_fgaseg import FGASegImageProcessor
from .image_processing_ita import ITAImageProcessor
from .modeling_fgaseg import FGASegModel, FGASegOutput, FGASegPreTrainedModel
from .modeling_ita import ITAModel, ITAOutput, ITAPreTrainedModel
from .pipeline_fgaseg import OpenVocabularySegmentationPipeline, register_pipelines
from .processing_fgaseg import FGASegProcessor
from .processing_ita import ITAProcessor

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
# ITA (FC-CLIP with dominant-category text queries), the second model.
AutoConfig.register("ita", ITAConfig, exist_ok=True)
AutoModel.register(ITAConfig, ITAModel, exist_ok=True)
AutoModelForSemanticSegmentation.register(ITAConfig, ITAModel, exist_ok=True)
AutoImageProcessor.register(ITAConfig, image_processor_classes={"pil": ITAImageProcessor}, exist_ok=True)
AutoProcessor.register(ITAConfig, ITAProcessor, exist_ok=True)
ITAConfig.register_for_auto_class()
ITAModel.register_for_auto_class("AutoModel")
ITAImageProcessor.register_for_auto_class("AutoImageProcessor")
ITAProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "FGASegConfig",
    "FGASegImageProcessor",
    "FGASegModel",
    "FGASegOutput",
    "FGASegPreTrainedModel",
    "FGASegProcessor",
    "ITAConfig",
    "ITAImageProcessor",
    "ITAModel",
    "ITAOutput",
    "ITAPreTrainedModel",
    "ITAProcessor",
    "OpenVocabularySegmentationPipeline",
    "available_ita_presets",
    "available_presets",
]
__version__ = "0.1.0"
