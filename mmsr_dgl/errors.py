"""The one exception type for problems in the user's input or settings."""


class UserError(Exception):
    """Bad input, settings or files: the CLI prints the message without a traceback."""
