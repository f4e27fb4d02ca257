"""Progress that suits where the output goes: a tqdm bar on a terminal, a few plain lines in a log file.

A tqdm bar redraws itself with carriage returns; written to a file or a CI log it becomes hundreds of lines of
``\\r``-joined updates. :func:`progress_bar` returns a tqdm bar when stderr is a terminal and otherwise a
:class:`LineProgress`, which prints one plain line every ``every`` (a fraction of the total) with the same
``update`` / ``set_postfix`` / ``write`` / ``close`` calls, so callers need not care which they got.
"""

from __future__ import annotations

import sys


class LineProgress:
    """tqdm's interface, printing ``DESC: N/TOTAL UNIT (P%), key value, ...`` each time another ``every`` of the
    total is done (and at the end), instead of a redrawn bar."""

    def __init__(self, total: int, desc: str = "", unit: str = "it", initial: int = 0, every: float = 0.1, file=None):
        self.total, self.desc, self.unit, self.n = max(0, int(total)), desc, unit, int(initial)
        self.file = file
        self._step = max(1, round(self.total * every)) if self.total else 1
        self._next = (self.n // self._step + 1) * self._step
        self._postfix: dict = {}

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next or (self.total and self.n == self.total):
            self._next = (self.n // self._step + 1) * self._step
            self._emit()

    def set_postfix(self, **kw) -> None:
        self._postfix = kw

    def write(self, text: str) -> None:
        print(text, file=self.file or sys.stdout, flush=True)

    def close(self) -> None:
        pass

    def line(self) -> str:
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self._postfix.items())
        return f"{self.desc + ': ' if self.desc else ''}{self.n}/{self.total} {self.unit}{pct}{extra}"

    def _emit(self) -> None:
        print(self.line(), file=self.file or sys.stderr, flush=True)


class _Silent(LineProgress):
    """Progress turned off (``--quiet``): counts, prints nothing but what is ``write``-n."""

    def _emit(self) -> None:
        pass


def is_terminal(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def progress_bar(
    total: int, desc: str = "", enabled: bool = True, unit: str = "it", initial: int = 0, every: float = 0.1
):
    """A tqdm bar on a terminal; plain lines every ``every`` of ``total`` otherwise; nothing when not ``enabled``.

    Every variant has ``update(n)``, ``set_postfix(**kw)``, ``write(text)`` (a line that stays, printed even when
    not enabled) and ``close()``.
    """
    if not enabled:
        return _Silent(total, desc, unit, initial)
    if is_terminal():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return LineProgress(total, desc, unit, initial, every)


def track(iterable, total: int | None = None, desc: str = "", enabled: bool = True, unit: str = "it"):
    """Iterate ``iterable`` under a :func:`progress_bar` (``for case in track(cases, desc="infer"): ...``)."""
    items = iterable if total is not None else list(iterable)
    bar = progress_bar(len(items) if total is None else total, desc, enabled, unit)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
