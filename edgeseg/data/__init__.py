"""Datasets (layer 3): dataset specs and opening them (``datasets``: ``DIR`` or ``KIND:ROOT[:split]``), the
public-dataset adapters and their label tables (``adapters``, ``labels``), the folder format (``folder``),
numpy augmentation (``augment``), the synthetic robot-scene generator (``synth``, ``generate``) and the torch
wrapper (``torch_dataset``). Only ``torch_dataset`` imports torch; nothing is imported here."""
