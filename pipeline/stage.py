"""What a stage is.

A *shard stage* maps each input file to one output file independently (ingest, extract, langid,
quality): its step is a function from an iterator of documents to an iterator of documents, in
the style of datatrove. Drops go through `ctx.drop(doc, reason)` so they are counted and can be
sampled. Execution (processes, caching, manifests, progress) lives in `pipeline.runner`.

A *global stage* (dedup) sees all its inputs at once and writes its artifact itself.

Both kinds may declare `references(config)`: files of other artifacts the stage reads besides its
inputs (a tokenizer.json, a checkpoint). Their digests enter every key, so a new tokenizer gives
new shard keys; the config field holding their path is a knob with `in_key=False`, because the
path does not name the output, its content does. `input_files(inputs)` replaces the default
expansion of `--input` items (Parquet/JSONL files, folders, artifacts) for stages whose input is
another kind of artifact (a checkpoint).
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa

from pipeline.documents import DOCUMENT_SUFFIXES, read_documents

MAX_FAULT_MESSAGES = 20  # per input file, kept in the manifest beside the counts
MAX_FAULT_WARNINGS = 5  # per input file and reason, printed; the rest are counted and summed up in one line

Step = Callable[[Iterator[dict], Any, "ShardContext"], Iterator[dict]]


class ShardContext:
    """What a step may report while it runs on one input file."""

    def __init__(self, source: Path, keep_rejects: int = 0, signal_columns: Sequence[str] = (), quiet: bool = False):
        self.source = source
        self.keep_rejects = keep_rejects
        self.quiet = quiet
        self.dropped: Counter = Counter()
        self.faults: Counter = Counter()
        self.fault_messages: list[str] = []
        self.shown: Counter = Counter()  # faults of the current file printed, by reason
        self.unshown: Counter = Counter()  # and those counted but not printed
        self.skipped: Counter = Counter()
        self.rejects: list[dict] = []
        self.signal_columns = tuple(signal_columns)
        self.signals: dict[str, list] = {c: [] for c in self.signal_columns}
        self.extra: Counter = Counter()
        self.position = 0  # bytes of the input consumed, for progress by size

    def drop(self, doc: dict, reason: str) -> None:
        self.dropped[reason] += 1
        self.record_signals(doc)
        if self.dropped[reason] <= self.keep_rejects:
            self.rejects.append({"id": str(doc.get("id", "")), "reason": reason, "text": _preview(doc)})

    def fault(self, reason: str, message: str) -> None:
        """A part of the input could not be read: one line to stderr, counted by reason."""
        self.faults[reason] += 1
        if len(self.fault_messages) < MAX_FAULT_MESSAGES:
            self.fault_messages.append(message)
        if self.quiet:
            return
        if self.shown[reason] < MAX_FAULT_WARNINGS:
            self.shown[reason] += 1
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            self.unshown[reason] += 1

    def end_of_file(self, name: str | None = None) -> None:
        """After the last fault of a file: one line for the warnings that were not printed."""
        for reason, count in sorted(self.unshown.items()):
            print(f"warning: {name or self.source.name}: and {count} more like this ({reason}; all counted in the manifest)",
                  file=sys.stderr, flush=True)
        self.shown.clear()  # a context reused for the next file (dedup) starts afresh
        self.unshown.clear()

    def skip(self, reason: str) -> None:
        """Input that is not a document for this stage (e.g. a WARC request record): counted only."""
        self.skipped[reason] += 1

    def record_signals(self, doc: dict) -> None:
        for column in self.signal_columns:
            value = doc.get(column)
            self.signals[column].append(float(value) if isinstance(value, (int, float)) else float("nan"))


def _preview(doc: dict, limit: int = 2000) -> str:
    text = doc.get("text")
    if isinstance(text, str):
        return text[:limit]
    html = doc.get("html")
    if isinstance(html, (bytes, bytearray)):
        return bytes(html[:limit]).decode("utf-8", "replace")
    return ""


def read_document_shard(path: Path, config: Any, ctx: ShardContext) -> Iterator[dict]:
    yield from read_documents(path, ctx.fault)  # which ends the file's capped warnings itself


def no_references(config: Any) -> list[Path]:
    return []  # a module-level function, not a lambda: stages are pickled into worker processes


@dataclass(frozen=True)
class ShardStage:
    name: str
    version: str  # bump when the step's output changes for the same input and config
    config_cls: type
    step: Step
    description: str
    added_fields: tuple[pa.Field, ...] = ()
    removed_columns: tuple[str, ...] = ()
    read: Callable[[Path, Any, ShardContext], Iterator[dict]] = read_document_shard
    input_suffixes: tuple[str, ...] = DOCUMENT_SUFFIXES
    bytes_in_column: str = "text"
    bytes_out_column: str = "text"
    progress_by_bytes: bool = False  # WARC inputs: show progress over input size
    # (column, name of the config field holding its threshold or None) for report histograms
    signals: tuple[tuple[str, str | None], ...] = ()
    references: Callable[[Any], list[Path]] = no_references
    input_files: Callable[[Sequence], list[Path]] | None = None
    # Set for stages that carry only some input columns (tokenize keeps id/url/language/source).
    kept_columns: tuple[str, ...] | None = None
    # Added fields whose type depends on the config (token ids: uint16 or uint32 by vocabulary).
    config_fields: Callable[[Any], tuple[pa.Field, ...]] | None = None
    # Files of other artifacts copied beside the data (tokenize: the tokenizer.json it used).
    side_files: Callable[[Any], dict[str, Path]] | None = None
    write_batch_rows: int = 2048  # rows per Parquet row group
    # Extra manifest figures computed from the summed stats (tokenize: tokens per split and per byte).
    summarize: Callable[[dict], dict] | None = None
    kind: str = field(default="shard", init=False)

    def fields_added(self, config: Any = None) -> tuple[pa.Field, ...]:
        extra = self.config_fields(config) if self.config_fields is not None and config is not None else ()
        return tuple(self.added_fields) + tuple(extra)

    def output_schema(self, input_schema: pa.Schema | None, config: Any = None) -> pa.Schema | None:
        """Input columns, less the removed ones, plus the added ones. Without an input schema
        (WARC, JSONL) a source stage defines every column; otherwise the first batch decides."""
        added = self.fields_added(config)
        if input_schema is None:
            return pa.schema(added) if self.input_suffixes != DOCUMENT_SUFFIXES else None
        replaced = {f.name for f in added} | set(self.removed_columns)
        carried = [f for f in input_schema if f.name not in replaced
                   and (self.kept_columns is None or f.name in self.kept_columns)]
        return pa.schema(carried + list(added))


@dataclass(frozen=True)
class GlobalStage:
    """A stage that needs every input at once. `run(files, config, out_dir, against=...)` writes
    its files into `out_dir` and returns ([(data file, rows)], stats, {side file name: path})."""

    name: str
    version: str
    config_cls: type
    run: Callable[..., tuple]
    description: str
    input_suffixes: tuple[str, ...] = DOCUMENT_SUFFIXES
    # `--against` paths → the files whose digests enter the key (e.g. earlier dedup indexes)
    resolve_against: Callable[[Sequence], list[Path]] | None = None  # None: the stage takes no --against
    references: Callable[[Any], list[Path]] = no_references
    input_files: Callable[[Sequence], list[Path]] | None = None
    # True: `run` also gets `shards=`, a runner.ShardCache for per-input caching (dedup)
    cached_shards: bool = False
    kind: str = field(default="global", init=False)
