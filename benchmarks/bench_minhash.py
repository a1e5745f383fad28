"""MinHash signature rate (ours vs. datasketch) and the memory of the LSH index.

    .venv/bin/python benchmarks/bench_minhash.py                 # committed Austen fixture
    .venv/bin/python benchmarks/bench_minhash.py --parquet DIR   # `text` column of your corpus
    .venv/bin/python benchmarks/bench_minhash.py --lsh-docs 200000 --redis

Signatures (documents per CPU-second, so that a busy machine does not skew the comparison):
both sides start from the same text and do the same normalisation; datasketch gets
word 5-gram shingles cut with `re` (as a user would) and one `MinHash(num_perm=112, seed=1)` +
`update_batch` per document, with its default SHA-1 hash and with xxh32. Both produce uint32
affine32 signatures of the same shingle sets.

LSH memory: the resident-memory growth of a `datasketch.MinHashLSH` (dict storage, 14 x 8) per
inserted document, from which `pipeline.dedup.DICT_LSH_BYTES_PER_DOC` and the documents-per-
machine estimate come. With --redis (needs redis-server on PATH) the same for Redis storage.
"""
from __future__ import annotations

import argparse
import gc
import gzip
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.dedup import QUERY_BATCH, DedupConfig, _query_many, find_duplicates  # noqa: E402
from pipeline.minhash import SCHEME, compute_signatures, normalize_text  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "dedup" / "austen_paragraphs.txt.gz"
WORDS = re.compile(r"\w+")
GIB = 1 << 30


def fixture_texts() -> list[str]:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f]


def parquet_texts(folder: str, limit: int) -> list[str]:
    import pyarrow.parquet as pq

    texts: list[str] = []
    for path in sorted(Path(folder).rglob("*.parquet")):
        texts += [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t]
        if len(texts) >= limit:
            break
    return texts[:limit]


def datasketch_signatures(texts: list[str], hashfunc, num_perm: int, share_permutations: bool = False) -> None:
    """One MinHash per document, as datasketch's documentation does it. `share_permutations`
    skips drawing the 112 permutations again for every document (datasketch's fastest use)."""
    shared = MinHash(num_perm=num_perm, seed=1).permutations if share_permutations else None

    def word_shingles(text: str) -> list[bytes]:
        words = WORDS.findall(normalize_text(text))
        if len(words) < 5:
            return [" ".join(words).encode()] if words else []
        return [" ".join(words[i:i + 5]).encode() for i in range(len(words) - 4)]

    options = {"hashfunc": hashfunc} if hashfunc else {}
    if shared is not None:
        options.update(permutations=shared, scheme=SCHEME)
    for text in texts:
        m = MinHash(num_perm=num_perm, seed=1, **options)
        m.update_batch(word_shingles(text))


def best_rate(runs: dict[str, tuple], rounds: int) -> dict[str, float]:
    """Documents per CPU-second of each run, the best of `rounds` interleaved rounds. CPU time
    (not wall time) and interleaving keep the comparison fair on a shared machine."""
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, (work, n_docs) in runs.items():
            start = time.process_time()
            work()
            best[name] = min(best[name], (time.process_time() - start) / n_docs)
    return {name: 1.0 / seconds for name, seconds in best.items()}


def bench_signatures(corpora: dict[str, list[str]], datasketch_docs: int, rounds: int) -> None:
    config = DedupConfig()
    start = time.perf_counter()
    compute_signatures(["warm up the lookup tables"], None, config)
    print(f"one-time lookup tables: {time.perf_counter() - start:.2f} s per process")
    print(f"documents per CPU-second, best of {rounds} interleaved rounds, num_perm={config.num_perm}\n")
    print("datasketch columns: default (sha1), xxh32 hashfunc, xxh32 + permutations shared across documents")
    print(f"{'corpus':<22}{'docs':>6}{'words/doc':>10}{'ours':>8}{'MB/s':>6}"
          f"{'ds sha1':>9}{'ds xxh32':>9}{'ds shared':>10}{'speed-up vs each':>24}")
    for name, texts in corpora.items():
        words = sum(len(t.split()) for t in texts) / len(texts)
        megabytes = sum(len(t.encode()) for t in texts) / 1e6
        sample = texts[:datasketch_docs]
        rates = best_rate({
            "ours": (lambda: compute_signatures(texts, None, config), len(texts)),
            "sha1": (lambda: datasketch_signatures(sample, None, config.num_perm), len(sample)),
            "xxh32": (lambda: datasketch_signatures(sample, xxhash.xxh32_intdigest, config.num_perm), len(sample)),
            "shared": (lambda: datasketch_signatures(sample, xxhash.xxh32_intdigest, config.num_perm, True), len(sample)),
        }, rounds)
        ours = rates["ours"]
        ratios = " / ".join(f"{ours / rates[k]:.1f}x" for k in ("sha1", "xxh32", "shared"))
        print(f"{name:<22}{len(texts):>6}{words:>10.0f}{ours:>8.0f}{ours * megabytes / len(texts):>6.1f}"
              f"{rates['sha1']:>9.0f}{rates['xxh32']:>9.0f}{rates['shared']:>10.0f}{ratios:>24}")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def random_signatures(n: int, num_perm: int) -> np.ndarray:
    # Distinct documents have independent signatures: every band lands in its own bucket,
    # the worst case for memory (near-duplicates share buckets).
    return np.random.default_rng(0).integers(0, 1 << 32, (n, num_perm), dtype=np.uint32)


def fill_lsh(signatures: np.ndarray, config: DedupConfig, storage_config=None) -> tuple[MinHashLSH, float, float]:
    """Insert and query as `pipeline.dedup` does (insertion session, batched band lookups)."""
    lsh = MinHashLSH(num_perm=config.num_perm, params=(config.bands, config.rows), storage_config=storage_config,
                     prepickle=False)
    key_of = (lambda row: row.to_bytes(8, "big")) if storage_config else (lambda row: row)
    start = time.perf_counter()
    with lsh.insertion_session() as session:
        for row in range(len(signatures)):
            sketch = LeanMinHash(seed=1, hashvalues=signatures[row], scheme=SCHEME)
            session.insert(key_of(row), sketch, check_duplication=False)
    insert_rate = len(signatures) / (time.perf_counter() - start)
    queries = min(len(signatures), 20_000)
    start = time.perf_counter()
    for lo in range(0, queries, QUERY_BATCH):
        _query_many(lsh, signatures, list(range(lo, min(lo + QUERY_BATCH, queries))))
    return lsh, insert_rate, queries / (time.perf_counter() - start)


def bench_lsh_memory(n: int) -> None:
    config = DedupConfig()
    signatures = random_signatures(n, config.num_perm)
    gc.collect()
    before = rss()
    lsh, insert_rate, query_rate = fill_lsh(signatures, config)
    gc.collect()
    per_doc = (rss() - before) / n
    total_per_doc = per_doc + signatures[0].nbytes + 16  # + the signature and text hash we keep
    usable = 24 * GIB * 0.8  # leave a fifth for the interpreter, Arrow buffers and the OS
    print(f"\nLSH, dict storage, {n} documents: {per_doc:.0f} bytes/doc in the LSH, "
          f"{total_per_doc:.0f} with signature; insert {insert_rate:.0f}/s, query {query_rate:.0f}/s")
    print(f"  one 24 GiB machine: about {usable / total_per_doc / 1e6:.1f} million documents in memory")
    del lsh


def bench_redis(n: int) -> None:
    server = shutil.which("redis-server")
    if server is None:
        print("\nredis-server not found: Redis storage not measured")
        return
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        config = DedupConfig()
        before = client.info("memory")["used_memory"]
        storage = {"type": "redis", "basename": b"bench", "redis": {"host": "127.0.0.1", "port": port}}
        _, insert_rate, query_rate = fill_lsh(random_signatures(n, config.num_perm), config, storage)
        per_doc = (client.info("memory")["used_memory"] - before) / n
        print(f"\nLSH, Redis storage, {n} documents: {per_doc:.0f} bytes/doc in Redis; "
              f"insert {insert_rate:.0f}/s, query {query_rate:.0f}/s (local server)")
    finally:
        process.terminate()
        process.wait()


def bench_end_to_end(texts: list[str]) -> None:
    """find_duplicates over the texts, a near copy of each (one word inserted) and an exact copy
    of each (upper-cased): every document has two duplicates to find."""
    near = [" ".join(t.split()[:10] + ["indeed"] + t.split()[10:]) for t in texts]
    corpus = texts + near + [t.upper() for t in texts]
    ids = [f"{i:08d}" for i in range(len(corpus))]
    start = time.process_time()
    result = find_duplicates(ids, corpus, None, DedupConfig())
    elapsed = time.process_time() - start
    print(f"\nfind_duplicates on {len(corpus)} documents: {len(corpus) / elapsed:.0f} docs per CPU-second; "
          f"removed {result.counts['removed_exact']} exact, {result.counts['removed_near']} near "
          f"(planted {len(texts)} of each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parquet", help="folder of Parquet files with a `text` column to use instead of the fixture")
    parser.add_argument("--limit", type=int, default=20_000, help="documents to read from --parquet")
    parser.add_argument("--datasketch-docs", type=int, default=360, help="documents timed through datasketch")
    parser.add_argument("--lsh-docs", type=int, default=100_000, help="documents inserted for the memory measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (best is kept)")
    parser.add_argument("--signatures-only", action="store_true", help="skip the LSH measurements")
    parser.add_argument("--redis", action="store_true", help="also measure Redis storage (starts a redis-server)")
    args = parser.parse_args()

    if args.parquet:
        corpora = {Path(args.parquet).name: parquet_texts(args.parquet, args.limit)}
    else:
        paragraphs = fixture_texts()
        pages = [" ".join(paragraphs[i:i + 8]) for i in range(0, len(paragraphs), 8)]
        corpora = {"austen paragraphs": paragraphs * 4, "austen 8-para pages": pages * 4}
    bench_signatures(corpora, args.datasketch_docs, args.rounds)
    if args.signatures_only:
        return
    bench_end_to_end(fixture_texts() if not args.parquet else next(iter(corpora.values())))
    bench_lsh_memory(args.lsh_docs)
    if args.redis:
        bench_redis(min(args.lsh_docs, 50_000))


if __name__ == "__main__":
    main()
