"""Inspection bundles: a trained run's detector (and segmenter) as ONNX graphs with everything needed to judge new
images, scored with ONNX Runtime without the training code (`python -m polydefect.export`)."""
