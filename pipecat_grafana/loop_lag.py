"""Event-loop lag: how long every frame of every call waits for the loop that runs it.

A voice bot runs all of its calls' frames on one asyncio loop. Anything that holds
that loop (a blocking call in a processor, a CPU-heavy step, a long garbage
collection) delays every call's audio at once, and no service metric shows it.
The sampler measures it directly: one ``loop.call_later`` timer, re-armed each time
it fires, and how late it ran against when it was due. No thread: a sampling thread
would take the GIL from the loop it measures.

One sampler per running loop. It starts when the first call opens on that loop and
stops when the loop's last call ends: the figure is about what callers feel, an
idle loop has nobody waiting on it, and a timer left behind would keep every loop a
process ever ran alive in the registry. Its samples go to the process-wide
histogram of each export pipeline with a call on that loop (one, unless a process
exports under several service names).

Example::

    sampler = loop_lag.attach(pipeline.fleet)   # when a call opens, on its loop
    ...
    sampler.detach(pipeline.fleet)              # when it ends
"""

import asyncio
import threading
import weakref
from collections import Counter

from pipecat_grafana import instruments as m
from pipecat_grafana import runtime
from pipecat_grafana.aggregation import CallMeters

SAMPLE_INTERVAL_S = 0.1
"""Seconds between samples: a stall of this long or longer is always seen (as at least its
length minus the interval); 10 timer callbacks a second cost the loop a few hundredths of a
percent."""


class LoopLagSampler:
    """Samples how late one event loop runs a timer, while calls are in progress on it.

    Parameters:
        loop: The loop to sample.
        interval_s: Seconds between samples.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, interval_s: float = SAMPLE_INTERVAL_S):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, not {interval_s!r}")
        self._loop = weakref.ref(loop)  # the registry's key: a strong reference would keep it
        self._interval_s = interval_s
        self._meters: Counter[CallMeters] = Counter()  # calls in progress, per destination
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def running(self) -> bool:
        """Whether the timer is armed."""
        return self._handle is not None

    def attach(self, meters: CallMeters) -> None:
        """A call opened on this loop: sample into ``meters`` (its pipeline's fleet) too.

        Must run on the sampled loop.
        """
        self._meters[meters] += 1
        if self._handle is None:
            self._arm()

    def detach(self, meters: CallMeters) -> None:
        """A call that recorded into ``meters`` ended; the last one stops the sampler.

        Must run on the sampled loop.
        """
        if self._meters[meters] <= 1:
            del self._meters[meters]
        else:
            self._meters[meters] -= 1
        if not self._meters and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        loop = self._loop()
        if loop is None or loop.is_closed():
            self._handle = None
            return
        self._due = loop.time() + self._interval_s
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        loop = self._loop()
        if loop is None:
            return
        # A callback may run up to the clock's resolution early: that is no lag.
        lag_ms = max(loop.time() - self._due, 0.0) * 1000
        for meters in self._meters:
            meters.record(m.EVENT_LOOP_LAG, lag_ms, {})
        self._arm()


class _Samplers:
    """Each running loop's sampler (a runtime part): loops may run in several threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLagSampler] = (
            weakref.WeakKeyDictionary()
        )  # under lock

    def after_fork_in_child(self) -> None:
        # The parent's loops do not run here: the child samples its own.
        self.lock = threading.Lock()
        self.by_loop = weakref.WeakKeyDictionary()


_SAMPLERS = runtime.own(_Samplers())


def attach(meters: CallMeters) -> LoopLagSampler | None:
    """Sample the running loop into ``meters`` while a call is in progress on it.

    Returns:
        The loop's sampler, to ``detach`` from when the call ends; ``None`` when no
        loop is running (nothing is sampled then).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    with _SAMPLERS.lock:
        sampler = _SAMPLERS.by_loop.get(loop)
        if sampler is None:
            sampler = _SAMPLERS.by_loop[loop] = LoopLagSampler(loop)
    sampler.attach(meters)
    return sampler
