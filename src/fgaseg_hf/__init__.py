"""fgaseg_hf: FGA-Seg open-vocabulary semantic segmentation as a transformers model."""

from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation

from .configuration_fgaseg import FGASegConfig, available_presets
from .modeling_fgaseg import FGASegModel, FGASegOutput, FGASegPreTrainedModel

AutoConfig.register("fgaseg", FGASegConfig, exist_ok=True)
AutoModel.register(FGASegConfig, FGASegModel, exist_ok=True)
AutoModelForSemanticSegmentation.register(FGASegConfig, FGASegModel, exist_ok=True)
# Saved folders carry the defining files, so that trust_remote_code loads them where fgaseg_hf is not installed.
FGASegConfig.register_for_auto_class()
FGASegModel.register_for_auto_class("AutoModel")

__all__ = ["FGASegConfig", "FGASegModel", "FGASegOutput", "FGASegPreTrainedModel", "available_presets"]
__version__ = "0.1.0"
