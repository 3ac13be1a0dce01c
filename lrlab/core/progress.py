"""Progress bars for long work (docs/sweeps.md#progress-bars): tqdm on stderr, shown only when stderr is a terminal,
so that logs, pipes, CI and tests see nothing of them.

``bar`` is the one way lrlab makes one. A bar that lives while lines are printed (a sweep's jobs: every job prints
its epoch lines) keeps out of their way: while it is shown, and stdout is a terminal too, stdout is written through
``_Above``, which takes the bar off the screen, writes the finished lines, and draws the bar again below them."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm


class Bar:
    """A tqdm bar on stderr, off (every call a no-op) unless stderr is a terminal and ``enabled``."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        *,
        leave: bool,
        enabled: bool = True,
        above: bool = False,
        iterable: Iterable[Any] | None = None,
        unit_scale: bool = False,
    ) -> None:
        disable = None if enabled else True  # None: off unless the stream is a terminal
        self.tqdm = tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit_scale,
            leave=leave,
            file=sys.stderr,
            disable=disable,
        )
        self._above: _Above | None = None
        if above and not self.tqdm.disable and _isatty(sys.stdout):
            self._above = _Above(sys.stdout, self.tqdm)
            sys.stdout = self._above

    @property
    def shown(self) -> bool:
        return not self.tqdm.disable

    def update(self, n: int = 1) -> None:
        self.tqdm.update(n)

    def close(self) -> None:
        """Idempotent: the bar leaves the screen (or stays, ``leave``) and stdout is stdout again."""
        if self.shown and self.tqdm.n:
            self.tqdm.refresh()  # the last count drawn: tqdm skips draws closer than 0.1 s to the one before
        above, self._above = self._above, None
        if above is not None:
            above.detach()
            if sys.stdout is above:
                sys.stdout = above.stream
        self.tqdm.close()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.tqdm)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(
    total: int,
    desc: str,
    unit: str,
    *,
    leave: bool = False,
    enabled: bool = True,
    above: bool = False,
    iterable: Iterable[Any] | None = None,
    unit_scale: bool = False,
) -> Bar:
    """A bar over ``total`` ``unit``s, shown only on a terminal; ``enabled=False``: never shown (work too short to
    need one). ``above``: lines printed to stdout while it lives are written above it (``_Above``). ``iterable``:
    iterating the bar iterates it, one unit an item. ``unit_scale``: counts in k, M, G (examples)."""
    return Bar(total, desc, unit, leave=leave, enabled=enabled, above=above, iterable=iterable, unit_scale=unit_scale)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class _Above:
    """stdout, written above a bar: each finished line is written with the bar cleared, then the bar is drawn
    again; an unfinished line waits for its end (or a flush with no bar). Once detached, a plain pass-through (a
    logging handler may still hold it)."""

    def __init__(self, stream: TextIO, bar: tqdm[Any]) -> None:
        self.stream = stream
        self._bar: tqdm[Any] | None = bar
        self._pending = ""

    def write(self, text: str) -> int:
        if self._bar is None:
            return self.stream.write(text)
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            self._bar.clear()
            self._bar.fp.flush()  # the clearing reaches the terminal before the lines
            self.stream.write(lines + "\n")
            self.stream.flush()
            self._bar.refresh()
        return len(text)

    def flush(self) -> None:
        if self._bar is None and self._pending:
            self.stream.write(self._pending)
            self._pending = ""
        self.stream.flush()

    def detach(self) -> None:
        self._bar = None
        self.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
