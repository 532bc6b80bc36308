class VMError(Exception):
    """The VM could not be prepared, booted or run to the end (one-line message)."""


class VMTimeout(VMError):
    """The guest did not finish within the time limit."""
