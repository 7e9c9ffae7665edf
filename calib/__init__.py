"""INT8 calibration: representative images and explicit Q/DQ quantization."""
