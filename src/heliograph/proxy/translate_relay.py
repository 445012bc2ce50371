"""Answers from a fallback in the other API family, turned back into the client's format."""

from __future__ import annotations

from typing import Protocol

from ..errors import UpstreamUnavailable
from . import translate
from .forward import Target


class _Stream(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def close(self) -> bytes: ...


class Translation:
    def __init__(self, target: Target, streaming: bool, status: int) -> None:
        assert target.translate is not None
        self.client_family = target.translate
        self.model = target.model or ""
        self.status = status
        self.stream: _Stream | None = None
        if streaming and status < 400:
            if self.client_family == "openai":
                self.stream = translate.AnthropicToOpenAIStream(self.model, target.client_usage)
            else:
                self.stream = translate.OpenAIToAnthropicStream(self.model, False)

    def whole(self, body: bytes) -> tuple[int, bytes]:
        """Status and body for the client; an answer that cannot be translated is a 502."""
        to_openai = self.client_family == "openai"
        if self.status >= 400:
            convert = translate.anthropic_error_to_openai if to_openai else translate.openai_error_to_anthropic
            return self.status, convert(body, status=self.status)
        try:
            if to_openai:
                return self.status, translate.anthropic_to_openai_response(body, self.model)
            return self.status, translate.openai_to_anthropic_response(body, self.model)
        except translate.TranslationError as exc:
            error = UpstreamUnavailable(f"The fallback's answer could not be translated: {exc}")
            return error.status, error.body(self.client_family)

    def feed(self, data: bytes) -> bytes:
        return self.stream.feed(data) if self.stream else data

    def close(self) -> bytes:
        return self.stream.close() if self.stream else b""
