"""Imports every model file so that each registers itself. Add a new backbone or decoder module here.

A backbone module imports the decoder modules its models compose (``register_composed`` needs them
registered first). The order of the backbone modules is the registry's order (hrnet, then shufflenetv2):
tests/helpers/zoo.py and tests/golden/make_qdq_placement.py take the first model of each decoder.
"""

from . import deeplabv3, deeplabv3plus, hrnet, hrnetv2_head, ocr, shufflenetv2, speed_decoder  # noqa: F401
