"""Streaming loader (model/data.py): tokens/s delivered and memory held, against the size of the data.

    .venv/bin/python benchmarks/bench_loader.py                 # ~2 min; prints a JSON line per size and buffer
    .venv/bin/python benchmarks/bench_loader.py --copies 4 16 64 --shuffle-tokens 0 1048576

Data: Jane Austen's 720 paragraphs (tests/fixtures), tokenized by a BPE trained on them with HF
tokenizers (vocab 4096), copied `--copies` times into token parts in the tokenize artifact's
schema with 1024-document row groups. For each size one process (so memory figures are its own)
streams the whole train split in (32 × 1024)-token batches, gpt2-124m's micro-batch, through a
shuffle buffer of `--shuffle-tokens` (0: stored order, no buffer), and reports tokens/s and the
growth of its peak RSS while streaming: it follows the buffer (4 bytes a token) until the data is
larger than the buffer, then stays flat whatever the size of the data. A GPU trainer needs ~0.5M tokens/s
(llm.c's GPT-2 small on one H100), so the loader must be far above that, and its memory must not
grow with the data."""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def measure(folder: str, batch: int, seq_len: int, shuffle_tokens: int) -> dict:
    from model.data import TokenStream, open_token_artifact

    files, _, _, eot = open_token_artifact(folder)
    stream = TokenStream(files, seq_len, batch, eot, split="train", loop=False, shuffle_tokens=shuffle_tokens)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tokens, started = 0, time.perf_counter()
    for x, _ in stream:
        tokens += x.numel()
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"tokens": tokens, "seconds": round(elapsed, 3), "tokens_per_s": round(tokens / elapsed),
            "units": len(stream.units), "rss_growth_mb": round((peak - before) / 1024, 1),
            "data_mb_as_int64": round(tokens * 8 / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--shuffle-tokens", type=int, nargs="+", default=[0, 1 << 22, 1 << 24])
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.batch, args.seq_len, args.shuffle_tokens[0])))
        return
    from token_corpus import build_token_artifact

    with tempfile.TemporaryDirectory() as tmp:
        for copies in args.copies:
            folder = build_token_artifact(Path(tmp) / f"x{copies}", parts=4, row_group_docs=1024, vocab_size=4096,
                                          repeat=copies, val_percent=3)
            for shuffle_tokens in args.shuffle_tokens:
                out = subprocess.run([sys.executable, __file__, "--measure", str(folder), "--batch", str(args.batch),
                                      "--seq-len", str(args.seq_len), "--shuffle-tokens", str(shuffle_tokens)],
                                     capture_output=True, text=True, check=True)
                result = json.loads(out.stdout) | {"copies": copies, "shuffle_tokens": shuffle_tokens,
                                                    "batch": args.batch, "seq_len": args.seq_len,
                                                    "python": platform.python_version()}
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
