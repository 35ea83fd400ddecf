"""Imports every model file so that each registers itself. Add new model files here."""

from . import hrnet, shufflenetv2_seg  # noqa: F401
