"""The error type for bad input that a user can fix.

The CLI turns a `FedKBError` into one line on stderr and exit code 2. Its
message names the file (and line) and says what to do. Pure Python: the app
raises it too.
"""


class FedKBError(Exception):
    """Bad input or a missing artifact, described for the user in one line."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (its type's name if it has none), for
    the one-line messages above: library errors often carry a whole traceback-like text."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
