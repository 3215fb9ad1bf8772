"""Reports for people: anomaly-map overlays and the HTML page of `python -m polydefect.inspect`."""
