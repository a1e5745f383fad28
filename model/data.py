"""Streaming loader: token parts (Parquet) → (x, y) training batches whose rows come from all
over the corpus; resumable, memory bounded by a knob whatever the size of the data.

Why mix. A crawl is stored in crawl order: neighbouring documents are pages of one site in one
language. A loader that hands out the next B·T tokens of that stream makes every optimizer step
see one or two pages; on the demo's data that costs ~2 nats of validation loss at equal compute
(docs/pretraining.md has the figures). So order is mixed at three levels, each seeded:

1. Row groups (at most 1024 documents each in a token artifact) — the *units* — are visited in a
   permutation drawn per epoch from `numpy.random.default_rng([seed, epoch])`. Unit i of that
   permutation belongs to rank `i % world_size`: the ranks split every epoch between them and
   together read every document exactly once per epoch.
2. Inside a unit, the documents of the split are put in a permutation drawn per (seed, epoch,
   unit). A rank's documents in that order, each followed by `eot_id`, form one endless token
   stream (epochs follow each other when `loop=True`).
3. The stream is cut into windows of T+1 tokens with stride T (window k = tokens kT … kT+T: its
   first T are x, its last T are y, so every token after the first is a target exactly once).
   Windows are read `shuffle_tokens // T` at a time into a *shuffle buffer* and handed out in a
   permutation drawn per (seed, rank, buffer number); a batch is the next `batch_size` windows.

With `shuffle_tokens` at least one epoch of a rank's data, this is a full shuffle of the
epoch's windows; on a larger corpus a batch draws from `shuffle_tokens` worth of randomly chosen
row groups, and consecutive buffers from other ones. `shuffle_tokens=0` turns mixing off (stored
document order, consecutive windows: nanoGPT's contiguous packing), for comparisons.

Sequences cross document (and row-group and epoch) boundaries; no token is padded, truncated or
skipped. Attention is not reset at a separator: the model learns to read `<|endoftext|>` as
"new document". With `loop=False` (validation) the stream ends after one epoch: the last batch
may have fewer rows, and a final remainder shorter than one row (< T+1 tokens) is not yielded.

Memory: one row group being decoded plus the buffer (`shuffle_tokens` int32 tokens: 64 MiB at
the default 16M), whatever the size of the dataset.

State. `state_dict()` is a few integers: where the current buffer starts in the stream (epoch,
the unit's index in this rank's share of that epoch, the document's index in the unit's order,
the token offset inside it), the buffer's number and how many of its windows were handed out,
plus the settings that give these numbers their meaning. A fresh stream given that state re-reads
that one buffer and yields exactly the batches the uninterrupted stream would have yielded next.

No pickle and no framework: pyarrow, numpy and torch only."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from model.special_tokens import EOT_TOKEN

READ_COLUMNS = ("tokens", "split")
STATE_VERSION = 2
SHUFFLE_TOKENS = 1 << 24  # the default shuffle buffer: 16M tokens, 64 MiB as int32


class DataError(ValueError):
    """Input that cannot be streamed; the message names the file and what is wrong."""


def read_unit_tokens(parquet: pq.ParquetFile, row_group: int, split: str, eot_id: int, path: Path = None):
    """The documents of `split` in one row group, in stored order, as (tokens with a separator
    after each document, where each document starts in them, their row numbers)."""
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


def reorder_documents(tokens: np.ndarray, starts: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documents (each with its separator) of `tokens` in `order`: (tokens, new starts)."""
    lengths = np.diff(np.append(starts, len(tokens)))[order]
    new_starts = np.cumsum(lengths) - lengths
    index = np.repeat(starts[order] - new_starts, lengths) + np.arange(int(lengths.sum()))
    return tokens[index], new_starts


_NO_TOKENS = np.empty(0, np.int64)


class _Unit:
    """One row group, decoded for one split, its documents in this epoch's order."""

    __slots__ = ("epoch", "index", "tokens", "starts")

    def __init__(self, epoch: int, index: int, tokens: np.ndarray, starts: np.ndarray):
        self.epoch, self.index = epoch, index
        self.tokens = tokens  # int64, documents of this split, separator after each
        self.starts = starts  # where each document starts in `tokens`


def _position_in(unit: _Unit, cursor: int) -> tuple[int, int, int, int]:
    """(epoch, unit index, document, offset) of the token at `cursor` of a decoded unit."""
    doc = int(np.searchsorted(unit.starts, cursor, side="right")) - 1
    return unit.epoch, unit.index, doc, cursor - int(unit.starts[doc])


class TokenStream:
    """(x, y) batches of shape (batch_size, seq_len) of one split, mixed as the module doc says."""

    def __init__(self, files: Sequence[Path], seq_len: int, batch_size: int, eot_id: int, split: str = "train",
                 seed: int = 0, rank: int = 0, world_size: int = 1, loop: bool = True,
                 shuffle_tokens: int = SHUFFLE_TOKENS):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1 (got {seq_len}, {batch_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if shuffle_tokens < 0:
            raise ValueError(f"shuffle_tokens must not be negative (got {shuffle_tokens})")
        self.files = [Path(f) for f in files]
        self.seq_len, self.batch_size, self.eot_id = int(seq_len), int(batch_size), int(eot_id)
        self.split, self.seed, self.rank, self.world_size, self.loop = split, int(seed), rank, world_size, loop
        self.shuffle_tokens = int(shuffle_tokens)
        # windows per buffer: at least one batch's worth, so that a batch never waits on two reads
        self.buffer_windows = max(self.batch_size, self.shuffle_tokens // self.seq_len) if self.shuffle else self.batch_size
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
        self._orders: dict[int, list[int]] = {}
        # the token stream's read position: (epoch, unit, doc, offset) of the next token
        self._epoch, self._unit, self._doc, self._offset = 0, 0, 0, 0
        self._current: _Unit | None = None
        self._cursor = 0
        self._ended = False  # a finite stream has no more tokens
        # the shuffle buffer: its windows' tokens, their order, where it started, its number
        self._buffer: np.ndarray | None = None
        self._order = np.empty(0, np.int64)
        self._window = 0
        self._buffer_start = (0, 0, 0, 0)
        self._buffer_index = 0
        self._pending_window: int | None = None  # set by load_state_dict: windows of the re-read buffer to skip
        self._done = False

    @property
    def shuffle(self) -> bool:
        return self.shuffle_tokens > 0

    # --------------------------------------------------------------------------- order and reading

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's units (indices into self.units) for an epoch, in visiting order."""
        if epoch not in self._orders:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.units))
            self._orders = {epoch: [int(u) for u in order[self.rank::self.world_size]]}  # keep one epoch's
        return self._orders[epoch]

    def document_order(self, epoch: int, unit: int, n_docs: int) -> np.ndarray:
        """The order of a unit's `n_docs` documents of this split in an epoch (`unit` indexes self.units)."""
        if not self.shuffle:
            return np.arange(n_docs)
        return np.random.default_rng([self.seed, epoch, unit, 1]).permutation(n_docs)

    def _parquet(self, file_index: int) -> pq.ParquetFile:
        if self._open is None or self._open[0] != file_index:
            self._open = (file_index, pq.ParquetFile(self.files[file_index]))
        return self._open[1]

    def _load(self, epoch: int, position: int) -> _Unit:
        unit = self.epoch_order(epoch)[position]
        file_index, row_group = self.units[unit]
        tokens, starts, _ = read_unit_tokens(self._parquet(file_index), row_group, self.split, self.eot_id,
                                             self.files[file_index])
        if self.shuffle and len(starts) > 1:
            tokens, starts = reorder_documents(tokens, starts, self.document_order(epoch, unit, len(starts)))
        return _Unit(epoch, position, tokens, starts)

    def _next_position(self, epoch: int, position: int) -> tuple[int, int] | None:
        """The unit after (epoch, position), or None where a finite stream ends."""
        if position + 1 < len(self.epoch_order(epoch)):
            return epoch, position + 1
        if not self.loop:
            return None
        return epoch + 1, 0

    def _fill_current(self) -> bool:
        """Make `self._current.tokens[self._cursor]` the next token; False at the end of a finite stream."""
        empty_units = 0
        while self._current is None or self._cursor >= len(self._current.tokens):
            if self._current is not None:  # used up: go on to the next unit
                after = self._next_position(self._current.epoch, self._current.index)
                self._current = None
                if after is None:
                    self._epoch, self._unit, self._doc, self._offset = self._epoch + 1, 0, 0, 0
                    self._ended = True
                    return False
                self._epoch, self._unit, self._doc, self._offset = after[0], after[1], 0, 0
            if self._ended:
                return False
            if self._unit >= len(self.epoch_order(self._epoch)):  # this rank has no unit at all
                if not self.loop:
                    self._ended = True
                    return False
                raise DataError(f"rank {self.rank} of {self.world_size} gets no row group of {len(self.units)} "
                                f"in {len(self.files)} file(s): fewer row groups than ranks")
            self._current = self._load(self._epoch, self._unit)
            starts = self._current.starts
            self._cursor = int(starts[self._doc]) + self._offset if self._doc < len(starts) else \
                len(self._current.tokens)
            if len(self._current.tokens) == 0:
                empty_units += 1
                if self.loop and empty_units > max(1, len(self.epoch_order(self._epoch))):
                    raise DataError(f"no {self.split!r} documents for rank {self.rank} of {self.world_size} "
                                    f"in {len(self.files)} file(s)")
        return True

    def _read(self, n: int, min_tokens: int) -> tuple[np.ndarray, list[tuple]]:
        """Consume up to n tokens of the stream, stopping early at the end of an epoch once at least
        `min_tokens` were read (and where a finite stream ends). Returns the tokens and where each
        piece of them came from: [(index in the result, unit's position, cursor in the unit)], the
        position an empty _Unit (epoch, index, starts) so that the units' tokens are not kept."""
        out = np.empty(n, dtype=np.int32)  # the buffer's type: half the memory of int64
        pieces: list[tuple[int, _Unit, int]] = []
        filled = 0
        while filled < n and self._fill_current():
            unit = self._current
            if pieces and unit.epoch != pieces[-1][1].epoch and filled >= min_tokens:
                break  # a buffer holds one epoch's windows (the first may start in the epoch before)
            k = min(n - filled, len(unit.tokens) - self._cursor)
            if not pieces or pieces[-1][1].index != unit.index or pieces[-1][1].epoch != unit.epoch:
                pieces.append((filled, _Unit(unit.epoch, unit.index, _NO_TOKENS, unit.starts), self._cursor))
            out[filled:filled + k] = unit.tokens[self._cursor:self._cursor + k]
            filled += k
            self._cursor += k
        return out[:filled], pieces

    def _read_position(self) -> tuple[int, int, int, int]:
        """(epoch, unit, doc, offset) of the stream's next token."""
        if self._current is not None and self._cursor < len(self._current.tokens):
            return _position_in(self._current, self._cursor)
        if self._current is not None:  # used up: the next unit, from its start
            after = self._next_position(self._current.epoch, self._current.index)
            return (after[0], after[1], 0, 0) if after else (self._current.epoch + 1, 0, 0, 0)
        return self._epoch, self._unit, self._doc, self._offset

    def _seek(self, position: tuple[int, int, int, int]) -> None:
        self._epoch, self._unit, self._doc, self._offset = (int(v) for v in position)
        self._current, self._cursor = None, 0
        self._ended = not self.loop and self._epoch > 0

    def _fill_buffer(self) -> int:
        """Read the next buffer of windows and draw their order; returns how many windows it holds.
        The next buffer starts at this one's last target (windows overlap by one token)."""
        W, T = self.buffer_windows, self.seq_len
        self._buffer = None  # the used-up buffer goes before the next one is read
        self._buffer_start = self._read_position()
        tokens, pieces = self._read(W * T + 1, min_tokens=T + 1)
        n_windows = max(0, (len(tokens) - 1) // T)
        if n_windows:  # step back to the token the next buffer starts with
            i = n_windows * T
            first, unit, cursor = next(p for p in reversed(pieces) if p[0] <= i)
            if self._current is not None and (unit.epoch, unit.index) == (self._current.epoch, self._current.index):
                self._cursor = cursor + i - first
            else:
                self._seek(_position_in(unit, cursor + i - first))
        self._buffer = tokens[:n_windows * T + 1]
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.rank, self.world_size, self._buffer_index, 2])
            self._order = rng.permutation(n_windows)
        else:
            self._order = np.arange(n_windows)
        self._window = 0
        return n_windows

    # --------------------------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.seq_len
        pieces, rows = [], 0
        span = np.arange(T + 1)
        while rows < self.batch_size and not self._done:
            if self._buffer is None or self._window >= len(self._order):
                if self._buffer is not None:  # used up: the next buffer starts where reading stopped
                    self._buffer_index += 1
                if self._fill_buffer() == 0:
                    self._done = True
                    break
                if self._pending_window is not None:
                    self._window, self._pending_window = self._pending_window, None
                    continue
            k = min(self.batch_size - rows, len(self._order) - self._window)
            starts = self._order[self._window:self._window + k] * T
            pieces.append(self._buffer[starts[:, None] + span])
            self._window += k
            rows += k
        if rows == 0:
            raise StopIteration
        windows = torch.from_numpy(np.concatenate(pieces).astype(np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    # ------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict:
        if self._buffer is not None and self._window >= len(self._order) and not self._done:
            start, index, window = self._read_position(), self._buffer_index + 1, 0  # the next buffer's
        elif self._buffer is not None:
            start, index, window = self._buffer_start, self._buffer_index, self._window
        else:
            start, index, window = self._buffer_start, self._buffer_index, self._pending_window or 0
        epoch, unit, doc, offset = (int(v) for v in start)
        return {"version": STATE_VERSION, "epoch": epoch, "unit": unit, "doc": doc, "offset": offset,
                "buffer": int(index), "window": int(window), "done": self._done, **self._identity()}

    def _identity(self) -> dict:
        return {"split": self.split, "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "units": len(self.units), "seq_len": self.seq_len, "shuffle_tokens": self.shuffle_tokens}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise DataError(f"loader state version {state.get('version')!r} is not {STATE_VERSION} "
                            "(written by another version of model/data.py)")
        different = {k: (state.get(k), v) for k, v in self._identity().items() if state.get(k) != v}
        if different:
            raise DataError("loader state is for another stream: " +
                            ", ".join(f"{k} {a!r} in the state vs {b!r} now" for k, (a, b) in different.items()))
        self._buffer_start = (int(state["epoch"]), int(state["unit"]), int(state["doc"]), int(state["offset"]))
        self._buffer_index = int(state["buffer"])
        self._buffer, self._order = None, np.empty(0, np.int64)
        self._pending_window = int(state["window"])
        self._done = bool(state.get("done", False))
        self._seek(self._buffer_start)


class BatchPrefetcher:
    """The next step's micro-batches, read (and pinned, on CUDA) by a background thread while the
    device computes the current step. Each item carries the loader state *after* its batches,
    so a checkpoint records the position of what was consumed, not of what was prefetched."""

    def __init__(self, stream: TokenStream, accum: int, pin: bool, depth: int = 2):
        self.stream, self.accum, self.pin = stream, accum, pin
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="batch-prefetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                batches = [next(self.stream) for _ in range(self.accum)]
                if self.pin:
                    batches = [(x.pin_memory(), y.pin_memory()) for x, y in batches]
                item = (batches, self.stream.state_dict())
                while not self.stopping.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread, which raises it
            self.queue.put((exc, None))

    def next(self) -> tuple[list, dict]:
        batches, state = self.queue.get()
        if isinstance(batches, BaseException):
            raise batches
        return batches, state

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)



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
