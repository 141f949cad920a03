"""Which points an export sends: changed series, a heartbeat of the others, zeros first.

Grafana Cloud bills every data point, so a series is sent only when it changed since the
endpoint last accepted it, or when ``heartbeat_s`` has passed since (well inside the
5-minute lookback of Prometheus-style queries, so it never looks stale); a changed
histogram, whose every bucket is a billed series, at most once per
``histogram_interval_s``, except when the export carries a call's final values (then it
sends everything that changed).

Prometheus-style backends start a new series at its first sample, so ``rate()`` and
``increase()`` never count the value of that first sample: a 3-second call, exported
once, would count as nothing. Each cumulative series is therefore sent the first time
with a zero point at its start time before its value (what Prometheus calls
created-timestamp zero injection).

Everything here is pure: it reads what the endpoint accepted before (``Sent``) and notes
what this request carries (``Sending``), for the caller to remember once it is accepted.
"""

from collections.abc import Iterable
from dataclasses import replace

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from pipecat_grafana import __version__, instruments
from pipecat_grafana.aggregation import SeriesKey
from pipecat_grafana.instruments import METER_NAME

Accepted = tuple[object, float, int]
"""What the endpoint accepted of a series: its value (histograms: count and sum), when
(monotonic seconds), and the wall time of the points sent (exemplars after it are new)."""
Sent = dict[SeriesKey, Accepted]
"""What the endpoint accepted of each series of one call, or of the fleet."""
Sending = list[tuple[Sent, SeriesKey, Accepted]]
"""What one request carries, to remember in each ``Sent`` once it is accepted."""
Point = NumberDataPoint | HistogramDataPoint | ExponentialHistogramDataPoint
_NATIVE = "#native"  # a histogram's exponential form, in a series' key


class PointSelection:
    """The points of one export, as one metric per name under one scope.

    The OTLP encoder keeps one entry per instrumentation scope, so the series of the
    fleet and of every call (all from this package's scope) are merged, not appended.

    Args:
        heartbeat_s: Send an unchanged series again after this long.
        histogram_interval_s: Send a changed histogram at most this often.
        final: The export carries a call's final values: send every changed series.
        now: The time of the export (monotonic seconds).
    """

    def __init__(self, *, heartbeat_s: float, histogram_interval_s: float, final: bool, now: float):
        self._metrics: dict[str, Metric] = {}
        self._points: dict[str, list] = {}
        self._heartbeat_s = heartbeat_s
        self._histogram_interval_s = histogram_interval_s
        self._final = final
        self._now = now

    def add(
        self, metrics: Iterable[Metric], sent: Sent, sending: Sending, *, final: bool = False
    ) -> None:
        """Add the points worth sending, preceding the first of each new series with a zero.

        Args:
            metrics: The metrics to add.
            sent: What the endpoint accepted of these series.
            sending: Where to note what this request carries.
            final: These are an ended call's final values: send every changed series now.
        """
        final = final or self._final
        for metric in metrics:
            histogram = isinstance(metric.data, Histogram | ExponentialHistogram)
            sparse = metric.name in instruments.SPARSE
            starts_at_zero = _starts_at_zero(metric)
            # The two forms of a histogram are two series (x and x_bucket...) at the backend.
            name = (
                metric.name + _NATIVE
                if isinstance(metric.data, ExponentialHistogram)
                else metric.name
            )
            for point in metric.data.data_points:
                key = (name, frozenset((point.attributes or {}).items()))
                signature = _signature(point)
                last = sent.get(key)
                if last is not None:
                    age = self._now - last[1]
                    if last[0] == signature:
                        if age < self._heartbeat_s:
                            continue  # unchanged and recently sent
                    elif sparse and not final and age < self._histogram_interval_s:
                        continue  # changed, but sent not long ago
                points = self._points.setdefault(metric.name, [])
                self._metrics.setdefault(metric.name, metric)
                if last is None and starts_at_zero:
                    points.append(_zero(point))
                    if sparse and not final:
                        # The zero starts the series; its value waits like any change.
                        zero = (0, 0) if histogram else 0
                        sending.append((sent, key, (zero, self._now, 0)))
                        continue
                if histogram and point.exemplars and last is not None:
                    # Exemplars already accepted are not sent again.
                    fresh = [e for e in point.exemplars if e.time_unix_nano > last[2]]
                    point = replace(point, exemplars=fresh)
                points.append(point)
                sending.append((sent, key, (signature, self._now, point.time_unix_nano)))

    def metrics_data(self, resource: Resource) -> MetricsData:
        """One resource, one scope, one metric per name."""
        metrics = [
            replace(metric, data=replace(metric.data, data_points=self._points[name]))  # type: ignore[arg-type]
            for name, metric in self._metrics.items()
        ]
        scope = InstrumentationScope(METER_NAME, __version__)
        scopes = [ScopeMetrics(scope, metrics, "")] if metrics else []
        return MetricsData(resource_metrics=[ResourceMetrics(resource, scopes, "")])


def remember(sending: Sending) -> None:
    """The endpoint accepted a request: remember what it carried of each series."""
    for sent, key, accepted in sending:
        sent[key] = accepted


def _signature(point: Point) -> object:
    """What tells a series changed: its value, or a histogram's count and sum."""
    if isinstance(point, NumberDataPoint):
        return point.value
    return (point.count, point.sum)


def _starts_at_zero(metric: Metric) -> bool:
    """Whether backends need a zero point before the first value: cumulative, monotonic."""
    data = metric.data
    if getattr(data, "aggregation_temporality", None) != AggregationTemporality.CUMULATIVE:
        return False
    if isinstance(data, Histogram | ExponentialHistogram):
        return True
    return isinstance(data, Sum) and data.is_monotonic


def _zero(point: Point) -> Point:
    # At least a millisecond earlier: backends keep one sample per millisecond.
    start = min(point.start_time_unix_nano, point.time_unix_nano - 1_000_000)
    if isinstance(point, ExponentialHistogramDataPoint):
        return replace(
            point,
            time_unix_nano=start,
            count=0,
            sum=0,
            zero_count=0,
            positive=Buckets(offset=0, bucket_counts=[]),
            negative=Buckets(offset=0, bucket_counts=[]),
            min=0,
            max=0,
            exemplars=[],
        )
    if isinstance(point, HistogramDataPoint):
        return replace(
            point,
            time_unix_nano=start,
            count=0,
            sum=0,
            bucket_counts=[0] * len(point.bucket_counts),
            min=0,
            max=0,
            exemplars=[],
        )
    return replace(point, time_unix_nano=start, value=0, exemplars=[])
