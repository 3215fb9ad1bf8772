"""What an inspection bundle holds, by name, and its graphs' inputs and outputs: written by `bundle.py` and
`graphs.py`, read by `runtime.py`."""

from polydefect.scoring.location import LOCATION_FILE
from polydefect.scoring.spc import SPC_LIMITS

FORMAT, FORMAT_VERSION = "polydefect-inspection-bundle", 1
MANIFEST, CONFIG, THRESHOLDS = "manifest.json", "config.yaml", "thresholds.json"
DETECTOR, SEGMENTER = "detector.onnx", "segmenter.onnx"
COPIED = (CONFIG, THRESHOLDS, SPC_LIMITS, LOCATION_FILE)  # from the run, where it has them
# the graphs' inputs and outputs
IMAGES, VIEW_HASHES, IMAGE_HASHES, MAP, LOGITS = "images", "view_hashes", "image_hashes", "map", "logits"
