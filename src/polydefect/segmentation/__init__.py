"""Background segmentation (thesis 3.6, 3.7): U-Net and classical segmenters behind one interface."""
