"""Operations: the log setup, the start-up banner, Prometheus metrics across workers, and the
observer that turns each recorded call into an access line, metrics and an OpenTelemetry span.

Everything per call here runs in the recorder thread (`Recorder(observe=…)`), after the answer,
never on the request path.
"""
