"""edgeseg: lightweight segmentation networks from PyTorch to INT8 TensorRT engines.

Importing the package imports nothing heavy: torch, onnx, tensorrt and pycuda are
loaded only by the modules (and CLI command bodies) that need them.
"""

__version__ = "0.1.0"
