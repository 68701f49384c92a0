"""The one exception type the CLI turns into a one-line message and exit code 2."""


class ExplorerError(Exception):
    """Bad input or a state the user can fix: the message names the problem and the fix."""
