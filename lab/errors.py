"""The one exception the lab raises for bad input: the CLIs print it as a one-line error."""


class LabError(Exception):
    """A user-facing error: bad config, bad data, a split that does not match its data."""
