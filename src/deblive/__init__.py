"""deblive: build bootable Debian live images the way Debian's own are made, and prove they boot."""

__version__ = "0.1.0"
