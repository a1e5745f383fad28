"""Stage `tokenize`: text → token ids, one Parquet part per input file, ready for pretraining.

Columns: `id`, `split` ("train" / "val"), `n_tokens`, `tokens` (list<uint16> when the vocabulary
fits in 16 bits, else list<uint32>) and the provenance columns `url`, `language`, `source` when the
input has them. The separator is not stored: the loader puts `<|endoftext|>` after each document.
The split is a hash of the id (xxh64 < val_fraction x 2^64): stable across runs, machines and
re-shardings, so a document added later never moves an earlier one between splits.
Row groups hold at most 1024 documents, so a streaming reader holds ~1 MB of tokens at a time.

The tokenizer (`--tokenizer`: a train-tokenizer artifact or any tokenizer.json) is a reference:
its digest is in every shard key, so a new tokenizer re-tokenizes everything, and an unchanged one
re-tokenizes only input files never seen (a new WARC's shard)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import xxhash

from pipeline.documents import read_documents, stage_inputs
from pipeline.errors import StageError
from pipeline.knobs import knob
from pipeline.stage import ShardContext, ShardStage
from pipeline.tokenizer import END_OF_TEXT
from storage.store import is_artifact

PROVENANCE_COLUMNS = ("url", "language", "source")
READ_COLUMNS = ("id", "text") + PROVENANCE_COLUMNS
ROW_GROUP_DOCS = 1024


@dataclass
class TokenizeConfig:
    tokenizer: str = knob("", "The tokenizer: a train-tokenizer artifact folder or a tokenizer.json file (required). "
                              "Its content, not its path, is part of every shard's key.", in_key=False)
    val_fraction: float = knob(0.03, "Fraction of documents in the validation split, chosen by a hash of the "
                                     "document id (stable across runs and machines).")
    batch_docs: int = knob(256, "Documents encoded per batch.", in_key=False)

    def check(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise StageError(f"tokenize: val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.batch_docs < 1:
            raise StageError(f"tokenize: batch_docs must be at least 1, got {self.batch_docs}")
        if self.tokenizer:  # empty: a flow fills it in from its train-tokenizer task; required when the stage runs
            tokenizer_file(self.tokenizer)


def tokenizer_file(spec: str) -> Path:
    """The tokenizer.json named by --tokenizer, checked to load and to have the separator."""
    if not spec:
        raise StageError("tokenize: --tokenizer is required (a train-tokenizer artifact or a tokenizer.json)")
    path = Path(spec)
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise StageError(f"{spec}: no tokenizer.json in this folder (expected a train-tokenizer artifact)")
        if not is_artifact(path):
            raise StageError(f"{spec}: an incomplete artifact (no manifest.json)")
        path = path / "tokenizer.json"
    elif not path.is_file():
        raise StageError(f"{spec}: no such tokenizer file or folder")
    return _checked_tokenizer(str(path.resolve()), path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _checked_tokenizer(path: str, mtime_ns: int) -> Path:
    try:
        token_id = _load_tokenizer(path).token_to_id(END_OF_TEXT)
    except Exception as exc:  # noqa: BLE001 - a user's file that is not a tokenizer
        raise StageError(f"{path}: not a tokenizers JSON file ({str(exc).splitlines()[0][:200]})") from None
    if token_id is None:
        raise StageError(f"{path}: the tokenizer has no {END_OF_TEXT} token (the document separator)")
    return Path(path)


@lru_cache(maxsize=2)
def _load_tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def token_type(vocab_size: int) -> pa.DataType:
    return pa.uint16() if vocab_size <= 2**16 else pa.uint32()


def _config_fields(config: TokenizeConfig) -> tuple[pa.Field, ...]:
    vocab_size = _load_tokenizer(str(tokenizer_file(config.tokenizer))).get_vocab_size()
    return (pa.field("split", pa.string()), pa.field("n_tokens", pa.int32()),
            pa.field("tokens", pa.list_(token_type(vocab_size))))


def is_validation(doc_id: str, val_fraction: float) -> bool:
    return xxhash.xxh64_intdigest(doc_id.encode("utf-8", "surrogatepass")) < val_fraction * 2**64


def read_text_shard(path: Path, config: TokenizeConfig, ctx: ShardContext) -> Iterator[dict]:
    """Only the columns that are kept: the quality signals and anything else beside the text are
    never decoded."""
    return read_documents(path, ctx.fault, batch_rows=ROW_GROUP_DOCS, columns=READ_COLUMNS)


def tokenize_documents(docs: Iterator[dict], config: TokenizeConfig, ctx: ShardContext) -> Iterator[dict]:
    # One worker process per core already: the tokenizer's own thread pool would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = _load_tokenizer(str(tokenizer_file(config.tokenizer)))
    while chunk := list(islice(docs, config.batch_docs)):
        encodings = tokenizer.encode_batch_fast([d["text"] for d in chunk], add_special_tokens=False)
        for doc, encoding in zip(chunk, encodings):
            ids = encoding.ids
            if not ids:
                ctx.drop(doc, "empty_text")
                continue
            split = "val" if is_validation(str(doc["id"]), config.val_fraction) else "train"
            ctx.extra[f"docs_{split}"] += 1
            ctx.extra[f"tokens_{split}"] += len(ids)
            ctx.extra[f"bytes_{split}"] += len(doc["text"].encode("utf-8", "surrogatepass"))
            out = {"id": str(doc["id"]), "split": split, "n_tokens": len(ids), "tokens": ids}
            for column in PROVENANCE_COLUMNS:
                if column in doc:
                    out[column] = doc[column]
            yield out


def split_totals(stats: dict) -> dict:
    """Documents, tokens and bytes per split, and tokens per byte, for the manifest."""
    extra = stats.get("extra", {})
    splits = {split: {measure: extra.get(f"{measure}_{split}", 0) for measure in ("docs", "tokens", "bytes")}
              for split in ("train", "val")}
    tokens = sum(s["tokens"] for s in splits.values())
    text_bytes = sum(s["bytes"] for s in splits.values())
    return {"splits": splits, "tokens": tokens, "tokens_per_byte": round(tokens / text_bytes, 4) if text_bytes else None}


def _side_files(config: TokenizeConfig) -> dict[str, Path]:
    return {"tokenizer.json": tokenizer_file(config.tokenizer)}


def _references(config: TokenizeConfig) -> list[Path]:
    return [tokenizer_file(config.tokenizer)]


STAGE = ShardStage(
    name="tokenize",
    version="1",
    config_cls=TokenizeConfig,
    step=tokenize_documents,
    read=read_text_shard,
    description="Text → token ids (Parquet: id, split, n_tokens, tokens, url, language, source) with the "
                "tokenizer of --tokenizer; a deterministic train/val split by a hash of id.",
    kept_columns=("id",) + PROVENANCE_COLUMNS,
    config_fields=_config_fields,
    side_files=_side_files,
    references=_references,
    bytes_out_column="",
    write_batch_rows=ROW_GROUP_DOCS,
    summarize=split_totals,
    input_files=stage_inputs("tokenize"),
)
