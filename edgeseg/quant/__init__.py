"""INT8 without a GPU (layer 2: onnx and onnxruntime, never torch; nothing heavy at import).

    calib_data  seeded image sampling, reference preprocessing, batches, onnxruntime reader
    ranges      activation ranges (percentile / entropy / minmax) from |x| histograms (histogram.py)
    qdq_trt     model.int8.onnx: Q/DQ for TensorRT explicit quantization
    lint        lint_qdq / check_qdq: TensorRT's Q/DQ rules
    qdq_ort     model.int8.ort.onnx: INT8 for ONNX Runtime's CPU provider (same ranges)
    trt_cache   calibration.cache in TensorRT's native format
    calibrate   calibrate_model(onnx_path, calib_dir, CalibrateConfig()) -> every artifact
"""
