"""The dedup stage with its LSH in memory vs in Redis (`--set dedup.redis_url=redis://...`):
throughput and peak memory on a real crawl, and when a user should switch.

    .venv/bin/scratchlm sample-crawl --warc-files 20 --output benchmarks/data/large-crawl
    .venv/bin/python benchmarks/bench_redis_lsh.py --crawl benchmarks/data/large-crawl \\
        --out benchmarks/redis_lsh_results.json

1. ingest → extract → langid (all languages) → quality → dedup on the crawl, once, not timed.
2. The dedup stage (`run_dedup`, the code the stage runs) on that quality artifact, each round in a
   fresh Python process so that its peak RSS is its own: once with the LSH in memory, once against
   a private redis-server (Debian's `redis-server`, a fresh one per round, free loopback port, no
   persistence), alternating, `--rounds` times each. Wall time, CPU time (the stage process plus,
   for Redis, the server: on a shared machine CPU time is the steadier figure) and peak RSS.
3. Memory per document, measured apart from the per-file peak (which is the largest input file's
   texts and Arrow buffers, not the corpus): in a fresh process, the kept documents' signatures
   (the dedup artifact's index.parquet) go into a `Deduper` as the stage puts them (`add_kept`):
   the process's RSS grows by its state (ids, text hashes, signatures, and the LSH when in
   memory), and Redis's `used_memory` by the LSH tables when in Redis. Extrapolated per million
   documents, which says when a user should switch.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _peak_rss_bytes(pid: int | str = "self") -> int:
    """VmHWM: the highest resident set size the process has had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_index(index: str, redis_url: str) -> dict:
    """In a fresh process: the kept documents' signatures into a Deduper, and what that costs."""
    import gc
    import tracemalloc

    from pipeline.dedup import DedupConfig, Deduper, load_index

    config = DedupConfig(redis_url=redis_url)
    kept = load_index(index, config)
    gc.collect()
    tracemalloc.start()  # live Python and numpy allocations: what stays per document
    live_before, before = tracemalloc.get_traced_memory()[0], _rss_bytes()
    deduper = Deduper(config)
    deduper.add_kept(kept.ids, kept.sketches)
    gc.collect()
    live, grown = tracemalloc.get_traced_memory()[0] - live_before, _rss_bytes() - before
    assert len(deduper) == len(kept.ids)
    # RSS also keeps what was freed (Redis's insertion pipeline buffers, bounded per batch) and
    # tracemalloc's own bookkeeping; the live bytes are what grows with the corpus.
    return {"docs": len(kept.ids), "process_bytes": live, "process_rss_growth_bytes": grown}


def one_round(quality: str, redis_url: str) -> dict:
    """In a fresh process: the dedup stage once, timed, with its peak RSS."""
    import resource

    from pipeline.dedup import DedupConfig
    from pipeline.stages import get_stage
    from pipeline.stages.dedup import run_dedup

    stage = get_stage("dedup")
    files = stage.input_files([quality])
    config = DedupConfig(redis_url=redis_url)
    rss_before = _peak_rss_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-redis-lsh-") as out:
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        _, stats, _ = run_dedup(files, config, Path(out))
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "docs_in": stats["docs_in"], "docs_out": stats["docs_out"],
            "peak_rss_bytes": _peak_rss_bytes(), "rss_after_imports_bytes": rss_before,
            "dropped": stats["dropped"]}


class RedisServer:
    """A private redis-server on a free loopback port, no persistence."""

    def __init__(self, work: Path):
        import redis

        server = shutil.which("redis-server")
        if server is None:
            sys.exit("redis-server is not installed (apt-get install redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen([server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(work)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.used_memory_start = self.client.info("memory")["used_memory"]
        self.cpu_start = _cpu_seconds(self.process.pid)

    def stop(self) -> dict:
        memory = self.client.info("memory")
        figures = {"redis_used_memory_peak_bytes": memory["used_memory_peak"],
                   "redis_used_memory_start_bytes": self.used_memory_start,
                   "redis_used_memory_now_bytes": memory["used_memory"],
                   "redis_keys_left": self.client.dbsize(),
                   "redis_server_peak_rss_bytes": _peak_rss_bytes(self.process.pid),
                   "redis_server_cpu_seconds": _cpu_seconds(self.process.pid) - self.cpu_start,
                   "redis_version": self.client.info("server")["redis_version"]}
        self.process.terminate()
        self.process.wait(timeout=10)
        return figures


def _subprocess(flag: str, path: str, redis_url: str) -> dict:
    command = [sys.executable, __file__, flag, path, "--redis-url", redis_url]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"a round failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crawl", type=Path, default=REPO / "benchmarks" / "data" / "large-crawl")
    parser.add_argument("--store", type=Path, default=None, help="artifact store for the quality artifact [a temp folder]")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for ingest … quality (not timed)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "redis_lsh_results.json")
    parser.add_argument("--one-round", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one-index", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        print(json.dumps(one_round(args.one_round, args.redis_url)))
        return
    if args.one_index:
        print(json.dumps(one_index(args.one_index, args.redis_url)))
        return

    from pipeline.chain import run_chain
    from pipeline.dedup import DICT_LSH_BYTES_PER_DOC
    from pipeline.runner import RunOptions
    from pipeline.stages.langid import LangIdConfig
    from storage.store import ArtifactStore

    work = Path(tempfile.mkdtemp(prefix="bench-redis-lsh-"))
    try:
        store = ArtifactStore(args.store or work / "store")
        start = time.perf_counter()
        upstream = run_chain([args.crawl], ["ingest", "extract", "langid", "quality", "dedup"], store,
                             {"langid": LangIdConfig(languages="all")}, RunOptions(workers=args.workers, progress=False))
        quality, index = str(upstream["quality"].path), str(upstream["dedup"].path / "index.parquet")
        print(f"quality artifact {quality} ({time.perf_counter() - start:.1f} s, not timed)", flush=True)

        # Memory per document: the kept documents into a Deduper, in memory and in Redis.
        in_memory = _subprocess("--one-index", index, "")
        server = RedisServer(work)
        try:
            in_redis = _subprocess("--one-index", index, server.url)
        finally:
            server_figures = server.stop()
        in_redis["redis_bytes"] = server_figures["redis_used_memory_now_bytes"] - server_figures["redis_used_memory_start_bytes"]
        index_figures = {"memory": in_memory, "redis": in_redis}
        print(f"index of {in_memory['docs']} documents: in memory {in_memory['process_bytes'] / 2**20:.1f} MiB; "
              f"in Redis {in_redis['process_bytes'] / 2**20:.1f} MiB here + {in_redis['redis_bytes'] / 2**20:.1f} MiB in Redis",
              flush=True)

        rounds: dict[str, list[dict]] = {"memory": [], "redis": []}
        for k in range(args.rounds):
            memory = _subprocess("--one-round", quality, "")
            rounds["memory"].append(memory)
            print(f"round {k + 1} memory: {memory['seconds']:.2f} s, peak RSS {memory['peak_rss_bytes'] / 2**20:.0f} MiB",
                  flush=True)
            server = RedisServer(work)
            try:
                staged = _subprocess("--one-round", quality, server.url)
            finally:
                server_figures = server.stop()
            staged.update(server_figures)
            rounds["redis"].append(staged)
            print(f"round {k + 1} redis:  {staged['seconds']:.2f} s, peak RSS {staged['peak_rss_bytes'] / 2**20:.0f} MiB "
                  f"+ redis-server {staged['redis_server_peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first = rounds["memory"][0]
    assert all(r["docs_out"] == first["docs_out"] for mode in rounds.values() for r in mode), "modes disagree"
    docs_in, kept = first["docs_in"], first["docs_out"]

    def median(mode: str, field: str) -> float:
        return statistics.median(r[field] for r in rounds[mode])

    summary = {}
    for mode in rounds:
        seconds = median(mode, "seconds")
        cpu = statistics.median(r["cpu_seconds"] + r.get("redis_server_cpu_seconds", 0.0) for r in rounds[mode])
        summary[mode] = {"seconds_median": round(seconds, 2), "docs_per_s": round(docs_in / seconds),
                         "cpu_seconds_median": round(cpu, 2), "docs_per_cpu_s": round(docs_in / cpu),
                         "peak_rss_mib": round(median(mode, "peak_rss_bytes") / 2**20, 1),
                         "rss_after_imports_mib": round(median(mode, "rss_after_imports_bytes") / 2**20, 1)}
    summary["redis"]["redis_server_peak_rss_mib"] = round(median("redis", "redis_server_peak_rss_bytes") / 2**20, 1)
    summary["redis"]["redis_server_cpu_seconds_median"] = round(median("redis", "redis_server_cpu_seconds"), 2)
    n = index_figures["memory"]["docs"]
    per_doc = {"in_memory_process_bytes": round(index_figures["memory"]["process_bytes"] / n),
               "in_redis_process_bytes": round(index_figures["redis"]["process_bytes"] / n),
               "in_redis_redis_bytes": round(index_figures["redis"]["redis_bytes"] / n),
               "bench_minhash_dict_lsh_bytes_per_doc": DICT_LSH_BYTES_PER_DOC}
    per_million = {key.removesuffix("_bytes") + "_gib": round(value * 1e6 / 2**30, 2)
                   for key, value in per_doc.items() if key.startswith("in_")}
    results = {"crawl": str(args.crawl), "warc_files": len([p for p in args.crawl.iterdir() if ".warc" in p.name]),
               "docs_in": docs_in, "docs_kept": kept, "rounds": args.rounds, "summary": summary,
               "per_kept_document": per_doc, "per_million_kept_documents": per_million,
               "slowdown_redis_vs_memory_wall": round(summary["redis"]["seconds_median"] / summary["memory"]["seconds_median"], 2),
               "slowdown_redis_vs_memory_cpu": round(summary["redis"]["cpu_seconds_median"] / summary["memory"]["cpu_seconds_median"], 2),
               "index": index_figures, "raw": rounds, "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
               "python": sys.version.split()[0],
               "command": "python benchmarks/bench_redis_lsh.py " + " ".join(sys.argv[1:])}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k not in ("raw", "index")}, indent=2))


if __name__ == "__main__":
    main()
