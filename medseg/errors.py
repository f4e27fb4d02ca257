"""User-facing errors.

A :class:`MedsegError` carries one line that names the offending file and says
how to fix it. The CLI prints it without a traceback and exits non-zero.
"""

from __future__ import annotations


class MedsegError(Exception):
    """An error the user can fix; ``str(err)`` is a complete one-line message."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def fail(path, problem: str, fix: str) -> MedsegError:
    """Build a MedsegError of the form ``PATH: PROBLEM; fix: FIX``."""
    where = f"{path}: " if path is not None else ""
    return MedsegError(f"{where}{problem}; fix: {fix}")


def find_user_error(exc: BaseException) -> MedsegError | None:
    """The MedsegError inside a chain of wrapping exceptions (MONAI wraps transform errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MedsegError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class user_errors:
    """Context manager: re-raise a MedsegError buried in a wrapped exception as itself."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and not isinstance(exc, MedsegError):
            found = find_user_error(exc)
            if found is not None:
                raise found from None
        return False
