"""Label values any backend accepts, their bounds, and warnings said once.

Every label value comes from something the bot does not control: a processor's
name, a model name a service reports, a tool name the LLM invents. Each one is
made a valid, short label here, and a label whose values are open-ended is
bounded (the first N distinct values, then ``other``), so that no input can
multiply a process's series. What is wrong with an input is logged once per
process, not once per measurement.
"""

import functools
import re
import threading
from dataclasses import dataclass

from loguru import logger
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from pipecat_grafana import instruments as m

# Grafana Cloud rejects label values over 2048 characters; names this long are
# mistakes, so keep them short enough to read.
MAX_LABEL_LENGTH = 128

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


@functools.lru_cache(maxsize=4096)
def processor_label(name: str) -> str:
    """``OpenAILLMService#7`` -> ``OpenAILLMService``: the counter grows across calls."""
    return label(_SUFFIX.sub("", name or ""))


def service_type_of(processor: object, name: str | None) -> str:
    """``llm``, ``stt``, ``tts`` by the processor's class, else by its name, else ``other``."""
    kind = next((t for c, t in _SERVICE_CLASSES if isinstance(processor, c)), None)
    if kind is None:
        upper = (name or "").upper()
        kind = next((t for t in _SERVICE_TYPES if t.upper() in upper), m.OTHER)
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
        once.warning(
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


class LogOnce:
    """Remembers what was already said, so each problem is logged once per process.

    A bound keeps a flood of distinct problems (a model name that changes with
    every report) from growing the memory it takes.
    """

    def __init__(self, limit: int = 10_000):
        self._limit = limit
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        """Whether ``key`` is new; it is remembered from now on."""
        with self._lock:
            if key in self._said or len(self._said) >= self._limit:
                return False
            self._said.add(key)
            return True

    def warning(self, key: str, message: str) -> None:
        """Log ``message`` as a warning the first time ``key`` is seen."""
        if self.first(key):
            logger.warning(f"pipecat-grafana: {message}")

    def error(self, message: str) -> None:
        """Log ``message`` as an error the first time it is seen."""
        if self.first(message):
            logger.error(message)

    def clear(self) -> None:
        """Forget everything said (a test that expects a message again uses this)."""
        with self._lock:
            self._said.clear()


once = LogOnce()
"""The process's record of problems already logged."""
