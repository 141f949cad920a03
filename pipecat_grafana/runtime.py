"""The process's runtime: the one owner of what the package keeps per process.

Some state belongs to neither a call nor an exporter but to the process: the export
pipelines, the Prometheus endpoint, the notices said once, the models without a price,
the event-loop lag samplers, the tracer set-up, the resource's instance ID. Each is a
*part*, kept by the module of its concern and owned here: every part has one lock that
guards all of its state, and one reset for a forked child.

A fork copies the parent's memory but only the forking thread: a lock that another thread
held at that moment (the export thread inside ``warn_once``, say) is held for ever in the
child. So the runtime resets every part in one at-fork hook, before any other code of the
child runs: each part takes a new lock and forgets what belonged to the parent's threads.

Example::

    class Samplers:
        def __init__(self):
            self.lock = threading.Lock()  # guards _by_loop
            self._by_loop = {}

        def after_fork_in_child(self):
            self.lock = threading.Lock()
            self._by_loop = {}

    SAMPLERS = runtime.own(Samplers())
"""

import os
import threading
from typing import Protocol, TypeVar


class Part(Protocol):
    """A piece of process-wide state owned by the runtime."""

    lock: "threading.Lock"
    """Guards all of the part's state."""

    def after_fork_in_child(self) -> None:
        """Reset the part in a forked child, before anything else runs.

        A new lock, nothing of the parent's threads or connections, no I/O.
        """


P = TypeVar("P", bound=Part)


class Runtime:
    """The process's parts, reset together in a forked child."""

    def __init__(self) -> None:
        self._parts: list[Part] = []  # appended at import, before any thread of ours runs

    @property
    def parts(self) -> tuple[Part, ...]:
        """Every part, in the order they were created."""
        return tuple(self._parts)

    def own(self, part: P) -> P:
        """Own ``part`` from now on; returns it."""
        self._parts.append(part)
        return part

    def after_fork_in_child(self) -> None:
        """Reset every part for the child (the at-fork hook)."""
        for part in self._parts:
            part.after_fork_in_child()


RUNTIME = Runtime()
"""The process's runtime."""


def own(part: P) -> P:
    """Make ``part`` one of the process runtime's parts; returns it."""
    return RUNTIME.own(part)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RUNTIME.after_fork_in_child)
