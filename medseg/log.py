"""medseg's log lines.

Library code logs through the standard ``logging`` module, to loggers under ``medseg`` (``medseg.engine``,
``medseg.inference``, ...), so a notebook or a pipeline routes, filters or silences them like any other library's.
The command line calls :func:`show_log_lines` once: INFO and above then print to stdout as plain lines, warnings
prefixed ``warning:``, and written above a running progress bar rather than through it.
"""

from __future__ import annotations

import logging
import sys

ROOT = "medseg"


def get_logger(name: str) -> logging.Logger:
    """The logger for a medseg module: pass ``__name__``."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


class PlainFormatter(logging.Formatter):
    """The message alone; warnings and errors say what they are."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR and not msg.startswith("error:"):
            return f"error: {msg}"
        if record.levelno >= logging.WARNING and not msg.startswith("warning:"):
            return f"warning: {msg}"
        return msg


class StdoutHandler(logging.Handler):
    """Writes to whatever ``sys.stdout`` is at the time (test runners and ``contextlib.redirect_stdout`` replace it),
    through tqdm when a bar may be drawing on the terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stream = sys.stdout
            if getattr(stream, "isatty", lambda: False)():
                from tqdm import tqdm

                tqdm.write(text, file=stream)
            else:
                print(text, file=stream, flush=True)
        except (OSError, ValueError):  # a closed or broken stream must never end a training run
            self.handleError(record)


def show_log_lines(level: int = logging.INFO) -> None:
    """Print medseg's log lines on stdout (the command line's output). Calling it again changes nothing."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(isinstance(h, StdoutHandler) for h in logger.handlers):
        handler = StdoutHandler()
        handler.setFormatter(PlainFormatter())
        logger.addHandler(handler)
    logger.propagate = False
