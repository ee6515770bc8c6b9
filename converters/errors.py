"""The one error root of the project: what a user can fix, printed by every CLI as one line.

`UserError` is the root; the weights errors refine it. Library code raises these with a message
that starts with the file (or flag) at fault; `icnet_tf.cli.run` prints `error: <message>` and
exits with status 1. Anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A problem with the user's input (a file, a flag, a list line), reported as one line."""


class WeightsFileError(UserError):
    """A weights file is missing, unreadable, corrupt, truncated or of an unexpected format.

    The message always starts with the file path, so it can be printed as the one line a CLI
    shows the user.
    """


class WeightsMismatchError(UserError):
    """Weights do not fit the network: missing, unexpected or wrong-shape keys (strict load)."""


class Note(UserWarning):
    """Something the user should know that did not stop the work (e.g. a damaged checkpoint
    passed over for the newest intact one). Library code warns with it (`warnings.warn`; Python
    shows each distinct note once per place); `icnet_tf.cli.run` prints it as one line,
    `note: <message>`."""
