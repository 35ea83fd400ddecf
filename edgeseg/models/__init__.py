"""Model zoo (layer 3, torch). ``create_model`` and ``list_models`` are the entry points;
``model_from_weights`` is the one way from a weights file (checkpoint or state dict) to a model.
A model name resolves to a registered backbone + decoder (``register_backbone``, ``register_decoder``,
``register_composed``: registry.py)."""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "BackboneEntry": ".registry",
    "DecoderEntry": ".registry",
    "ModelInfo": ".registry",
    "PretrainedWeights": ".registry",
    "create_model": ".registry",
    "list_backbones": ".registry",
    "list_decoders": ".registry",
    "list_models": ".registry",
    "model_info": ".registry",
    "register_backbone": ".registry",
    "register_composed": ".registry",
    "register_decoder": ".registry",
    "register_model": ".registry",
    "CheckpointConflict": ".checkpoint",
    "CheckpointInfo": ".checkpoint",
    "load_checkpoint": ".checkpoint",
    "model_from_weights": ".checkpoint",
    "read_checkpoint_info": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "save_safetensors": ".checkpoint",
    "load_backbone_weights": ".weights",
    "load_weights": ".weights",
}

__all__ = [*_LAZY]
__getattr__ = lazy_exports(__name__, _LAZY)
