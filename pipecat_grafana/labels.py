"""Label values any backend accepts, their bounds, and the service type each processor has.

Every label value comes from something the bot does not control: a processor's
name, a model name a service reports, a tool name the LLM invents. Each one is
made a valid, short label here, and a label whose values are open-ended is
bounded (the first N distinct values, then ``other``), so that no input can
multiply a process's series. What is wrong with an input is logged once per
process, not once per measurement.
"""

import functools
import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    MetricsData,
    STTUsageMetricsData,
    TTFAMetricsData,
    TTFATMetricsData,
    TTSUsageMetricsData,
)
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from pipecat_grafana import instruments as m
from pipecat_grafana.config import MAX_LABEL_VALUES
from pipecat_grafana.notices import warn_once

# Grafana Cloud rejects label values over 2048 characters; names this long are
# mistakes, so keep them short enough to read.
MAX_LABEL_LENGTH = 128
# Call IDs a process remembers, to give a repeated one series of its own.
REMEMBERED_CALL_IDS = 10_000

_SUFFIX = re.compile(r"#\d+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SERVICE_CLASSES = ((LLMService, "llm"), (STTService, "stt"), (TTSService, "tts"))
_SERVICE_TYPES = ("llm", "stt", "tts")


@functools.lru_cache(maxsize=4096)
def label(value: object) -> str:
    """A label value any backend accepts: valid UTF-8, no control characters, bounded."""
    text = str(value) if value is not None else ""
    text = _CONTROL.sub("?", text.encode("utf-8", "replace").decode("utf-8")).strip()
    if len(text) > MAX_LABEL_LENGTH:
        text = text[: MAX_LABEL_LENGTH - 3] + "..."
    return text or "unknown"


def call_id_value(call_id: str) -> str:
    """A call's ID as every signal carries it: valid UTF-8, no control characters, bounded.

    A call ID comes from outside (a room name in a webhook, a telephony provider's ID):
    what cannot be encoded as UTF-8 (a lone surrogate) or is a control character is
    replaced with ``?``, and one longer than ``MAX_LABEL_LENGTH`` is cut. An ID changed so
    ends with ``~`` and 8 hex digits of a hash of the original, so two IDs that differ only
    in what was replaced or cut stay two calls. An ID already valid is kept as it is.
    """
    text = _CONTROL.sub("?", call_id.encode("utf-8", "replace").decode("utf-8"))
    if text == call_id and len(text) <= MAX_LABEL_LENGTH:
        return call_id
    digest = hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{text[: MAX_LABEL_LENGTH - 9]}~{digest}"


@functools.lru_cache(maxsize=4096)
def processor_label(name: str) -> str:
    """``OpenAILLMService#7`` -> ``OpenAILLMService``: the counter grows across calls."""
    return label(_SUFFIX.sub("", name or ""))


_IMPLIED_SERVICE = {
    LLMUsageMetricsData: "llm",
    TTFATMetricsData: "llm",
    TTSUsageMetricsData: "tts",
    TTFAMetricsData: "tts",
    STTUsageMetricsData: "stt",
}


class ServiceTypes:
    """Which service (``llm``, ``stt``, ``tts``, ``other``) each processor of a call is.

    One answer per processor name, shared by the call's metrics, errors and summary: what
    a processor's metrics say it is (a TTS usage report comes from a TTS service) is
    remembered, so an error from a service whose class and name do not say what it is
    gets the same ``service_type`` as its metrics.
    """

    _LIMIT = 1000  # processor names remembered: a name that changes every report

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def of(
        self, processor: object | None, name: str | None, data: MetricsData | None = None
    ) -> str:
        """The service type of ``processor`` (named ``name``), reporting ``data`` if any.

        By what ``data`` implies, else what this processor was found to be before, else
        its class, else its name (``...TTSService``), else ``other``.
        """
        key = name or ""
        kind = next((t for c, t in _IMPLIED_SERVICE.items() if isinstance(data, c)), None)
        if kind is None:
            known = self._known.get(key)
            if known is not None:
                return known
            kind = next((t for c, t in _SERVICE_CLASSES if isinstance(processor, c)), None)
        if kind is None:
            upper = key.upper()
            kind = next((t for t in _SERVICE_TYPES if t.upper() in upper), m.OTHER)
        if key in self._known or len(self._known) < self._LIMIT:
            self._known[key] = kind
        return kind


class BoundedLabel:
    """Bounds an open-ended label: the first ``limit`` distinct values seen, then ``other``.

    Parameters:
        name: The label's name, for the warning.
        limit: How many distinct values it takes.
        setting: How to raise the bound, for the warning.
    """

    def __init__(self, name: str, limit: int, setting: str = ""):
        self.name = name
        self.limit = limit
        self._setting = setting
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        """The label value for ``value``."""
        value = label(value)
        if value in self._values:
            return value
        with self._lock:
            if len(self._values) < self.limit:
                self._values.add(value)
                return value
        warn_once(
            f"bound:{self.name}:{id(self)}",
            f"more than {self.limit} distinct {self.name} values in this process; "
            f"{value!r} and later new ones are exported as {m.OTHER!r} so that series stay "
            f"bounded (the call summary keeps the real names). {self._setting}".rstrip(),
        )
        return m.OTHER


@dataclass(frozen=True)
class LabelBounds:
    """The bounds on the open-ended labels of a pipeline's series.

    Parameters:
        function: Tool names (``function``).
        model: Model names (``model``).
        processor: Processor names (``processor``).
    """

    function: BoundedLabel
    model: BoundedLabel
    processor: BoundedLabel


class LabelBoundsRegistry:
    """The bounds of one export pipeline's labels, set by its first exporter.

    Series are the pipeline's, not one exporter's, so every exporter sharing it must
    agree on them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bounds: LabelBounds | None = None  # under _lock

    def get(self, *, max_function_names: int, max_label_values: int) -> LabelBounds:
        """The bounds in force, created with these limits on first use.

        Raises:
            ValueError: A limit differs from the one already in force.
        """
        with self._lock:
            if self._bounds is None:
                values = f"or set {MAX_LABEL_VALUES}"
                self._bounds = LabelBounds(
                    function=BoundedLabel(
                        m.FUNCTION, max_function_names, "Raise max_function_names."
                    ),
                    model=BoundedLabel(
                        m.MODEL, max_label_values, f"Raise max_label_values {values}."
                    ),
                    processor=BoundedLabel(
                        m.PROCESSOR, max_label_values, f"Raise max_label_values {values}."
                    ),
                )
            bounds = self._bounds
        for name, wanted, bound in (
            ("max_function_names", max_function_names, bounds.function),
            ("max_label_values", max_label_values, bounds.model),
        ):
            if wanted != bound.limit:
                raise ValueError(
                    f"{name}={wanted} conflicts with {name}={bound.limit} of an exporter already "
                    "exporting to the same endpoint in this process: the bound is on the "
                    "process's series, so give every GrafanaMetricsExporter the same value"
                )
        return bounds


class UniqueCallIds:
    """Call IDs as series carry them: one used before in this process gets a suffix.

    A call ID that another call of this process already used (in progress, or ended
    recently) gets ``~N`` for its series (``room-7~2``), so that no call's series is
    overwritten, or reset by a later call's. The last ``REMEMBERED_CALL_IDS`` are kept.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._uses: OrderedDict[str, int] = OrderedDict()  # under _lock

    def unique(self, call_id: str) -> str:
        """The label value for a call with ID ``call_id``."""
        with self._lock:
            uses = self._uses.pop(call_id, 0) + 1
            self._uses[call_id] = uses
            while len(self._uses) > REMEMBERED_CALL_IDS:
                self._uses.popitem(last=False)
            while uses > 1 and f"{call_id}~{uses}" in self._uses:
                uses += 1  # an application's own ID that looks like one of ours
            unique = f"{call_id}~{uses}" if uses > 1 else call_id
            if uses > 1:
                self._uses[unique] = 1
        if uses > 1:
            warn_once(
                f"call_id:{call_id}",
                f"call ID {call_id!r} was already used by another call of this process; this "
                f"call's series are labelled call_id={unique!r} so that neither call's series "
                "is overwritten or reset (its summary keeps the ID given). Give every call its "
                "own ID: PipelineWorker(conversation_id=...) or GrafanaMetricsExporter(call_id=...)"
                " (logged once per ID)",
            )
        return unique
