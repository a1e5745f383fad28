"""One new WARC file vs a full run: the chain ingest → … → dedup → tokenize, timed.

    .venv/bin/python benchmarks/bench_incremental.py [--crawl data/sample-crawl] [--workers 2]

1. A full run over all N WARC files of the crawl in a fresh store (after training the tokenizer
   on N-1 of them, which is not timed).
2. In a second fresh store: a run over the first N-1 files (not timed), then the last file is
   added and `update_tokens` runs again over everything (timed): what the nightly
   `retokenize-incremental` schedule does.
Also checks that both stores end with byte-identical token parts. Wall time per stage is printed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crawl", type=Path, default=REPO / "data" / "sample-crawl")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "incremental_results.json")
    args = parser.parse_args()

    from pipeline.chain import DATA_STAGES, run_chain, shard_counts, update_tokens
    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages import get_stage
    from pipeline.stages.langid import LangIdConfig
    from pipeline.stages.train_tokenizer import TrainTokenizerConfig
    from storage.store import ArtifactStore

    warcs = sorted(p for p in args.crawl.iterdir() if p.name.endswith((".warc", ".warc.gz")))
    if len(warcs) < 2:
        sys.exit(f"{args.crawl}: needs at least 2 WARC files")
    options = RunOptions(workers=args.workers, progress=False)
    configs = {"langid": LangIdConfig(languages="all")}
    work = Path(tempfile.mkdtemp(prefix="bench-incr-"))
    timings: dict[str, dict[str, float]] = {"full": {}, "incremental": {}}

    def timed_stages(label):
        last = [time.perf_counter()]

        def on_stage(name, result):
            now = time.perf_counter()
            timings[label][name] = round(now - last[0], 2)
            last[0] = now
            computed, reused = shard_counts(result)
            print(f"  {label:11s} {name:9s} {timings[label][name]:7.2f} s  computed {computed}, reused {reused}", flush=True)
        return on_stage

    try:
        old, all_files = work / "old", work / "all"
        old.mkdir()
        all_files.mkdir()
        for warc in warcs[:-1]:
            shutil.copy(warc, old)
        for warc in warcs:
            shutil.copy(warc, all_files)
        setup = ArtifactStore(work / "setup")
        text = run_chain([old], DATA_STAGES, setup, configs, options)
        tokenizer = run_stage(get_stage("train-tokenizer"), [text["dedup"].path], TrainTokenizerConfig(vocab_size=args.vocab),
                              setup, options).path / "tokenizer.json"

        start = time.perf_counter()
        full = update_tokens([all_files], tokenizer, ArtifactStore(work / "full"), configs, options, timed_stages("full"))
        full_s = time.perf_counter() - start

        incremental_store = ArtifactStore(work / "incremental")
        update_tokens([old], tokenizer, incremental_store, configs, options)
        shutil.copy(warcs[-1], old)
        start = time.perf_counter()
        after = update_tokens([old], tokenizer, incremental_store, configs, options, timed_stages("incremental"))
        incremental_s = time.perf_counter() - start

        same = [p.read_bytes() for p in sorted(full["tokenize"].path.glob("part-*.parquet"))] == \
               [p.read_bytes() for p in sorted(after["tokenize"].path.glob("part-*.parquet"))]
        result = {"warc_files": len(warcs), "new_files": 1, "full_s": round(full_s, 2), "incremental_s": round(incremental_s, 2),
                  "ratio": round(incremental_s / full_s, 3), "token_parts_identical": same, "per_stage_s": timings}
        print(f"full run over {len(warcs)} files: {full_s:.1f} s; one new file: {incremental_s:.1f} s "
              f"({100 * incremental_s / full_s:.0f}% of the full run); token parts identical: {same}")
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
