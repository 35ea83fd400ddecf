"""Model zoo (layer 3, torch). ``create_model`` and ``list_models`` are the entry points."""

from .registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
