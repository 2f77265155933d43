"""pycni: Container Network Interface plugins in Python."""

__version__ = "0.1.0"
