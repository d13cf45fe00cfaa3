"""The one exception the lab raises for bad input; the CLIs print it as a one-line error."""

import sys
from contextlib import contextmanager


class LabError(Exception):
    """A user-facing error: bad config, bad data, a split that does not match its data."""

    exit_code = 2


class Interrupted(LabError):
    """A run stopped by a signal (SIGTERM from a scheduler): exit status 143, as a shell reports it."""

    exit_code = 143


def lab_error_in(e: BaseException | None) -> LabError | None:
    """The LabError that caused `e`, if any (following __cause__ / __context__)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, LabError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def exit_on_lab_error(prog: str):
    """In a CLI: a LabError anywhere in the chain becomes `prog: error: ...` and exit status 2."""
    try:
        yield
    except Exception as e:  # jsonargparse wraps errors raised while instantiating classes
        cause = lab_error_in(e)
        if cause is None:
            raise
        print(f"{prog}: error: {cause}", file=sys.stderr)
        sys.exit(cause.exit_code)
