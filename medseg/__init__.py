"""medseg: medical image segmentation on MONAI and PyTorch.

The command line (``medseg ...``) is a thin layer over this package: every
command is one call into a function importable from here.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
