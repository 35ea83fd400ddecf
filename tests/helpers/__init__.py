"""What the tests share, one owner each (imported as ``helpers.*``: pyproject puts tests/ on sys.path).

- ``blocked_imports.run_without``: run code in a child Python with some top-level modules unimportable.
- ``tiny_onnx``: small ONNX nets built with onnx.helper (no torch), their metadata, calibration images.
- ``tiny_models``: small torch models, the Q/DQ test net, and the one torch -> ONNX export call.
- ``fake_tensorrt``: a fake ``tensorrt`` module whose flags are enum members, like the real bindings
  (fixture ``fake_trt`` in tests/conftest.py).
- ``fake_pycuda``: a fake CUDA context and ``pycuda.driver`` for ``edgeseg.runtime.cuda``, recording frees.
- ``zoo``: the first registered model of each decoder family, and the smallest input a model accepts.
- ``bags``: small ROS bags (ROS 2 sqlite3/mcap, ROS 1) of Image / CompressedImage frames, written with rosbags.
- ``fake_capture``: a fake ``cv2.VideoCapture`` (a camera that delivers N frames, then stops).
- ``imagenet_files``: torchvision ShuffleNetV2 / timm HRNet ImageNet files, written from the golden key lists.
"""
