"""Grafana artefacts built from the metric contract: the dashboard and the alert rules.

Every query and alert expression is built from ``pipecat_grafana.instruments`` rather than kept
as hand-edited JSON or YAML, so that a renamed instrument cannot leave a panel showing "No
data" or an alert that never fires; the calls panels' queries are built from the call
summary record's event name (``pipecat_grafana.summary``). The package reads nothing else of
``pipecat_grafana``:

- ``promql``: the PromQL both are written in, and the labels a backend stores the service in;
- ``logql``: the LogQL and TraceQL of the calls panels, which find single calls in Loki and
  Tempo;
- ``alerts``: the Prometheus/Mimir alert rules;
- ``panels``: the vocabulary of what the dashboard shows (panels, queries, rows) and its
  helpers;
- ``fleet_rows`` and ``call_rows``: the dashboard's rows, about the service as a whole and
  about single calls;
- ``dashboard``: the dashboard JSON Grafana imports, with its filter variables.

The files beside these modules, ``pipecat-voice-bot.json`` and
``pipecat-voice-bot-rules.yml``, are the dashboard and rules as shipped: what
``pipecat-grafana dashboard`` and ``pipecat-grafana alerts`` write with their defaults.
"""
