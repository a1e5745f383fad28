"""scratchlm's side of the benchmarks: one measurement per process, run by run_all.py.

    .venv/bin/python benchmarks/ours_tasks.py TASK [options]

Each task loads its input first (not timed), times only the work, and prints one line
`RESULT {json}` with at least `seconds` and `docs`. run_all.py pins the process to one core.

Tasks:
  prepare         the shared text inputs: our ingest -> extract -> langid into a cached store,
                  exported as JSONL for the datatrove side (not a measurement)
  make_sample     a WARC of every k-th response record, with payload types (not a measurement)
  ingest_extract  the ingest and extract stages as users run them (run_stage: worker process,
                  Parquet writing, manifests), into a fresh store
  bare_loop       the limit: FastWARC read + Resiliparse decode + extract, nothing else
  langid          the langid stage, or with --core the identify loop over texts in memory
  quality         the quality stage, or with --core the quality_reason loop in memory
  minhash         sketch_documents (normalise, exact hash, MinHash signatures) in memory;
                  with --stage the whole dedup stage (signatures + LSH + writing)
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.runner import RunOptions, run_stage  # noqa: E402
from pipeline.stages import get_stage  # noqa: E402
from storage.store import ArtifactStore, artifact_data_files  # noqa: E402

OPTIONS = RunOptions(workers=1, progress=False)


def result(**fields) -> None:
    print("RESULT " + json.dumps(fields), flush=True)


def warc_files(crawl: Path, files: int | None) -> list[Path]:
    found = sorted(crawl.glob("*.warc.gz"))
    return found[:files] if files else found


def read_column_rows(folder: Path, columns: list[str], every: int = 1) -> list[dict]:
    """The artifact's rows in order; with `every` k, rows 0, k, 2k, ... (the sample the
    datatrove side takes from the exported JSONL, which is in the same order)."""
    rows: list[dict] = []
    for path in artifact_data_files(folder):
        rows += pq.read_table(path, columns=columns).to_pylist()
    return rows[::every]


def sample_input(args, tmp: Path) -> Path:
    """The stage's input: the artifact itself, or its every-k-th rows as one Parquet file."""
    if args.every == 1:
        return args.artifact
    table = pa.concat_tables([pq.read_table(p) for p in artifact_data_files(args.artifact)])
    path = tmp / "sample.parquet"
    pq.write_table(table.take(list(range(0, len(table), args.every))), path)
    return path


# ------------------------------------------------------------------------------- shared inputs

def prepare(args) -> None:
    """Run our ingest -> extract -> langid once (cached in --store) and export the texts."""
    store = ArtifactStore(args.store)
    ingest = run_stage(get_stage("ingest"), warc_files(args.crawl, None), None, store, OPTIONS)
    extract = run_stage(get_stage("extract"), [ingest.path], None, store, OPTIONS)
    langid = run_stage(get_stage("langid"), [extract.path], None, store, OPTIONS)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = args.out / "exported-from.json"
    source = {"extract": extract.key, "langid": langid.key}
    if not stamp.exists() or json.loads(stamp.read_text()).get("source") != source:
        counts = {}
        for name, artifact, columns in (("extracted", extract, ["id", "text"]),
                                        ("english", langid, ["id", "text", "language"])):
            rows = read_column_rows(artifact.path, columns)
            with open(args.out / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[name] = len(rows)
        stamp.write_text(json.dumps({"source": source, "counts": counts}))
    counts = json.loads(stamp.read_text())["counts"]
    result(seconds=0.0, docs=counts["extracted"], english_docs=counts["english"],
           extract_artifact=str(extract.path), langid_artifact=str(langid.path),
           html_pages=ingest.manifest["stats"]["docs_out"])


def make_sample(args) -> None:
    """A WARC of every k-th response record of the crawl (HTML, CSS, images, 404s alike), each
    given the WARC-Identified-Payload-Type header that Common Crawl's WARCs carry (the HTTP
    Content-Type without parameters). wget writes no such header, so on the crawl itself
    datatrove's WarcReader sniffs every payload with libmagic, which calls the handbook's
    XHTML pages text/xml and skips them; with the header both systems see the same pages."""
    import gzip
    import io

    from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial")
    kept = seen = 0
    with open(partial, "wb") as out:
        for path in warc_files(args.crawl, None):
            with open(path, "rb") as stream:
                for record in ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=False):
                    seen += 1
                    if (seen - 1) % args.every:
                        continue
                    block = record.reader.read()
                    copy = WarcRecord()
                    copy.init_headers(record_type=WarcRecordType.response,
                                      record_urn=record.record_id.strip("<>").removeprefix("urn:").encode())
                    for name in ("WARC-Date", "WARC-Target-URI", "Content-Type"):
                        copy.headers[name] = record.headers.get(name)
                    copy.headers["WARC-Identified-Payload-Type"] = _http_mime(block)
                    copy.set_bytes_content(block)
                    buffer = io.BytesIO()
                    copy.write(buffer)
                    out.write(gzip.compress(buffer.getvalue()))  # one gzip member per record
                    kept += 1
    partial.replace(args.out)
    result(seconds=0.0, docs=kept, responses_in_crawl=seen, every=args.every)


def _http_mime(block: bytes) -> str:
    head = block.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            return value.split(";")[0].strip().lower() or "application/octet-stream"
    return "application/octet-stream"


# ------------------------------------------------------------------------------ ingest+extract

def ingest_extract(args) -> None:
    files = warc_files(args.crawl, args.files)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ours-", dir=args.tmp))
    try:
        store = ArtifactStore(tmp)
        start = time.perf_counter()
        ingest = run_stage(get_stage("ingest"), files, None, store, OPTIONS)
        middle = time.perf_counter()
        extract = run_stage(get_stage("extract"), [ingest.path], None, store, OPTIONS)
        end = time.perf_counter()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    istats, estats = ingest.manifest["stats"], extract.manifest["stats"]
    result(seconds=end - start, ingest_seconds=middle - start, extract_seconds=end - middle,
           docs=istats["docs_out"], html_pages=istats["docs_out"], texts=estats["docs_out"],
           extract_dropped=estats["dropped"], ingest_skipped=istats["skipped"], ingest_faults=istats["faults"],
           warc_files=len(files), warc_bytes=sum(f.stat().st_size for f in files))


def bare_loop(args) -> None:
    """What the libraries alone cost: no damage checks, no charset rules, no guards, no output.
    Same filter as our ingest (2xx responses with an HTML Content-Type) and the same extract
    options as pipeline/html_text.py, so the work per page is comparable."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    files = warc_files(args.crawl, args.files)
    pages = texts = 0
    start = time.perf_counter()
    for path in files:
        with open(path, "rb") as stream:
            for record in ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=True):
                http = record.http_headers
                if http is None or not 200 <= http.status_code < 300:
                    continue
                if "html" not in (http.get("Content-Type") or "").lower():
                    continue
                body = record.reader.read()
                pages += 1
                html = bytes_to_str(body, detect_encoding(body))
                text = extract_plain_text(HTMLTree.parse(html), preserve_formatting=True, main_content=True,
                                          list_bullets=True, alt_texts=False, links=False, form_fields=False,
                                          noscript=False, comments=False, post_meta=False)
                texts += bool(text.strip())
    result(seconds=time.perf_counter() - start, docs=pages, html_pages=pages, texts=texts)


# -------------------------------------------------------------------------- text stages / cores

def langid(args) -> None:
    if not args.core:
        return stage_task(args, "langid", "langid")
    from pipeline.langid import LangIdConfig, identify, language_decision

    rows = read_column_rows(args.artifact, ["id", "text"], args.every)
    texts = [r["text"] or "" for r in rows]
    config = LangIdConfig()
    identify(texts[:1])  # load the model outside the timing, as the stage's worker does once
    start = time.perf_counter()
    labels = identify(texts)
    kept = [language_decision(lang, round(score, 4), config) is None for lang, score in labels]
    seconds = time.perf_counter() - start
    if args.decisions:
        write_json(args.decisions, {r["id"]: [lang, score, keep] for r, (lang, score), keep in zip(rows, labels, kept)})
    result(seconds=seconds, docs=len(texts), kept=sum(kept), chars=sum(map(len, texts)))


def quality(args) -> None:
    if not args.core:
        return stage_task(args, "quality", "quality")
    from pipeline.quality import QualityConfig, quality_reason

    rows = read_column_rows(args.artifact, ["id", "text", "language"], args.every)
    config = QualityConfig()
    start = time.perf_counter()
    reasons = [quality_reason(r["text"] or "", r["language"] or "", config)[0] for r in rows]
    seconds = time.perf_counter() - start
    if args.decisions:
        write_json(args.decisions, {r["id"]: reason for r, reason in zip(rows, reasons)})
    result(seconds=seconds, docs=len(rows), kept=sum(r is None for r in reasons),
           chars=sum(len(r["text"] or "") for r in rows))


def minhash(args) -> None:
    if args.stage:
        return stage_task(args, "dedup", "minhash")
    from pipeline.dedup import DedupConfig, sketch_documents

    rows = read_column_rows(args.artifact, ["id", "text"], args.every)
    texts = [r["text"] or "" for r in rows]
    config = DedupConfig()
    sketch_documents(texts[:1], None, config)  # the per-process lookup tables, built once
    start = time.perf_counter()
    sketches = sketch_documents(texts, None, config)
    seconds = time.perf_counter() - start
    result(seconds=seconds, docs=len(texts), num_perm=int(sketches.signatures.shape[1]),
           chars=sum(map(len, texts)))


def stage_task(args, stage_name: str, label: str) -> None:
    """Time one stage as users run it, on the artifact given, into a fresh store."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{label}-", dir=args.tmp))
    try:
        source = sample_input(args, tmp)
        start = time.perf_counter()
        out = run_stage(get_stage(stage_name), [source], None, ArtifactStore(tmp / "store"), OPTIONS)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats = out.manifest["stats"]
    result(seconds=seconds, docs=stats["docs_in"], kept=stats["docs_out"], dropped=stats["dropped"])


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=["prepare", "make_sample", "ingest_extract", "bare_loop",
                                         "langid", "quality", "minhash"])
    parser.add_argument("--crawl", type=Path, help="Folder of .warc.gz files.")
    parser.add_argument("--files", type=int, default=None, help="Only the first N WARC files.")
    parser.add_argument("--artifact", type=Path, help="Input artifact folder (text stages).")
    parser.add_argument("--every", type=int, default=1, help="Text tasks: only every k-th document.")
    parser.add_argument("--core", action="store_true", help="Time the core function in memory, not the stage.")
    parser.add_argument("--stage", action="store_true", help="minhash: time the whole dedup stage.")
    parser.add_argument("--decisions", type=Path, help="Write per-document decisions here (JSON).")
    parser.add_argument("--store", type=Path, help="prepare: the cached store.")
    parser.add_argument("--out", type=Path, help="prepare: folder for the exported JSONL; make_sample: the WARC.")
    parser.add_argument("--tmp", type=Path, default=None, help="Where fresh stores go.")
    args = parser.parse_args()
    globals()[args.task](args)


if __name__ == "__main__":  # the runner's forkserver re-imports this module in its workers
    main()
