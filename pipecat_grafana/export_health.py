"""The export pipeline's own health as series: what each export came to, dropped calls, age.

The log says once, in plain words, when exports start or stop failing (``otlp``); a
team watching a fleet needs the same in Grafana, next to the bot's metrics: how many
exports each process's endpoint refused and why, how many ended calls were never
exported, and how old the newest accepted export is.

Every series is process-wide (no ``call_id``) and cumulative. An export's outcome is
known only once its request is answered (or not), so it is counted then and goes
with the next export: a failure arrives with the first export the endpoint accepts
again, nothing is lost in between. What cannot be seen over the channel it is about,
an endpoint refusing every export, shows as metrics missing (``VoiceBotMetricsMissing``
while calls are in progress), and here once it recovers.
"""

import time
from collections.abc import Callable

from opentelemetry.sdk.metrics.export import Gauge, Metric, NumberDataPoint

from pipecat_grafana import instruments as m
from pipecat_grafana.aggregation import CallMeters
from pipecat_grafana.otlp import Outcome, classify


class ExportHealthSeries:
    """Counts exports by outcome, dropped calls and summaries by reason; the last export's age.

    Parameters:
        fleet: The process-wide meters the counts go to.
        clock: Monotonic clock in seconds.
    """

    def __init__(self, fleet: CallMeters, *, clock: Callable[[], float] = time.monotonic):
        self._fleet = fleet
        self._clock = clock
        self._accepted_at = clock()  # until the first export: since the exporter started
        self._started_ns = time.time_ns()

    def exported(self, outcome: Outcome | None, *, accepted: bool) -> None:
        """Count one export, once its request was answered (or not).

        Args:
            outcome: How its last request ended; ``None`` if none was sent.
            accepted: Whether the endpoint accepted it.
        """
        if accepted:
            self._accepted_at = self._clock()
        kind, reason = classify(outcome, accepted=accepted)
        self._fleet.record(m.EXPORTS, 1, {m.OUTCOME: kind, m.REASON: reason})

    def dropped(self, calls: int, reason: str) -> None:
        """Count ended calls whose final values were given up, for ``reason`` (``DROP_REASONS``)."""
        if calls:
            self._fleet.record(m.CALLS_DROPPED, calls, {m.REASON: reason})

    def summaries_dropped(self, records: int, reason: str) -> None:
        """Count summary records given up, for ``reason`` (``SUMMARY_DROP_REASONS``)."""
        if records:
            self._fleet.record(m.SUMMARIES_DROPPED, records, {m.REASON: reason})

    def metrics(self) -> list[Metric]:
        """The age of the last accepted export, as a gauge read now."""
        point = NumberDataPoint(
            attributes={},
            start_time_unix_nano=self._started_ns,
            time_unix_nano=time.time_ns(),
            value=max(self._clock() - self._accepted_at, 0.0),
        )
        spec = m.EXPORT_AGE
        return [Metric(spec.name, spec.description, spec.unit, Gauge(data_points=[point]))]
