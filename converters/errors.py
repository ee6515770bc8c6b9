"""Errors raised by weight readers and loaders; CLIs print them as one line and exit non-zero."""


class WeightsFileError(ValueError):
    """A weights file is missing, unreadable, corrupt, truncated or of an unexpected format.

    The message always starts with the file path, so it can be printed as the one line a CLI
    shows the user.
    """


class WeightsMismatchError(ValueError):
    """Weights do not fit the network: missing, unexpected or wrong-shape keys (strict load)."""
