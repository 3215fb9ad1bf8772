"""Data layer: layout discovery, preprocessing, tiling, augmentation, datasets and DataModules."""
