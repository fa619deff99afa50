"""The error type for bad input that a user can fix.

The CLI turns a `FedKBError` into one line on stderr and exit code 2. Its
message names the file (and line) and says what to do. Pure Python: the app
raises it too.
"""


class FedKBError(Exception):
    """Bad input or a missing artifact, described for the user in one line."""
