"""Tokenizer training and tokenization speed, side by side on the same corpus.

    .venv/bin/python benchmarks/bench_tokenizer.py [--vocab 32768] [--mb 60] [--out benchmarks/tokenizer_results.json]

Corpus: real text written by people, from Debian packages fetched with `apt-get download` (cached
under benchmarks/data/): the Debian Administrator's Handbook in 26 languages (HTML → main text
with our extractor) and the Python 3.11 documentation sources (reST). Repeated to --mb megabytes.

1. Training, vocab --vocab, all cores for every trainer (each parallelises internally):
   - rustbpe alone (`train_from_iterator` on the texts, GPT-4 split): the reference;
   - ours: `pipeline.tokenizer.train_bpe` (rustbpe + export of its merges to a tokenizer.json);
   - ours as the stage (`train-tokenizer` on a Parquet file: reading, sampling, report);
   - Hugging Face `tokenizers` BpeTrainer with the same split and byte-level alphabet.
2. Tokenizing, one core: bare `Tokenizer.encode_batch_fast` on the texts in memory vs the
   `tokenize` stage with one worker on the same texts in Parquet (reading, splitting, writing).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO / "benchmarks" / "data"
PACKAGES = ("debian-handbook", "python3.11-doc")


def corpus_texts() -> list[str]:
    cache = DATA / "tokenizer_corpus.jsonl"
    if cache.exists():
        return [json.loads(line)["text"] for line in cache.open()]
    DATA.mkdir(parents=True, exist_ok=True)
    unpacked = DATA / "debs"
    if not unpacked.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, check=True, capture_output=True)
            for deb in Path(tmp).glob("*.deb"):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    from pipeline.html_text import ExtractLimits, html_to_text

    texts = []
    for page in sorted((unpacked / "usr/share/doc/debian-handbook/html").rglob("*.html")):
        text, reason, _ = html_to_text(page.read_bytes(), "text/html", ExtractLimits())
        if reason is None:
            texts.append(text)
    for source in sorted((unpacked / "usr/share/doc/python3.11/html/_sources").rglob("*.txt")):
        texts.append(source.read_text(errors="replace"))
    with cache.open("w") as f:
        for text in texts:
            f.write(json.dumps({"text": text}) + "\n")
    return texts


def sized(texts: list[str], megabytes: float) -> list[str]:
    out, size, target = [], 0, megabytes * 1e6
    while size < target:
        for text in texts:
            out.append(text)
            size += len(text.encode())
            if size >= target:
                break
    return out


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def train_rustbpe(texts, vocab):
    import rustbpe

    from pipeline.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), vocab - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    return trainer


def train_hf(texts, vocab):
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    from pipeline.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN

    tokenizer = Tokenizer(BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--mb", type=float, default=60.0, help="corpus size for training, MB of UTF-8")
    parser.add_argument("--tokenize-mb", type=float, default=20.0, help="corpus size for the tokenize comparison")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "tokenizer_results.json")
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages import get_stage
    from pipeline.stages.tokenize import TokenizeConfig
    from pipeline.stages.train_tokenizer import TrainTokenizerConfig
    from pipeline.tokenizer import train_bpe
    from storage.store import ArtifactStore

    base = corpus_texts()
    texts = sized(base, args.mb)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus: {len(base)} documents, training on {megabytes:.1f} MB ({len(texts)} documents), vocab {args.vocab}, "
          f"{os.cpu_count()} cores", flush=True)
    results = {"corpus_mb": round(megabytes, 2), "documents": len(texts), "vocab": args.vocab, "cores": os.cpu_count(),
               "train_seconds": {}, "train_mb_per_s": {}}
    work = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    try:
        table = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
        pq.write_table(table, work / "corpus.parquet")
        stage_config = TrainTokenizerConfig(vocab_size=args.vocab, doc_max_chars=10**9, max_chars=10**12)
        contenders = {
            "rustbpe (reference)": lambda: train_rustbpe(texts, args.vocab),
            "ours: train_bpe → tokenizer.json": lambda: train_bpe(texts, args.vocab),
            "ours: train-tokenizer stage (Parquet in)": lambda: run_stage(
                get_stage("train-tokenizer"), [work / "corpus.parquet"], stage_config,
                ArtifactStore(work / f"store-{time.monotonic_ns()}"), RunOptions(progress=False)),
            "HF tokenizers BpeTrainer": lambda: train_hf(texts, args.vocab),
        }
        best = {name: float("inf") for name in contenders}
        for round_number in range(args.repeat):  # interleaved rounds: a busy moment hits every contender alike
            for name, fn in contenders.items():
                seconds, _ = timed(fn)
                best[name] = min(best[name], seconds)
                print(f"  round {round_number + 1}: {name:45s} {seconds:7.2f} s  {megabytes / seconds:6.2f} MB/s", flush=True)
        for name, seconds in best.items():
            results["train_seconds"][name] = round(seconds, 2)
            results["train_mb_per_s"][name] = round(megabytes / seconds, 2)
        reference = results["train_mb_per_s"]["rustbpe (reference)"]
        results["train_ratio_vs_rustbpe"] = {k: round(v / reference, 3) for k, v in results["train_mb_per_s"].items()}

        # Tokenizing, one core each.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        tokenizer = train_bpe(texts, args.vocab)
        tokenizer.save(str(work / "tokenizer.json"))
        token_texts = sized(base, args.tokenize_mb)
        pq.write_table(pa.table({"id": [f"t{i}" for i in range(len(token_texts))], "text": token_texts}),
                       work / "tokenize.parquet", row_group_size=1024)

        def bare():
            return sum(len(e.ids) for e in tokenizer.encode_batch_fast(token_texts, add_special_tokens=False))

        def stage():
            result = run_stage(get_stage("tokenize"), [work / "tokenize.parquet"], TokenizeConfig(tokenizer=str(work / "tokenizer.json")),
                               ArtifactStore(work / f"tok-{time.monotonic_ns()}"), RunOptions(workers=1, progress=False))
            return result.manifest["stats"]["tokens"]

        bare_s = stage_s = float("inf")
        for _ in range(args.repeat):
            seconds, bare_tokens = timed(bare)
            bare_s = min(bare_s, seconds)
            seconds, stage_tokens = timed(stage)
            stage_s = min(stage_s, seconds)
        assert bare_tokens == stage_tokens, (bare_tokens, stage_tokens)
        results["tokenize"] = {
            "mb": round(sum(len(t.encode()) for t in token_texts) / 1e6, 2), "tokens": bare_tokens,
            "bare_encode_batch_tokens_per_s": round(bare_tokens / bare_s), "stage_tokens_per_s": round(stage_tokens / stage_s),
            "ratio": round(bare_s / stage_s, 3),
        }
        print(f"tokenize, one core, {bare_tokens:,} tokens: bare encode_batch_fast {bare_tokens / bare_s:,.0f} tok/s, "
              f"stage {stage_tokens / stage_s:,.0f} tok/s ({bare_s / stage_s:.2f}x)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
