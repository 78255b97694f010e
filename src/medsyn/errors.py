"""The one exception type a user may see: a message that says what is wrong and how to fix it."""


class MedsynError(Exception):
    """Bad input or an impossible request. The CLI prints the message and exits with code 2."""

    exit_code = 2
