"""lookalike's version (its own module, so that no part of the package needs to import the package)."""

__version__ = "0.1.0"
