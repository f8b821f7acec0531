"""User-facing errors: the entry points print these as one line, without a traceback."""


class VFIError(Exception):
    """Bad input that the user can fix: a path, a value or a name. The message names it."""
