"""Datasets (layer 3): the folder format (``folder``), numpy augmentation (``augment``),
the synthetic robot-scene generator (``synth``, ``generate``) and the torch wrapper
(``torch_dataset``). Only ``torch_dataset`` imports torch; nothing is imported here."""
