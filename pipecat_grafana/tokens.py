"""Token counts of one LLM usage report, normalised across providers.

Pipecat passes each provider's ``LLMTokenUsage`` on as reported, and providers
disagree on what ``prompt_tokens`` holds (net of the prompt cache for Anthropic
and Bedrock, gross for OpenAI-compatible services). Recording and pricing both
need one meaning, so a report is normalised here once.
"""

from pipecat.metrics.metrics import LLMTokenUsage
from pydantic import BaseModel, ConfigDict, Field


class TokenCounts(BaseModel):
    """The token counts of one LLM usage report, normalised across providers.

    ``prompt`` is always the gross input and ``completion`` the gross output; every
    other count is a part of one of them. A count that is ``None`` was not reported.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    prompt: int = Field(ge=0)
    """Input tokens, gross: including cached, cache-written and audio input tokens."""

    completion: int = Field(ge=0)
    """Output tokens, including reasoning and audio output tokens."""

    cache_read: int | None = Field(default=None, ge=0)
    """Input tokens read from the prompt cache (part of ``prompt``)."""

    cache_creation: int | None = Field(default=None, ge=0)
    """Input tokens written to the prompt cache (part of ``prompt``)."""

    reasoning: int | None = Field(default=None, ge=0)
    """Output tokens spent reasoning (part of ``completion``)."""

    input_audio: int | None = Field(default=None, ge=0)
    """Input tokens that were audio, cached or not (part of ``prompt``)."""

    output_audio: int | None = Field(default=None, ge=0)
    """Output tokens that were audio (part of ``completion``)."""

    # Excluded from model_dump(): it is not one of the exported token types, only
    # what pricing needs to avoid charging cached audio twice.
    cache_read_audio: int | None = Field(default=None, ge=0, exclude=True)
    """Audio input tokens read from the cache (part of both ``cache_read`` and ``input_audio``)."""

    @classmethod
    def from_usage(cls, usage: LLMTokenUsage) -> tuple["TokenCounts", str | None]:
        """Normalise one ``LLMTokenUsage`` report.

        Pipecat's ``prompt_tokens`` is net of the prompt cache for some services
        (Anthropic, Bedrock) and gross for others (OpenAI-compatible), while
        ``total_tokens`` is gross for both, so the gross prompt is
        ``total_tokens - completion_tokens``. When the report contradicts itself
        the counts fall back to what the report can still support, and the
        problem is described in the returned warning.

        Args:
            usage: The usage report of one LLM inference.

        Returns:
            The normalised counts, and a warning naming what was inconsistent in the
            report (``None`` when it was consistent).
        """
        problems: list[str] = []

        def optional(name: str) -> int | None:
            value = getattr(usage, name)
            if value is not None and value < 0:
                problems.append(f"{name} is negative ({value}); counted as not reported")
                return None
            return value

        cache_read = optional("cache_read_input_tokens")
        cache_creation = optional("cache_creation_input_tokens")
        reasoning = optional("reasoning_tokens")
        input_audio = optional("input_audio_tokens")
        output_audio = optional("output_audio_tokens")
        cache_read_audio = optional("cache_read_input_audio_tokens")

        reported_prompt = usage.prompt_tokens
        if reported_prompt < 0:
            problems.append(f"prompt_tokens is negative ({reported_prompt}); counted as 0")
            reported_prompt = 0
        completion = usage.completion_tokens
        completion_valid = completion >= 0
        if not completion_valid:
            problems.append(f"completion_tokens is negative ({completion}); counted as 0")
            completion = 0
        total_valid = usage.total_tokens >= 0
        if not total_valid:
            problems.append(f"total_tokens is negative ({usage.total_tokens})")

        cached_parts = (cache_read or 0) + (cache_creation or 0)
        derived = usage.total_tokens - usage.completion_tokens
        floor = max(reported_prompt, cached_parts, input_audio or 0)
        if total_valid and completion_valid and derived >= floor:
            prompt = derived
        else:
            # A gross prompt can never be smaller than its cached parts, so a
            # prompt_tokens below them must be net of the cache.
            looks_net = reported_prompt < cached_parts
            prompt = max(reported_prompt + (cached_parts if looks_net else 0), input_audio or 0)
            if total_valid and completion_valid:
                problems.append(
                    f"total_tokens ({usage.total_tokens}) - completion_tokens "
                    f"({usage.completion_tokens}) = {derived} is less than the input it "
                    f"must contain ({floor})"
                )
            basis = "prompt_tokens plus the cache counts" if looks_net else "prompt_tokens"
            problems.append(f"counted prompt as {prompt} ({basis})")

        largest_part = max(reasoning or 0, output_audio or 0)
        if largest_part > completion:
            problems.append(
                f"completion_tokens ({completion}) is less than its reasoning or audio part "
                f"({largest_part}); counted completion as {largest_part}"
            )
            completion = largest_part
        if cache_read_audio is not None and cache_read_audio > min(
            cache_read if cache_read is not None else cache_read_audio,
            input_audio if input_audio is not None else cache_read_audio,
        ):
            problems.append(
                f"cache_read_input_audio_tokens ({cache_read_audio}) exceeds "
                "cache_read_input_tokens or input_audio_tokens"
            )

        counts = cls(
            prompt=prompt,
            completion=completion,
            cache_read=cache_read,
            cache_creation=cache_creation,
            reasoning=reasoning,
            input_audio=input_audio,
            output_audio=output_audio,
            cache_read_audio=cache_read_audio,
        )
        warning = "inconsistent LLMTokenUsage: " + "; ".join(problems) if problems else None
        return counts, warning
