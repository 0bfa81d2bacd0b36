"""lookalike: neural image search over a folder of photos."""

__version__ = "0.1.0"
