"""Exceptions that carry a message meant for the user.

The CLI prints an :class:`InputError` without a traceback and exits with status 2.
"""


class InputError(ValueError):
    """Input that qsmkit cannot use: says what is wrong and how to fix it."""
