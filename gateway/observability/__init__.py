"""Metrics, structured logs and the per-inference observer (one place that records what happened).

- :mod:`.metrics`: the Prometheus metric families (names, labels, buckets), once per registry.
- :mod:`.labels`: bounded label values (client-supplied model names never become label values).
- :mod:`.observer`: :class:`InferenceObserver`, called by the frontends around each inference.
- :mod:`.backends`: a collector exposing each backend's health and ejection state from the registry.
- :mod:`.provenance`: the usage recorder's buffer depth, writes and drops.
- :mod:`.multiprocess`: ``serve --workers N``: one metrics directory shared by the workers.
- :mod:`.logs`: JSON-lines or plain-text logging, and the access-log line.
"""
