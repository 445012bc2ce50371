"""Prometheus metrics of the proxy. Labels are bounded: provider (a fixed table plus the
allow-listed gateway hosts) and status class, never model, user or key."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..recording.record import RawRecord

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1)


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("heliograph_requests", "Proxied requests answered.",
                                ("provider", "status_class"), registry=registry)
        self.errors = Counter("heliograph_errors", "Proxied requests that ended in an error.",
                              ("provider", "error"), registry=registry)
        self.refused = Counter("heliograph_refused", "Requests refused before reaching a provider.",
                               ("status",), registry=registry)
        self.shed = Counter("heliograph_shed", "Proxied requests refused at once with 503 because max_in_flight "
                            "were already in flight (not recorded, not in heliograph_refused).", registry=registry)
        self.latency = Histogram("heliograph_request_duration_seconds", "Total time of a proxied request.",
                                 ("provider",), buckets=LATENCY_BUCKETS, registry=registry)
        self.overhead = Histogram("heliograph_gateway_overhead_seconds",
                                  "Time the gateway itself added to a request.",
                                  buckets=OVERHEAD_BUCKETS, registry=registry)

        # Children by label values, looked up once: `labels()` costs ~2.5 µs a call, on every request.
        # Bounded as the labels are: providers of the route table and status classes.
        self._requests: dict[tuple[str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}

    def observe(self, record: RawRecord) -> None:
        provider = record.provider
        key = (provider, record.status // 100)
        requests = self._requests.get(key)
        if requests is None:
            requests = self._requests[key] = self.requests.labels(provider, f"{key[1]}xx")
        requests.inc()
        if record.error:
            self.errors.labels(provider, record.error).inc()
        latency = self._latency.get(provider)
        if latency is None:
            latency = self._latency[provider] = self.latency.labels(provider)
        latency.observe(record.latency_ms / 1000)
        self.overhead.observe(record.gateway_overhead_ms / 1000)

    def observe_refused(self, status: int) -> None:
        self.refused.labels(str(status)).inc()
