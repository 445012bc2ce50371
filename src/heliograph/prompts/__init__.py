"""Prompt management: versioned request templates, rendered by the gateway before cache and forward.

    template.py   pure functions on JSON bodies: the variables a template declares, compiling a
                  version with inputs (`{{hc:name:type}}` with Helicone's type checks, the seed's
                  `{{name}}`), merging it with the request, Helicone's legacy
                  `<helicone-prompt-input>` tags, the body hash that decides "changed", diffs
    registry.py   the proxy's in-memory copy of the registry (`PromptRegistry`): prompts loaded on
                  first use, versions kept by id (they never change), refreshed from the store
                  within a second of a change made by any process; auto-versioning
    render.py     what the hot path calls: which of the three request forms a call uses, the body
                  to send and what the record says (prompt id, version id, inputs)

The store (storage/prompts.py) keeps prompts, immutable versions and environments; this package is
handed it as a `PromptSource` and never imports it, so the proxy can use it.
"""

from .registry import PromptRegistry, RegistryUnavailable
from .template import PromptError

__all__ = ["PromptError", "PromptRegistry", "RegistryUnavailable"]
