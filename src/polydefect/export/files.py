"""What an inspection bundle holds, by name: written by `bundle.py`, read by `runtime.py`."""

from polydefect.pipeline.evaluate import SPC_LIMITS
from polydefect.scoring.location import LOCATION_FILE

FORMAT, FORMAT_VERSION = "polydefect-inspection-bundle", 1
MANIFEST, CONFIG, THRESHOLDS = "manifest.json", "config.yaml", "thresholds.json"
DETECTOR, SEGMENTER = "detector.onnx", "segmenter.onnx"
COPIED = (CONFIG, THRESHOLDS, SPC_LIMITS, LOCATION_FILE)  # from the run, where it has them
