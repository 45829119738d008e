"""The one exception type that reaches the user as a one-line message."""


class UserError(ValueError):
    """Bad input from the edge (config, CLI argument, file, checkpoint).

    The message is a single line that names the offending thing; the CLI prints it
    as ``error: <message>`` and exits with status 2.
    """
