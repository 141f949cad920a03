"""The package's own log lines: each problem said once per process, every line prefixed alike.

A bot logs for its team; a problem of ours (a bad variable, an endpoint down, a malformed
frame) must be said clearly and once, not once per measurement. Every line this module
writes starts with ``pipecat-grafana: ``: callers pass the message alone.

A key is ``category:detail``. Memory is bounded per category (``PER_CATEGORY`` keys): a
category whose keys grow with the calls (one per repeated call ID, one per model name)
falls silent when full, and silences no other.

Example::

    warn_once(f"unpriced:{model}", f"no price for model {model!r}: ...")
"""

import threading

from loguru import logger

from pipecat_grafana import runtime

PREFIX = "pipecat-grafana: "
"""What every line of the package starts with."""
PER_CATEGORY = 1_000
"""Keys remembered per category, at most."""


class Notices:
    """What the process has said, by category (a runtime part)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._said: dict[str, set[str]] = {}  # under lock

    def first(self, key: str) -> bool:
        """Whether ``key`` is new; it is remembered from now on."""
        category = key.partition(":")[0]
        with self.lock:
            said = self._said.setdefault(category, set())
            if key in said or len(said) >= PER_CATEGORY:
                return False
            said.add(key)
            return True

    def forget(self) -> None:
        """Forget everything said."""
        with self.lock:
            self._said = {}

    def after_fork_in_child(self) -> None:
        """A new lock; what the parent said stays said (its workers share one log)."""
        self.lock = threading.Lock()


NOTICES = runtime.own(Notices())


def first(key: str) -> bool:
    """Whether ``key`` is new; it is remembered from now on."""
    return NOTICES.first(key)


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen."""
    if first(key):
        logger.warning(PREFIX + message)


def error_once(key: str, message: str) -> None:
    """Log ``message`` as an error the first time ``key`` is seen."""
    if first(key):
        logger.error(PREFIX + message)


def warn(message: str) -> None:
    """Log ``message`` as a warning now (the caller bounds how often)."""
    logger.warning(PREFIX + message)


def forget() -> None:
    """Forget everything said (a test that expects a message again uses this)."""
    NOTICES.forget()
