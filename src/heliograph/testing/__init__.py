"""A fake LLM upstream for tests, demos and benchmarks.

``FakeUpstream`` is a real HTTP server on loopback that speaks the OpenAI and Anthropic APIs
(JSON and SSE) with deterministic content and failures scripted per request by the
``X-Fake-Scenario`` header. Run it standalone with ``python -m heliograph.testing``.
"""

from heliograph.testing.fake_upstream import FakeUpstream, ReceivedRequest

__all__ = ["FakeUpstream", "ReceivedRequest"]
