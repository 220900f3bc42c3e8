"""remedyd: watch a platform, decide, repair, and audit every decision."""

__version__ = "0.1.0"
# The configuration file when a command's --config is not given (the image sets it). Not a
# settings key: the settings' environment check leaves it alone.
CONFIG_FILE_VARIABLE = "REMEDYD_CONFIG"
