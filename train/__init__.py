"""Training stage: offline 3D reconstruction, the GeoLink trainer and evaluation."""
