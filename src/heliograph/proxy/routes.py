"""Which provider a path belongs to, and where its upstream is. Tables only.

A proxied path is `/<prefix>/<rest>`; the upstream URL is the provider's origin + `/<rest>` + the
query string, so an SDK's base URL is Heliograph's origin + `/<prefix>` + the provider's own base
path (`http://127.0.0.1:8787/groq/openai/v1` for Groq, `.../openai/v1` for OpenAI). Bare `/v1/*`
is OpenAI with the `/v1` kept.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    origin: str
    family: str  # "openai" (OpenAI and compatible APIs) or "anthropic": the error shape and usage format


OPENAI_COMPATIBLE = {
    "openai": "https://api.openai.com",
    "together": "https://api.together.xyz",
    "groq": "https://api.groq.com",
    "openrouter": "https://openrouter.ai",
    "mistral": "https://api.mistral.ai",
    "deepseek": "https://api.deepseek.com",
    "fireworks": "https://api.fireworks.ai",
    "xai": "https://api.x.ai",
    "gemini": "https://generativelanguage.googleapis.com",
    "perplexity": "https://api.perplexity.ai",
    "cerebras": "https://api.cerebras.ai",
    "deepinfra": "https://api.deepinfra.com",
    "nvidia": "https://integrate.api.nvidia.com",
    "hyperbolic": "https://api.hyperbolic.xyz",
    "novita": "https://api.novita.ai",
    "nebius": "https://api.tokenfactory.nebius.com",
}

# Self-hosted OpenAI-compatible servers and their usual addresses. Their routes exist only once an
# upstream is configured for them: forwarding any method and path to the gateway's own loopback is a
# choice, as HELIOGRAPH_GATEWAY_ALLOW is for /gateway.
LOCAL_SERVERS = {
    "ollama": "http://127.0.0.1:11434",
    "vllm": "http://127.0.0.1:8000",
    "local": "http://127.0.0.1:8080",
}

PROVIDERS: dict[str, Provider] = {
    **{name: Provider(name, origin, "openai") for name, origin in OPENAI_COMPATIBLE.items()},
    # No origin until HELIOGRAPH_UPSTREAM_<NAME> gives one; with_overrides leaves them out until then.
    **{name: Provider(name, "", "openai") for name in LOCAL_SERVERS},
    "anthropic": Provider("anthropic", "https://api.anthropic.com", "anthropic"),
    # Azure's origin comes from Helicone-OpenAI-Api-Base on each request.
    "azure": Provider("azure", "", "openai"),
}

LOCAL_PROVIDERS = frozenset(LOCAL_SERVERS)

AZURE_HOST = re.compile(
    r"^[a-z0-9-]+\.(openai\.azure\.com|azure-api\.net|cognitiveservices\.azure\.com|services\.ai\.azure\.com)$")

# Hosts Helicone-Target-URL may name without configuration: the public providers we know.
KNOWN_HOSTS: dict[str, str] = {
    urlsplit(p.origin).hostname or "": p.name for p in PROVIDERS.values()
    if p.origin.startswith("https://")
} | {
    "us.api.openai.com": "openai",
    "api.cohere.ai": "cohere",
    "api.cohere.com": "cohere",
    "api.llama.com": "llama",
    "ai-gateway.vercel.sh": "vercel",
}


def with_overrides(upstreams: dict[str, str] | None) -> dict[str, Provider]:
    """The provider table with HELIOGRAPH_UPSTREAM_<PROVIDER> origins applied; local servers only if set."""
    table = {name: p for name, p in PROVIDERS.items() if name not in LOCAL_PROVIDERS}
    for name, origin in (upstreams or {}).items():
        base = table.get(name)
        if base is None:
            # An override for a name we don't know defines a new OpenAI-compatible provider.
            table[name] = Provider(name, origin, "openai")
        else:
            table[name] = Provider(name, origin, base.family)
    return table


def no_route(prefix: str, providers: dict[str, Provider]) -> str:
    """Why `/<prefix>` is a 404: a local server not configured, or no such provider."""
    usual = LOCAL_SERVERS.get(prefix)
    if usual is not None:
        return (f"/{prefix} forwards to a self-hosted server and is off until configured: set "
                f"HELIOGRAPH_UPSTREAM_{prefix.upper()}={usual} (or [upstreams] {prefix} = \"{usual}\" "
                "in the config file) to enable it.")
    return (f"No provider at /{prefix}. Use /openai/v1, /anthropic/v1, /azure, "
            f"/gateway or one of: {', '.join(sorted(providers))}.")


def origin_of(url: str) -> str | None:
    """scheme://host[:port] of an absolute http(s) URL; its path is discarded, as Helicone does."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def azure_origin(api_base: str) -> str | None:
    origin = origin_of(api_base)
    if origin is None or not origin.startswith("https://"):
        return None
    host = urlsplit(origin).hostname or ""
    return origin if AZURE_HOST.match(host) else None


def is_private_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


@dataclass(frozen=True, slots=True)
class GatewayTarget:
    origin: str
    provider: str
    family: str


def gateway_provider(target_url: str, allowed_origins: frozenset[str],
                     providers: dict[str, Provider]) -> Provider | str:
    """The provider a Helicone-Target-URL reaches, or why it is refused.

    A known provider's host goes to that provider's upstream, so HELIOGRAPH_UPSTREAM_<PROVIDER>
    (an egress proxy, a test double) applies to the gateway too.
    """
    found = gateway_target(target_url, allowed_origins)
    if isinstance(found, str):
        return found
    known = providers.get(found.provider)
    origin = known.origin if known and known.origin and found.provider in PROVIDERS else found.origin
    return Provider(found.provider, origin, found.family)


def gateway_target(target_url: str, allowed_origins: frozenset[str]) -> GatewayTarget | str:
    """The upstream for /gateway/*, or the reason it is refused.

    Allowed: an origin configured in HELIOGRAPH_GATEWAY_ALLOW (private addresses included, since
    someone chose them), or an https origin on a known provider host. Nothing else: the gateway must
    not be an open proxy into the network it runs in.
    """
    origin = origin_of(target_url)
    if origin is None:
        return f"Helicone-Target-URL {target_url!r} is not an absolute http(s) URL"
    host = urlsplit(origin).hostname or ""
    provider = KNOWN_HOSTS.get(host) or ("azure" if AZURE_HOST.match(host) else None)
    if origin in allowed_origins:
        return GatewayTarget(origin, provider or host, "anthropic" if provider == "anthropic" else "openai")
    if is_private_host(host):
        return (f"Helicone-Target-URL {origin} is a private or loopback address; "
                "add it to HELIOGRAPH_GATEWAY_ALLOW to allow it")
    if provider is None or not origin.startswith("https://"):
        return (f"Helicone-Target-URL {origin} is not an allowed provider; "
                "add the origin to HELIOGRAPH_GATEWAY_ALLOW to allow it")
    return GatewayTarget(origin, provider, "anthropic" if provider == "anthropic" else "openai")


def known_names() -> frozenset[str]:
    """Every provider name a setting may mention: the route table's and the generic gateway's."""
    return frozenset(PROVIDERS) | frozenset(KNOWN_HOSTS.values())
