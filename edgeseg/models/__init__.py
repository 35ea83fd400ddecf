"""Model zoo (layer 3, torch). ``create_model`` and ``list_models`` are the entry points;
``model_from_weights`` is the one way from a weights file (checkpoint or state dict) to a model."""

from .checkpoint import (
    CheckpointConflict,
    CheckpointInfo,
    load_checkpoint,
    model_from_weights,
    read_checkpoint_info,
    save_checkpoint,
)
from .registry import ModelInfo, create_model, list_models, model_info, register_model
from .weights import load_backbone_weights, load_weights

__all__ = ["CheckpointConflict", "CheckpointInfo", "ModelInfo", "create_model", "list_models",
           "load_backbone_weights", "load_checkpoint", "load_weights", "model_from_weights", "model_info",
           "read_checkpoint_info", "register_model", "save_checkpoint"]
