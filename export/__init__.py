"""Export stage: ONNX of the 2D encoder and the TensorRT engine built on the target."""
