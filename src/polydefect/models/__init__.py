"""Plain torch networks (no training logic): autoencoders, segmenters, feature extractors."""
