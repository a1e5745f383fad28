"""Streaming loader: token parts (Parquet) → fixed-length training sequences, resumable.

The unit of work is one Parquet *row group* (at most 1024 documents in a token artifact). Only
the `tokens` and `split` columns of one row group are read at a time, so memory is one row group
plus one batch, whatever the size of the dataset.

Order. The row groups of all files form a list of units (file order, then row-group order). Each
epoch visits them in a permutation drawn from `numpy.random.default_rng([seed, epoch])`; inside a
row group the documents keep their stored order. Unit i of that permutation belongs to rank
`i % world_size`, so the ranks of a run split every epoch between them and together read every
document exactly once per epoch.

Packing (the boundary policy). A rank's documents, in that order, each followed by `eot_id`, form
one endless token stream (epochs follow each other in it when `loop=True`). A batch is the next
`batch_size * seq_len + 1` tokens of that stream: x is the first `batch_size * seq_len` of them as
(batch_size, seq_len) rows and y the same shifted by one; the next batch starts at the last
token of this one (nanoGPT's packing). So sequences cross document (and row-group and epoch)
boundaries, no token is padded, truncated or skipped, and every token is a target exactly once.
Attention is not reset at a separator: the model learns to read `<|endoftext|>` as "new document".
With `loop=False` (validation) the stream ends after one epoch: the last batch may have fewer
rows, and a final remainder shorter than one row (< seq_len + 1 tokens) is not yielded.

State. `state_dict()` is the position of the next batch's first token: epoch, the index of the
unit in this rank's share of that epoch's order, the row inside the row group, and the token
offset inside that document (the separator being its last token), plus the settings that make
these numbers meaningful. A fresh stream given that state yields exactly the batches that the
uninterrupted stream would have yielded next.

No pickle and no framework: pyarrow, numpy and torch only."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

EOT_TOKEN = "<|endoftext|>"
READ_COLUMNS = ("tokens", "split")
STATE_VERSION = 1


class DataError(ValueError):
    """Input that cannot be streamed; the message names the file and what is wrong."""


class _Unit:
    """One row group, decoded for one split: its documents' tokens each followed by the separator."""

    __slots__ = ("epoch", "index", "tokens", "starts", "rows")

    def __init__(self, epoch: int, index: int, tokens: np.ndarray, starts: np.ndarray, rows: np.ndarray):
        self.epoch, self.index = epoch, index
        self.tokens = tokens  # int64, documents of this split, separator after each
        self.starts = starts  # where each document starts in `tokens`
        self.rows = rows      # its row number in the row group


def read_unit_tokens(parquet: pq.ParquetFile, row_group: int, split: str, eot_id: int, path: Path = None):
    """The documents of `split` in one row group as (tokens with separators, starts, row numbers)."""
    try:
        names = parquet.schema_arrow.names
        table = parquet.read_row_group(row_group, columns=[c for c in READ_COLUMNS if c in names])
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's input problem
        raise DataError(f"{path}: row group {row_group} is not readable ({str(exc).splitlines()[0]})") from None
    tokens = table.column("tokens").combine_chunks()
    if isinstance(tokens, pa.ChunkedArray):  # pyarrow < 15 keeps one chunk as a ChunkedArray
        tokens = pa.concat_arrays(tokens.chunks) if tokens.num_chunks else pa.array([], tokens.type)
    n_rows = len(tokens)
    offsets = tokens.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    values = tokens.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]] if n_rows else np.empty(0, np.int64)
    if "split" in table.column_names:
        selected = pc.fill_null(pc.equal(table.column("split"), pa.scalar(split, pa.string())), False).to_numpy(zero_copy_only=False)
    else:  # parts without a split column are all training data
        selected = np.full(n_rows, split == "train")
    rows = np.flatnonzero(selected)
    if len(rows) < n_rows:
        values = values[np.repeat(selected, lengths)]
    doc_lengths = lengths[rows] + 1  # each document, then the separator
    ends = np.cumsum(doc_lengths)
    starts = ends - doc_lengths
    out = np.full(int(ends[-1]) if len(ends) else 0, eot_id, dtype=np.int64)
    keep = np.ones(len(out), dtype=bool)
    keep[ends - 1] = False
    out[keep] = values
    return out, starts, rows


class TokenStream:
    """Packs documents of one split into (x, y) batches of shape (batch_size, seq_len); see module doc."""

    def __init__(self, files: Sequence[Path], seq_len: int, batch_size: int, eot_id: int, split: str = "train",
                 seed: int = 0, rank: int = 0, world_size: int = 1, loop: bool = True):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1 (got {seq_len}, {batch_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.files = [Path(f) for f in files]
        self.seq_len, self.batch_size, self.eot_id = int(seq_len), int(batch_size), int(eot_id)
        self.split, self.seed, self.rank, self.world_size, self.loop = split, int(seed), rank, world_size, loop
        self.units: list[tuple[int, int]] = []  # (file index, row group)
        for i, path in enumerate(self.files):
            try:
                parquet = pq.ParquetFile(path)
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
            if "tokens" not in parquet.schema_arrow.names:
                raise DataError(f"{path}: has no 'tokens' column (columns: {', '.join(parquet.schema_arrow.names)})")
            if not pa.types.is_list(parquet.schema_arrow.field("tokens").type) and \
                    not pa.types.is_large_list(parquet.schema_arrow.field("tokens").type):
                raise DataError(f"{path}: column 'tokens' is {parquet.schema_arrow.field('tokens').type}, not a list of ids")
            self.units.extend((i, g) for g in range(parquet.metadata.num_row_groups))
        self._open: tuple[int, pq.ParquetFile] | None = None
        self._epoch, self._unit, self._row, self._offset = 0, 0, 0, 0
        self._current: _Unit | None = None
        self._cursor = 0
        self._done = False

    # --------------------------------------------------------------------------- order and reading

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's units (indices into self.units) for an epoch, in visiting order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.units))
        return [int(u) for u in order[self.rank::self.world_size]]

    def _parquet(self, file_index: int) -> pq.ParquetFile:
        if self._open is None or self._open[0] != file_index:
            self._open = (file_index, pq.ParquetFile(self.files[file_index]))
        return self._open[1]

    def _load(self, epoch: int, position: int) -> _Unit:
        file_index, row_group = self.units[self.epoch_order(epoch)[position]]
        tokens, starts, rows = read_unit_tokens(self._parquet(file_index), row_group, self.split, self.eot_id,
                                                self.files[file_index])
        return _Unit(epoch, position, tokens, starts, rows)

    def _next_position(self, epoch: int, position: int) -> tuple[int, int] | None:
        """The unit after (epoch, position), or None where a finite stream ends."""
        share = len(self.epoch_order(epoch)) if self.units else 0
        if position + 1 < share:
            return epoch, position + 1
        if not self.loop:
            return None
        return epoch + 1, 0

    def _fill_current(self) -> bool:
        """Make `self._current[self._cursor]` the next token; False at the end of a finite stream."""
        empty_units = 0
        while self._current is None or self._cursor >= len(self._current.tokens):
            if self._current is not None:  # used up: go on to the next unit
                after = self._next_position(self._current.epoch, self._current.index)
                self._current = None
                if after is None:
                    self._done = True
                    return False
                self._epoch, self._unit, self._row, self._offset = after[0], after[1], 0, 0
            if self._done:
                return False
            if self._unit >= len(self.epoch_order(self._epoch)):  # this rank has no unit at all
                if not self.loop:
                    self._done = True
                    return False
                raise DataError(f"rank {self.rank} of {self.world_size} gets no row group of {len(self.units)} "
                                f"in {len(self.files)} file(s): fewer row groups than ranks")
            self._current = self._load(self._epoch, self._unit)
            k = int(np.searchsorted(self._current.rows, self._row, side="left"))
            self._cursor = int(self._current.starts[k]) + self._offset if k < len(self._current.rows) else \
                len(self._current.tokens)
            if len(self._current.tokens) == 0:
                empty_units += 1
                if self.loop and empty_units > max(1, len(self.epoch_order(self._epoch))):
                    raise DataError(f"no {self.split!r} documents for rank {self.rank} of {self.world_size} "
                                    f"in {len(self.files)} file(s)")
        return True

    def _take(self, out: np.ndarray, consume: bool) -> int:
        """Copy the next len(out) tokens into `out`; advance past them if `consume`. Returns the count."""
        filled = 0
        while filled < len(out):
            if not self._fill_current():
                break
            unit = self._current
            n = min(len(out) - filled, len(unit.tokens) - self._cursor)
            out[filled:filled + n] = unit.tokens[self._cursor:self._cursor + n]
            filled += n
            if not consume:
                break  # only peeks one token
            self._cursor += n
        return filled

    # --------------------------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.batch_size, self.seq_len
        buf = np.empty(B * T + 1, dtype=np.int64)
        got = self._take(buf[:B * T], consume=True)
        if got == B * T:
            got += self._take(buf[B * T:], consume=False)  # the last target; also starts the next batch
        rows = (got - 1) // T if got > 0 else 0
        if got < B * T + 1:
            self._done = True
            if rows == 0:
                raise StopIteration
            buf = buf[:rows * T + 1]
        x = torch.from_numpy(buf[:-1].reshape(rows if got < B * T + 1 else B, T).copy())
        y = torch.from_numpy(buf[1:].reshape(x.shape).copy())
        return x, y

    # ------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict:
        if self._current is not None and self._cursor < len(self._current.tokens):
            k = int(np.searchsorted(self._current.starts, self._cursor, side="right")) - 1
            epoch, unit = self._current.epoch, self._current.index
            row, offset = int(self._current.rows[k]), self._cursor - int(self._current.starts[k])
        elif self._current is not None:  # used up: the next unit, from its start
            after = self._next_position(self._current.epoch, self._current.index)
            epoch, unit, row, offset = (after[0], after[1], 0, 0) if after else (self._epoch + 1, 0, 0, 0)
        else:
            epoch, unit, row, offset = self._epoch, self._unit, self._row, self._offset
        return {"version": STATE_VERSION, "epoch": epoch, "unit": unit, "row": row, "offset": offset,
                "done": self._done, "split": self.split, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "units": len(self.units)}

    def load_state_dict(self, state: dict) -> None:
        mine = {"split": self.split, "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "units": len(self.units)}
        different = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if different:
            raise DataError("loader state is for another stream: " +
                            ", ".join(f"{k} {a!r} in the state vs {b!r} now" for k, (a, b) in different.items()))
        self._epoch, self._unit = int(state["epoch"]), int(state["unit"])
        self._row, self._offset = int(state["row"]), int(state["offset"])
        self._done = bool(state.get("done", False))
        if not self.loop and self._epoch > 0:
            self._done = True
        self._current, self._cursor = None, 0


def open_token_artifact(folder: str | Path) -> tuple[list[Path], Path, int, int]:
    """A tokenize artifact (or any folder of token parts with tokenizer.json beside them) →
    (part files, tokenizer path, vocab size, id of <|endoftext|>)."""
    from tokenizers import Tokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (expected a tokenize artifact)")
    manifest = folder / "manifest.json"
    if manifest.is_file():
        outputs = json.loads(manifest.read_text()).get("outputs", [])
        files = [folder / o["file"] for o in outputs if o["file"].endswith(".parquet")]
    else:
        files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise DataError(f"{folder}: no part-*.parquet token files")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{folder}: manifest lists missing files: {', '.join(missing[:3])}")
    tokenizer_path = folder / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise DataError(f"{folder}: no tokenizer.json beside the token parts")
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{tokenizer_path}: not a tokenizers JSON file ({str(exc).splitlines()[0]})") from None
    eot_id = tokenizer.token_to_id(EOT_TOKEN)
    if eot_id is None:
        raise DataError(f"{tokenizer_path}: has no {EOT_TOKEN} token")
    return files, tokenizer_path, tokenizer.get_vocab_size(), int(eot_id)


def unigram_entropy(files: Sequence[Path], eot_id: int, vocab_size: int, split: str = "train") -> tuple[float, int]:
    """Entropy in nats (the unit of the training loss) of the token frequencies of one split,
    separators included, and the number of tokens counted; streamed one row group at a time.
    A model that learned nothing but these frequencies has this cross-entropy."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.metadata.num_row_groups):
            tokens, _, _ = read_unit_tokens(parquet, group, split, eot_id, Path(path))
            counts += np.bincount(tokens, minlength=vocab_size)[:vocab_size]
    total = int(counts.sum())
    if total == 0:
        return float("nan"), 0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum()), total
