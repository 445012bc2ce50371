"""The hot path: every proxied call goes through these stages, in this order.

Each stage is a method of `Proxy` (handler.py) taking the one `Call` (context.py) that carries the
request, what the stages decided and whether the answer has started; `Call.response_headers` is
the only place response headers are built, for answers, cache hits and errors alike.

    1. authenticate   Helicone-Auth → key id, or a provider-shaped 401 (not recorded); from here
                      on the call has a record and a request id (a reused one is replaced)
                                                                                  (../auth.py, handler.py)
    2. prepare        route (path → provider and upstream URL; key-in-path taken out), Helicone-*
                      headers checked, the body read, a prompt rendered into it (only with
                      Helicone-Prompt-Id or a body `prompt_id`; versions from memory, see
                      ../prompts/), `stream_options.include_usage` added to OpenAI-style streams,
                      the cache key, the retry policy and fallback targets; a refusal (400, 404,
                      408, 503) is answered and recorded          (routes.py, forward.py, ../prompts/)
    3. cache read     only with Helicone-Cache-*: exact key, then semantic; a hit is replayed
                      and skips everything below but the record                  (caching.py)
    4. rate limit     only with Helicone-RateLimit-Policy: take from the bucket or answer 429
                                                                                  (limiting.py)
    5. budget         only in a project with budgets: the key's, the project's and the user's
                      spend this period, one state read; a spent one answers 429  (budgets.py)
    6. forward        the upstream call with timeouts; retries and fallbacks, all before the
                      first byte reaches the client                               (forward.py)
    7. relay          status, headers and body back untouched; streams teed chunk by chunk,
                      the injected usage-only chunk removed, a fallback in the other API family
                      translated back                                             (relay.py, translate*.py)
    8. finish         exactly one RawRecord per call, in `finally`, put_nowait to the recorder;
                      then, off the client's path, the cache save, a cent-limit and a budget charge

A stage nobody asked for costs a dictionary lookup. Nothing here parses a body it does not need,
and nothing here touches the store.
"""
