"""The onboard runtime: camera → embedding → tile search → verified position → filter → sinks.

Imports only numpy, OpenCV and faiss at module level, and optionally ONNX Runtime or TensorRT,
so it runs on a Jetson that has no torch.
"""
