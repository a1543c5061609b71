"""A Ctrl-C that cannot be lost.

SIGINT raises KeyboardInterrupt in the main thread, but code that catches every exception (a bare ``except:``, as
some libraries use around optional imports) can swallow it, and the run then goes on as if nothing had happened.
:func:`watching` records every SIGINT as well as raising it; :func:`check` raises it again where the record shows
one that never arrived, and the stage runner calls it between stages, so that an interrupted run stops before the
next stage writes anything.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_received = threading.Event()


def _on_sigint(signum: int, frame: Any) -> None:
    _received.set()
    signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """Record SIGINT for the block (main thread only; elsewhere the block runs as it is), then restore the previous
    handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check() -> None:
    """Raise KeyboardInterrupt when a SIGINT was received in a :func:`watching` block (and clear the record)."""
    if _received.is_set():
        _received.clear()
        raise KeyboardInterrupt("interrupted")
