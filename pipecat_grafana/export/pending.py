"""Who still needs a call: the calls whose own series a reader has not read in full.

A call with series of its own (the ``call_id`` label on) is read by every reader of its
pipeline: the OTLP export (``PUSH``) and, when the process serves Prometheus, the scrape
endpoint (``SCRAPE``). Its series must be read while it is in progress and, once it has
ended, until every reader has read its final values; then it is let go, and its series
are never sent or served again. A reader that cannot read them (an endpoint down, nobody
scraping) would keep it for ever, so retention ends it after ``PENDING_RETENTION_S``, and
no more than ``MAX_PENDING`` ended calls ever wait (the oldest go first).

``PendingCalls`` is the one place that knows this. Each entry carries every reader's
cursor (what that reader has read of each series), is keyed by identity (two calls may
share a call ID's label for a moment), and once let go is never brought back: a reader
that answers late about a call retention already ended changes nothing.

A call whose values live in the process-wide series (the label off) has nothing of its
own to read: its end waits for the next export of the fleet's series, which the registry
also keeps (``wait_for_fleet``).
"""

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field

from pipecat_grafana.aggregation import Attributes, CallMeters
from pipecat_grafana.config import MAX_PENDING, PENDING_RETENTION_S
from pipecat_grafana.export.points import Sent

PUSH = "push"
"""The OTLP export, as a reader of calls."""
SCRAPE = "scrape"
"""The Prometheus scrape endpoint, as a reader of calls."""


@dataclass
class Cursor:
    """What one reader has read of one call.

    Parameters:
        final_at: When the reader read the call's final values (monotonic seconds); set
            under the registry's lock.
    """

    final_at: float | None = None


@dataclass
class PushCursor(Cursor):
    """What the OTLP export has read of a call.

    Parameters:
        sent: What the endpoint accepted of each series (the sending thread's).
    """

    sent: Sent = field(default_factory=dict)


@dataclass
class ScrapeCursor(Cursor):
    """What the scrape endpoint has served of a call.

    Parameters:
        first_served: When a scrape first served each series (the scrape's thread's).
        served_final_at: When a scrape first served the call's final values (it is read
            one scrape interval later, once every scraper had a turn).
    """

    first_served: dict[tuple[str, Attributes], float] = field(default_factory=dict)
    served_final_at: float | None = None


_CURSORS: dict[str, type[Cursor]] = {PUSH: PushCursor, SCRAPE: ScrapeCursor}


@dataclass(eq=False)
class PendingCall:
    """One call whose own series some reader still needs.

    ``ended_at`` and the cursors' ``final_at`` change under the registry's lock; the rest of
    a cursor belongs to its reader's thread.

    Parameters:
        meters: What the call records into.
        cursors: Each reader's cursor (``push`` and ``scrape`` give each its type).
        ended_at: When the call ended (monotonic seconds), ``None`` while in progress.
        final: ``True`` once the first export after the end carried the call's final values,
            ``False`` if it failed or the call was let go unread; completed once, by the
            registry.
    """

    meters: CallMeters
    cursors: dict[str, Cursor]
    ended_at: float | None = None
    final: Future = field(default_factory=Future)

    @property
    def labels(self) -> dict[str, str]:
        """What the call's own series carry (``call_id``)."""
        return self.meters.labels

    @property
    def push(self) -> PushCursor:
        """The OTLP export's cursor."""
        cursor = self.cursors[PUSH]
        assert isinstance(cursor, PushCursor)
        return cursor

    @property
    def scrape(self) -> ScrapeCursor:
        """The scrape endpoint's cursor."""
        cursor = self.cursors[SCRAPE]
        assert isinstance(cursor, ScrapeCursor)
        return cursor


@dataclass(frozen=True)
class Expired:
    """Calls retention let go before every reader had read them, by the readers that had not.

    Parameters:
        late: Ended longer than ``PENDING_RETENTION_S`` ago.
        overflow: Beyond the ``MAX_PENDING`` newest ended calls.
    """

    late: dict[str, int]
    overflow: dict[str, int]

    def __bool__(self) -> bool:
        return bool(self.late or self.overflow)


class PendingCalls:
    """The registry of a pipeline's calls with series of their own, and their readers.

    Every method takes the registry's lock, which guards the set of calls, their
    ``ended_at``, their cursors' ``final_at`` and the completion of their ``final``
    futures: nothing is checked on one thread and acted on by another.

    Example::

        calls = PendingCalls([PUSH, SCRAPE])
        call = calls.open(meters)
        calls.end(call)
        for call in calls.unread(PUSH):  # the export thread
            ...
            calls.read(call, PUSH)       # once the endpoint accepted its final values
    """

    def __init__(
        self, readers: Iterable[str], *, time_source: Callable[[], float] = time.monotonic
    ):
        """Create the registry.

        Args:
            readers: Who reads every call (``PUSH``, ``SCRAPE``); a call is let go once all
                of them have read its final values.
            time_source: Monotonic clock in seconds (tests pass a controlled one).
        """
        self.readers = frozenset(readers)
        self._clock = time_source
        self._lock = threading.Lock()
        self._calls: dict[PendingCall, None] = {}  # in the order they opened; under _lock
        self._fleet_waiters: list[Future] = []  # under _lock

    def open(self, meters: CallMeters) -> PendingCall:
        """Register a call that just opened."""
        call = PendingCall(meters, {reader: _CURSORS[reader]() for reader in self.readers})
        with self._lock:
            self._calls[call] = None
        return call

    def end(self, call: PendingCall) -> Expired:
        """Mark ``call`` ended: its next reads are of its final values.

        Returns:
            The oldest ended calls let go to keep ``MAX_PENDING`` at most, if any.
        """
        with self._lock:
            if call.ended_at is None:
                call.ended_at = self._clock()
            ended = [c for c in self._calls if c.ended_at is not None]
            overflow = []
            if len(ended) > MAX_PENDING:
                ended.sort(key=lambda c: c.ended_at or 0.0)
                overflow = ended[: len(ended) - MAX_PENDING]
            for old in overflow:
                self._let_go(old)
        return Expired({}, _unread_by(overflow))

    def unread(self, reader: str) -> list[PendingCall]:
        """The calls whose series ``reader`` reads now: in progress, or final values unread."""
        with self._lock:
            return [c for c in self._calls if c.cursors[reader].final_at is None]

    def pending(self) -> list[PendingCall]:
        """Every call some reader still needs."""
        with self._lock:
            return list(self._calls)

    def ended(self, call: PendingCall) -> bool:
        """Whether ``call`` had ended (so values read now are final)."""
        with self._lock:
            return call.ended_at is not None

    def read(self, call: PendingCall, reader: str) -> None:
        """``reader`` has read the final values of ``call``; let it go once every reader has.

        A call no longer registered (retention ended it) stays gone.
        """
        with self._lock:
            if call not in self._calls or call.ended_at is None:
                return
            call.cursors[reader].final_at = self._clock()
            if all(c.final_at is not None for c in call.cursors.values()):
                del self._calls[call]

    def complete(self, call: PendingCall, exported: bool) -> None:
        """Say once whether the call's final values were exported; later answers are ignored."""
        with self._lock:
            self._complete(call.final, exported)

    def wait_for_fleet(self, waiter: Future) -> None:
        """Complete ``waiter`` with the outcome of the next export of the fleet's series.

        For a call without series of its own: its values are in the fleet's, and an
        export that reads them after this call carries its final values.
        """
        with self._lock:
            self._fleet_waiters.append(waiter)

    def fleet_waiters(self) -> list[Future]:
        """Take the waiters for the fleet's series; read the series after this call."""
        with self._lock:
            waiters, self._fleet_waiters = self._fleet_waiters, []
        return waiters

    def complete_all(self, waiters: Iterable[Future], exported: bool) -> None:
        """Complete each of ``waiters`` once, with ``exported``."""
        with self._lock:
            for waiter in waiters:
                self._complete(waiter, exported)

    def expire(self) -> Expired:
        """Retention: let go of the calls that ended ``PENDING_RETENTION_S`` ago, unread.

        Returns:
            How many calls went, by the reader that had not read them.
        """
        now = self._clock()
        with self._lock:
            late = [
                c
                for c in self._calls
                if c.ended_at is not None and now - c.ended_at > PENDING_RETENTION_S
            ]
            for call in late:
                self._let_go(call)
        return Expired(_unread_by(late), {})

    def drain(self) -> dict[str, int]:
        """Let go of every call, and complete every wait still open as not exported.

        Returns:
            How many ended calls each reader had not read the final values of.
        """
        with self._lock:
            calls, self._calls = list(self._calls), {}
            waiters, self._fleet_waiters = self._fleet_waiters, []
            for call in calls:
                self._complete(call.final, False)
            for waiter in waiters:
                self._complete(waiter, False)
        return _unread_by([c for c in calls if c.ended_at is not None])

    def _let_go(self, call: PendingCall) -> None:
        # Under the lock: unread, so its wait ends as not exported.
        del self._calls[call]
        self._complete(call.final, False)

    @staticmethod
    def _complete(future: Future, result: bool) -> None:
        # Under the lock: the one place a call's wait is completed.
        if not future.done():
            future.set_result(result)


def _unread_by(calls: list[PendingCall]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in calls:
        for reader, cursor in call.cursors.items():
            if cursor.final_at is None:
                counts[reader] = counts.get(reader, 0) + 1
    return counts
