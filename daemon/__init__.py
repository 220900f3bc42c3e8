"""remedyd: watch a platform, decide, repair, and audit every decision."""

__version__ = "0.1.0"
