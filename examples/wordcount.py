"""Word count, map/reduce style: count words per chunk in parallel, merge in one task.

    python examples/wordcount.py            # 16 chunks of 20,000 words
    python examples/wordcount.py 64         # 64 chunks

The corpus is generated, deterministically, from a seeded random generator: the same
command always gives the same counts. Each chunk is counted by its own task call, in
the process pool; the merge is one more task that takes the list of futures as its
argument, so it is dispatched as soon as every count is done. Prints the ten most
frequent words as JSON on stdout; timing goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter

from procflow import entrypoint, task

DEFAULT_CHUNKS = 16
WORDS_PER_CHUNK = 20_000
SEED = 2024

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "be", "da", "fu", "go"]


def vocabulary(size: int = 2_000, seed: int = SEED) -> list[str]:
    """Distinct made-up words, always the same ones for the same seed."""
    rng = random.Random(seed)
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))] = None
    return list(words)


def make_corpus(chunks: int, words_per_chunk: int = WORDS_PER_CHUNK, seed: int = SEED) -> list[str]:
    """``chunks`` strings of space-separated words, word frequencies roughly Zipf-like."""
    vocab = vocabulary(seed=seed)
    weights = [1.0 / rank for rank in range(1, len(vocab) + 1)]
    rng = random.Random(seed + 1)
    return [" ".join(rng.choices(vocab, weights, k=words_per_chunk)) for _ in range(chunks)]


@task
def count_words(text: str) -> dict[str, int]:
    """The word counts of one chunk (runs in a worker process)."""
    return dict(Counter(text.split()))


@task
def merge_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    """Sum the per-chunk counts (the reduce step)."""
    total: Counter[str] = Counter()
    for part in counts:
        total.update(part)
    return dict(total)


@entrypoint
def main(chunks: int | None = None) -> list[tuple[str, int]]:
    """The ten most frequent words, as (word, count) pairs, most frequent first.

    ``chunks`` is the number of chunks to generate (None: 16).
    """
    corpus = make_corpus(DEFAULT_CHUNKS if chunks is None else chunks)
    per_chunk = count_words.map(corpus)  # one call per chunk, all running in parallel
    merged = merge_counts(per_chunk)  # waits for its argument futures, in the scheduler
    totals = merged.result()
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:10]


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "chunks", nargs="?", type=int, default=DEFAULT_CHUNKS, help="number of chunks (16)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    top = main.invoke(args.chunks)
    print(json.dumps(top))
    print(
        f"wordcount: {args.chunks} chunks x {WORDS_PER_CHUNK} words counted in "
        f"{time.perf_counter() - started:.2f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli())
