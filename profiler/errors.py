"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class NetprofError(Exception):
    """An expected failure with a message meant for the operator (no traceback)."""

    exit_code = 1
