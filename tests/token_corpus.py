"""A real token artifact for the loader and training tests, built in seconds: Jane Austen's
paragraphs (tests/fixtures/dedup), the project's byte-level BPE trained on them (special tokens
last), and parts written with pyarrow in the token
artifact's schema (id, split, n_tokens, tokens list<uint16>)."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.tokenizer import SPECIAL_TOKENS  # noqa: F401 - the last ids of every tokenizer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "dedup" / "austen_paragraphs.txt.gz"
TOKEN_SCHEMA = pa.schema([("id", pa.string()), ("split", pa.string()), ("n_tokens", pa.int32()),
                          ("tokens", pa.list_(pa.uint16())), ("source", pa.string())])


def austen_documents() -> list[tuple[str, str]]:
    """(id, text) of the 720 paragraphs, in file order."""
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    return [(f"{novel}-{i:04d}", text) for i, (novel, text) in enumerate(lines)]


def split_of(doc_id: str, val_percent: int = 10) -> str:
    return "val" if int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) % 100 < val_percent else "train"


def train_tokenizer(texts: list[str], path: Path, vocab_size: int = 512) -> Path:
    """The project's own tokenizer (rustbpe's trainer, HF format), small, on the given texts."""
    from pipeline.tokenizer import train_bpe

    train_bpe(texts, vocab_size).save(str(path))
    return path


def build_token_artifact(folder: Path, parts: int = 3, row_group_docs: int = 16, vocab_size: int = 512,
                         repeat: int = 1, val_percent: int = 10) -> Path:
    """A folder with part-NNNNN.parquet + tokenizer.json; `repeat` copies the corpus (new ids)."""
    from tokenizers import Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    docs = austen_documents()
    tokenizer = Tokenizer.from_file(str(train_tokenizer([t for _, t in docs], folder / "tokenizer.json", vocab_size)))
    encoded = [e.ids for e in tokenizer.encode_batch([t for _, t in docs])]
    rows = [(f"{doc_id}#{r}", ids) for r in range(repeat) for (doc_id, _), ids in zip(docs, encoded)]
    per_part = -(-len(rows) // parts)
    for p in range(parts):
        chunk = rows[p * per_part:(p + 1) * per_part]
        table = pa.table({
            "id": [i for i, _ in chunk],
            "split": [split_of(i, val_percent) for i, _ in chunk],
            "n_tokens": pa.array([len(t) for _, t in chunk], pa.int32()),
            "tokens": pa.array([t for _, t in chunk], pa.list_(pa.uint16())),
            "source": ["austen"] * len(chunk),
        }, schema=TOKEN_SCHEMA)
        pq.write_table(table, folder / f"part-{p:05d}.parquet", row_group_size=row_group_docs, compression="zstd")
    return folder
