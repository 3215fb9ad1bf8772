"""polydefect: unsupervised visual defect detection on moulded polymer parts."""

__version__ = "0.1.0"
