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


def os_reason(exc: BaseException) -> str:
    """What went wrong in a file operation, in words: the OS's (``No space left on device``) or the error's text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160] + ("..." if len(text) > 160 else "")


def os_fix(
    exc: BaseException, otherwise: str = "check the path, the free disk space and the folder's permissions"
) -> str:
    """The fix for a failed file operation, by its errno: free space, a writable folder, or the path."""
    import errno

    return {
        errno.ENOSPC: "free disk space or choose an --out on another disk",
        errno.EDQUOT: "free space within your disk quota or choose an --out on another disk",
        errno.EROFS: "choose an --out on a writable disk",
        errno.EACCES: "choose an --out folder you can write to",
        errno.EPERM: "choose an --out folder you can write to",
        errno.ENOENT: "check the path",
        errno.ENOTDIR: "check the path: a part of it is a file",
    }.get(getattr(exc, "errno", None), otherwise)
