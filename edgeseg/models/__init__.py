"""Model zoo (layer 3, torch). ``create_model`` and ``list_models`` are the entry points."""

from .registry import ModelInfo, create_model, list_models, model_info, register_model
from .weights import load_backbone_weights, load_checkpoint, load_weights, save_checkpoint

__all__ = ["ModelInfo", "create_model", "list_models", "load_backbone_weights", "load_checkpoint", "load_weights",
           "model_info", "register_model", "save_checkpoint"]
