"""The OpenTelemetry resource every series of a process carries.

``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` are read by the SDK;
arguments win over them; ``voice-rag-bot`` is the service name when neither
sets one. The SDK gives each process its own ``service.instance.id``, so two
bot processes never write the same series, and a restarted process starts new
series instead of resetting old ones.
"""

import functools
import os

from opentelemetry.sdk.resources import Resource

DEFAULT_SERVICE_NAME = "voice-rag-bot"


def default_resource(
    service_name: str | None,
    *,
    service_version: str | None = None,
    environment: str | None = None,
) -> Resource:
    """The resource of the process's series, from the arguments and the environment."""
    # The SDK's resource detection takes milliseconds (a thread pool per call):
    # do it once per distinct input, not once per call.
    return _resource(
        service_name,
        service_version,
        environment,
        os.environ.get("OTEL_SERVICE_NAME"),
        os.environ.get("OTEL_RESOURCE_ATTRIBUTES"),
    )


@functools.lru_cache(maxsize=64)
def _resource(
    service_name: str | None,
    service_version: str | None,
    environment: str | None,
    *_environment_inputs: str | None,
) -> Resource:
    attributes: dict[str, str] = {}
    if service_version:
        attributes["service.version"] = service_version
    if environment:
        attributes["deployment.environment.name"] = environment
    resource = Resource.create(attributes)
    name = service_name or resource.attributes.get("service.name", "")
    if not name or str(name).startswith("unknown_service"):
        name = DEFAULT_SERVICE_NAME
    return resource.merge(Resource({"service.name": name}))
