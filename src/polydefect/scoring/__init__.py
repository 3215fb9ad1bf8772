"""From reconstructions to verdicts: anomaly maps, image scores, thresholds and batch SPC."""
