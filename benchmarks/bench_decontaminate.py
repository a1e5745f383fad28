"""What decontamination costs: building the 13-gram set of a training corpus and looking up
evaluation texts in it (pipeline/decontaminate.py), one process, one thread.

    .venv/bin/python benchmarks/bench_decontaminate.py --train TOKENIZE_ARTIFACT [--repeat 8] \\
        [--queries 2000] [--out benchmarks/decontaminate_results.json]

The training side is the artifact's train split, decoded (what the evaluate stage reads), repeated
`--repeat` times with each copy's words shifted by a copy number so the n-grams are new (a corpus
`repeat` times larger, not the same n-grams again). Queries are paragraphs of the val split, cut
to the length of a benchmark item (about 40 words). Printed and written: MB of training text per
second, the distinct n-grams and the memory they take, and lookups per second."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, required=True, help="A tokenize artifact.")
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from model.benchmarks import read_held_out_documents
    from pipeline.decontaminate import NGRAM, TrainingNgrams, contaminated

    started = time.perf_counter()
    base = [text for _, text in read_held_out_documents([args.train], split="train")]
    decode_seconds = time.perf_counter() - started
    corpus = [text if copy == 0 else " ".join(f"{w}{copy}" for w in text.split())
              for copy in range(args.repeat) for text in base]
    megabytes = sum(len(t.encode("utf-8")) for t in corpus) / 1e6
    training = TrainingNgrams(corpus)
    words = [w for _, text in read_held_out_documents([args.train], split="val") for w in text.split()]
    queries = [" ".join(words[i:i + 40]) for i in range(0, max(len(words) - 40, 1), 40)]
    queries = (queries * (args.queries // max(len(queries), 1) + 1))[:args.queries]
    found = contaminated(training, queries)
    result = {"training_documents": training.documents, "training_mb": round(megabytes, 1),
              "decode_seconds_per_copy": round(decode_seconds, 2), "build_seconds": round(training.build_seconds, 2),
              "build_mb_per_s": round(megabytes / training.build_seconds, 1), "ngram": NGRAM,
              "distinct_ngrams": int(len(training.hashes)), "set_mb": round(training.hashes.nbytes / 1e6, 1),
              "queries": len(queries), "query_seconds": round(found.seconds, 3),
              "queries_per_s": round(len(queries) / found.seconds), "contaminated_share": round(found.summary()["share"], 3),
              "command": "benchmarks/bench_decontaminate.py " + " ".join(sys.argv[1:])}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
