"""pipecat-grafana: production observability for Pipecat voice bots in Grafana."""

__version__ = "0.1.0"
