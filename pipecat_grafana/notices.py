"""The package's own log lines: each problem said once per process, every line prefixed alike.

A bot logs for its team; a problem of ours (a bad variable, an endpoint down, a malformed
frame) must be said clearly and once, not once per measurement. Every line this module
writes starts with ``pipecat-grafana: ``: callers pass the message alone.

Example::

    warn_once(f"unpriced:{model}", f"no price for model {model!r}: ...")
"""

import threading

from loguru import logger

PREFIX = "pipecat-grafana: "
"""What every line of the package starts with."""
_LIMIT = 10_000  # keys remembered at most: a flood of distinct problems must not grow memory

_said: set[str] = set()
_lock = threading.Lock()


def first(key: str) -> bool:
    """Whether ``key`` is new; it is remembered from now on."""
    with _lock:
        if key in _said or len(_said) >= _LIMIT:
            return False
        _said.add(key)
        return True


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
    with _lock:
        _said.clear()
