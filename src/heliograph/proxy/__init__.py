"""The hot path: every proxied call goes through these stages, in this order.

    1. route          path → provider and upstream URL; key-in-path taken out   (routes.py)
    2. authenticate   Helicone-Auth → key id, or a provider-shaped 401          (auth.py)
    3. prepare        forwarded headers (Helicone-* and hop-by-hop removed), the body as bytes,
                      `stream_options.include_usage` added to OpenAI-style streams, the retry
                      policy and fallback targets parsed (bad headers → 400)     (handler.py, forward.py)
    4. cache read     only with Helicone-Cache-*: exact key, then semantic; a hit is replayed
                      and skips everything below but the record                  (caching.py)
    5. rate limit     only with Helicone-RateLimit-Policy: take from the bucket or answer 429
                                                                                  (limiting.py)
    6. forward        the upstream call with timeouts; retries and fallbacks, all before the
                      first byte reaches the client                               (forward.py)
    7. relay          status, headers and body back untouched; streams teed chunk by chunk,
                      the injected usage-only chunk removed, a fallback in the other API family
                      translated back                                             (relay.py, translate*.py)
    8. record         exactly one RawRecord per request, in `finally`, put_nowait to the recorder;
                      then, off the client's path, the cache save and a cent-limit charge

A stage nobody asked for costs a dictionary lookup. Nothing here parses a body it does not need,
and nothing here touches the store.
"""
