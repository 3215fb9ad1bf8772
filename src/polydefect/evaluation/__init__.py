"""Metrics, curves and figures computed from scores, anomaly maps and masks."""
