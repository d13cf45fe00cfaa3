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


class ShortErrors:
    """A mixin for jsonargparse parsers: a bad option or value is one line, not the whole usage.

    lab.fit: error: unrecognized arguments: --data.memberz 3 (did you mean --data.members?);
    see --help or --print_config
    """

    short_prog = "lab"

    def error(self, message: str, ex: Exception | None = None):
        if not getattr(self, "exit_on_error", True):
            return super().error(message, ex)
        import difflib
        import re

        text = " ".join(line.strip() for line in str(message).strip().splitlines() if line.strip())
        options = [s for a in getattr(self, "_actions", []) for s in a.option_strings if s.startswith("--")]
        for sub in getattr(ex, "subcommand_parser", None), getattr(self, "_subcommands_action", None):
            options += [s for a in getattr(sub, "_actions", []) for s in a.option_strings if s.startswith("--")]
        hints = []
        for bad in re.findall(r"(--[\w.\-]+)", text) if "unrecognized" in text else []:
            hints += [m for m in difflib.get_close_matches(bad, options, n=2, cutoff=0.6) if m not in hints]
        hint = f" (did you mean {' or '.join(hints)}?)" if hints else ""
        print(f"{self.short_prog}: error: {text}{hint}; see --help or --print_config", file=sys.stderr)
        sys.exit(2)


def check_number(
    name: str, value, *, minimum=None, above=None, maximum=None, below=None, integer: bool = False
) -> None:
    """A LabError unless `value` is a number (an integer if asked) within the given bounds."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok_type or isinstance(value, bool) or value != value:  # value != value: NaN
        raise LabError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    bounds = [
        (minimum, lambda v, b: v >= b, ">="),
        (above, lambda v, b: v > b, ">"),
        (maximum, lambda v, b: v <= b, "<="),
        (below, lambda v, b: v < b, "<"),
    ]
    failed = [f"{op} {b}" for b, test, op in bounds if b is not None and not test(value, b)]
    if failed:
        wanted = " and ".join(f"{op} {b}" for b, _, op in bounds if b is not None)
        raise LabError(f"{name} must be {wanted}, got {value!r}")


@contextmanager
def sigterm_is_an_error(hint: str):
    """While active, SIGTERM (a scheduler preempting the job) raises Interrupted("stopped by SIGTERM; <hint>"):
    the CLI then prints one error line and exits 143 instead of dying silently or reporting success."""
    import signal

    def stop(signum, frame):
        raise Interrupted(f"stopped by SIGTERM; {hint}")

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
