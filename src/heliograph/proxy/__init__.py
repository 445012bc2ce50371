"""The hot path: every proxied call goes through these stages, in this order.

    1. route          path → provider and upstream URL; key-in-path taken out   (routes.py)
    2. authenticate   Helicone-Auth → key id, or a provider-shaped 401          (auth.py)
    3. prepare        forwarded headers (Helicone-* and hop-by-hop removed), the body as bytes,
                      `stream_options.include_usage` added to OpenAI-style streams (handler.py)
    4. forward        one upstream call with connect and read timeouts         (handler.py)
    5. relay          status, headers and body back untouched; streams teed chunk by chunk,
                      the injected usage-only chunk removed                      (relay.py)
    6. record         exactly one RawRecord per request, in `finally`, put_nowait to the recorder

Nothing here parses a body it does not need, and nothing here touches the store.
"""
