"""The streaming loader (model/data.py) on real token parts: Austen's paragraphs tokenized by a
BPE trained with HF tokenizers, written in the token artifact's schema (tests/token_corpus.py).

Expected streams are built here independently of the loader (whole-file pyarrow reads), in the
unit and document orders the loader draws (epoch_order, document_order), then cut into windows:
a shuffled loader must hand out exactly those windows, each once."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from model.data import DataError, TokenStream, open_token_artifact
from token_corpus import SPECIAL_TOKENS, build_token_artifact

SEQ, BATCH = 64, 4


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return build_token_artifact(tmp_path_factory.mktemp("tokens"), parts=3, row_group_docs=16)


@pytest.fixture(scope="module")
def opened(artifact):
    return open_token_artifact(artifact)


def unit_documents(files):
    """[(ids, splits, token lists)] per row group, files in order, by reading whole files."""
    units = []
    for path in files:
        table = pq.read_table(path)
        meta = pq.ParquetFile(path).metadata
        start = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            part = table.slice(start, n)
            units.append((part.column("id").to_pylist(), part.column("split").to_pylist(),
                          part.column("tokens").to_pylist()))
            start += n
    return units


def expected_stream(units, order, split, eot, document_order=None, epoch=0):
    """The token stream of the given unit order: each document of `split` (in the loader's
    document order when given), then the separator. Returns (tokens, ids in stream order)."""
    out, ids = [], []
    for u in order:
        docs = [(doc_id, tokens) for doc_id, s, tokens in zip(*units[u]) if s == split]
        if document_order is not None:
            docs = [docs[i] for i in document_order(epoch, u, len(docs))]
        for doc_id, tokens in docs:
            out.extend(tokens)
            out.append(eot)
            ids.append(doc_id)
    return np.array(out, dtype=np.int64), ids


def cut_windows(tokens: np.ndarray, seq_len: int) -> list[bytes]:
    """The stream cut into windows of seq_len + 1 tokens with stride seq_len (as bytes, to compare sets)."""
    n = (len(tokens) - 1) // seq_len
    return [tokens[k * seq_len:k * seq_len + seq_len + 1].tobytes() for k in range(max(0, n))]


def loader_windows(batches) -> list[bytes]:
    """Each batch row as its window (x then y's last token), in the order handed out."""
    out = []
    for x, y in batches:
        assert torch.equal(x[:, 1:], y[:, :-1]) and x.dtype == torch.long
        out += [row.tobytes() for row in torch.cat([x, y[:, -1:]], dim=1).numpy()]
    return out


def take(stream, n):
    return [next(stream) for _ in range(n)]


def test_open_token_artifact_finds_parts_tokenizer_and_separator(artifact, opened):
    files, tokenizer_path, vocab_size, eot = opened
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert tokenizer_path == artifact / "tokenizer.json"
    assert vocab_size == 512 and eot == vocab_size - len(SPECIAL_TOKENS)  # special tokens are the last ids


SMALL_BUFFER = 16 * SEQ  # 16 windows: several buffers per epoch, so buffer boundaries are exercised


@pytest.mark.parametrize("shuffle_tokens", [0, SMALL_BUFFER, 1 << 24])
def test_every_token_of_the_split_is_a_target_exactly_once(opened, shuffle_tokens):
    """The windows handed out are exactly the windows of the split's stream (units in the epoch's
    order, documents in the loader's order), each once: no token lost but the final remainder
    shorter than one row, none padded, none repeated."""
    files, _, _, eot = opened
    stream = TokenStream(files, SEQ, BATCH, eot, split="train", seed=3, loop=False, shuffle_tokens=shuffle_tokens)
    got = loader_windows(list(stream))
    want_tokens, ids = expected_stream(unit_documents(files), stream.epoch_order(0), "train", eot,
                                       stream.document_order)
    want = cut_windows(want_tokens, SEQ)
    assert sorted(got) == sorted(want) and len(got) == len(set(got)) > 500
    if shuffle_tokens == 0:  # stored order: nanoGPT's contiguous packing, documents as stored
        assert got == want and list(stream.document_order(0, 0, 5)) == [0, 1, 2, 3, 4]
    else:
        assert got != want
        docs_in_order = expected_stream(unit_documents(files), stream.epoch_order(0), "train", eot)[1]
        assert sorted(ids) == sorted(docs_in_order) and ids != docs_in_order  # documents reordered too
    assert len(list(stream)) == 0  # a finished finite stream stays finished


def test_rows_and_steps_come_from_all_over_the_corpus(opened):
    """Where each row's window sits in the stored-order stream: contiguous packing puts a batch's
    rows side by side; the shuffled loader scatters them over the whole epoch."""
    files, _, _, eot = opened
    T = 32
    stored = TokenStream(files, T, 8, eot, seed=1, loop=False, shuffle_tokens=0)
    place = {w: i for i, w in enumerate(loader_windows(list(stored)))}
    n = len(place)

    def spread(stream, batches=20):
        rows = [[place.get(w) for w in loader_windows([next(stream)])] for _ in range(batches)]
        # windows are matched by content, so documents are put in stored order to find them
        within = np.mean([np.mean(np.abs(np.diff(r))) for r in rows])
        between = np.mean([abs(a[0] - b[0]) for a, b in zip(rows, rows[1:])])
        return within / n, between / n

    contiguous = spread(TokenStream(files, T, 8, eot, seed=1, shuffle_tokens=0))
    assert contiguous == (1 / n, 8 / n)
    mixed = TokenStream(files, T, 8, eot, seed=1, shuffle_tokens=1 << 24)
    mixed.document_order = lambda epoch, unit, n_docs: np.arange(n_docs)  # windows then match the stored ones
    within, between = spread(mixed)
    assert within > 0.2 and between > 0.2  # a uniform draw gives 1/3


def test_split_is_respected_and_train_val_are_disjoint(opened):
    files, _, _, eot = opened
    units = unit_documents(files)
    ids = {}
    for split in ("train", "val"):
        stream = TokenStream(files, SEQ, 1, eot, split=split, seed=0, loop=False)
        want, ids[split] = expected_stream(units, stream.epoch_order(0), split, eot, stream.document_order)
        assert sorted(loader_windows(list(stream))) == sorted(cut_windows(want, SEQ))
    all_ids = {i for doc_ids, _, _ in units for i in doc_ids}
    assert set(ids["train"]).isdisjoint(ids["val"]) and set(ids["train"]) | set(ids["val"]) == all_ids
    assert 0.03 < len(ids["val"]) / len(all_ids) < 0.2  # the val split is there and small


def test_same_seed_same_order_other_seed_other_order(opened):
    files, _, _, eot = opened
    a = TokenStream(files, SEQ, BATCH, eot, seed=1)
    b = TokenStream(files, SEQ, BATCH, eot, seed=1)
    c = TokenStream(files, SEQ, BATCH, eot, seed=2)
    batches_a, batches_b, batches_c = take(a, 5), take(b, 5), take(c, 5)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(batches_a, batches_b))
    assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(batches_a, batches_c))
    assert a.epoch_order(0) != a.epoch_order(1)  # reshuffled every epoch
    assert list(a.document_order(0, 3, 16)) != list(a.document_order(1, 3, 16))


@pytest.mark.parametrize("shuffle_tokens", [0, SMALL_BUFFER, 1 << 24])
@pytest.mark.parametrize("stop_at", [0, 1, 7, 40, 95])
def test_resume_yields_the_same_batches(opened, stop_at, shuffle_tokens):
    """Stop after k batches (some k land past an epoch end: ~200 batches per epoch, some inside a
    buffer, some on its edge), restore the JSON state into a fresh stream, and compare the next
    batches with the uninterrupted stream's."""
    files, _, _, eot = opened
    uninterrupted = TokenStream(files, SEQ, BATCH, eot, seed=5, shuffle_tokens=shuffle_tokens)
    take(uninterrupted, stop_at)
    state = json.loads(json.dumps(uninterrupted.state_dict()))
    assert len(json.dumps(state)) < 400  # small: a few integers
    resumed = TokenStream(files, SEQ, BATCH, eot, seed=5, shuffle_tokens=shuffle_tokens)
    resumed.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(take(uninterrupted, 30), take(resumed, 30)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_each_epoch_hands_out_its_own_windows_once_then_the_next_epoch_begins(opened):
    """Looping: the first epoch's windows, each once, then the second epoch's (its own orders);
    a finite stream resumed half way gives the rest of its windows."""
    files, _, _, eot = opened
    units = unit_documents(files)
    for shuffle_tokens in (SMALL_BUFFER, 1 << 24):
        looping = TokenStream(files, SEQ, 1, eot, split="val", seed=0, shuffle_tokens=shuffle_tokens)
        epoch0, _ = expected_stream(units, looping.epoch_order(0), "val", eot, looping.document_order, epoch=0)
        epoch1, _ = expected_stream(units, looping.epoch_order(1), "val", eot, looping.document_order, epoch=1)
        n0 = len(cut_windows(epoch0, SEQ))
        got = loader_windows(take(looping, n0 + 30))
        assert sorted(got[:n0]) == sorted(cut_windows(epoch0, SEQ))
        both = cut_windows(np.concatenate([epoch0, epoch1]), SEQ)  # stride T across the epoch boundary
        assert set(got[n0:]) <= set(both[n0:])
    val = TokenStream(files, SEQ, BATCH, eot, split="val", loop=False, shuffle_tokens=SMALL_BUFFER)
    everything = loader_windows(list(val))
    again = TokenStream(files, SEQ, BATCH, eot, split="val", loop=False, shuffle_tokens=SMALL_BUFFER)
    first = take(again, 5)
    rest = TokenStream(files, SEQ, BATCH, eot, split="val", loop=False, shuffle_tokens=SMALL_BUFFER)
    rest.load_state_dict(again.state_dict())
    assert loader_windows(first + list(rest)) == everything


def test_two_ranks_together_see_each_window_exactly_once(opened):
    files, _, _, eot = opened
    units = unit_documents(files)
    single = TokenStream(files, SEQ, BATCH, eot, seed=7, loop=False)
    ranks = [TokenStream(files, SEQ, BATCH, eot, seed=7, rank=r, world_size=2, loop=False) for r in range(2)]
    order = single.epoch_order(0)
    # unit i of the seeded order belongs to rank i % 2
    assert ranks[0].epoch_order(0) == order[0::2] and ranks[1].epoch_order(0) == order[1::2]
    seen_ids, total = [], 0
    for r, stream in enumerate(ranks):
        got = loader_windows(list(stream))
        want, ids = expected_stream(units, order[r::2], "train", eot, stream.document_order)
        assert sorted(got) == sorted(cut_windows(want, SEQ))
        seen_ids.append(ids)
        total += len(got)
    _, all_ids = expected_stream(units, order, "train", eot)
    assert set(seen_ids[0]).isdisjoint(seen_ids[1])
    assert sorted(seen_ids[0] + seen_ids[1]) == sorted(all_ids)
    single_windows = len(loader_windows(list(single)))
    assert single_windows - 2 <= total <= single_windows  # only the ranks' tails differ


def test_ranks_resume_independently(opened):
    files, _, _, eot = opened
    a = TokenStream(files, SEQ, BATCH, eot, seed=2, rank=1, world_size=2, shuffle_tokens=SMALL_BUFFER)
    take(a, 9)
    b = TokenStream(files, SEQ, BATCH, eot, seed=2, rank=1, world_size=2, shuffle_tokens=SMALL_BUFFER)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(take(a, 5), take(b, 5)))
    wrong_rank = TokenStream(files, SEQ, BATCH, eot, seed=2, rank=0, world_size=2, shuffle_tokens=SMALL_BUFFER)
    with pytest.raises(DataError, match="rank"):
        wrong_rank.load_state_dict(a.state_dict())
    other_buffer = TokenStream(files, SEQ, BATCH, eot, seed=2, rank=1, world_size=2)
    with pytest.raises(DataError, match="shuffle_tokens"):
        other_buffer.load_state_dict(a.state_dict())


def test_reads_one_row_group_of_two_columns_at_a_time(tmp_path, monkeypatch):
    """A dataset ~200 row groups large: the loader reads row groups one by one, only `tokens` and
    `split`, and its Python-visible memory stays the shuffle buffer plus a small multiple of one
    row group, far below the data."""
    folder = build_token_artifact(tmp_path / "big", parts=2, row_group_docs=16, repeat=4)
    files, _, _, eot = open_token_artifact(folder)
    whole_bytes = sum(len(t) * 8 for f in files for t in pq.read_table(f, columns=["tokens"]).column("tokens").to_pylist())
    reads = []
    original = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kwargs):
        reads.append((i, tuple(columns or ())))
        return original(self, i, columns=columns, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("the loader read a whole file")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", forbidden)
    monkeypatch.setattr(pq, "read_table", forbidden)
    buffer_tokens = 4096
    stream = TokenStream(files, SEQ, BATCH, eot, loop=False, shuffle_tokens=buffer_tokens)
    n_units = len(stream.units)
    assert n_units > 150
    tracemalloc.start()
    batches = 0
    for _ in stream:
        batches += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # every row group once, plus at most one re-read per buffer (stepping back to the next buffer's start)
    assert n_units <= len(reads) <= n_units + batches // (buffer_tokens // SEQ // BATCH) + 1
    assert all(cols == ("tokens", "split") for _, cols in reads) and {i for i, _ in reads} == set(range(n_units // 2))
    # the buffer is 4096 tokens read as int64 and kept as int32; one row group of 16 docs is ~ whole_bytes / n_units
    assert peak < 3 * buffer_tokens * 8 + 8 * whole_bytes / n_units + 64_000, (peak, whole_bytes)
    assert peak < whole_bytes / 10
    assert batches > 100


def test_clear_errors(tmp_path, opened):
    files, _, _, eot = opened
    bad = tmp_path / "part-00000.parquet"
    pq.write_table(pq.read_table(files[0], columns=["id"]), bad)
    with pytest.raises(DataError, match="part-00000.parquet: has no 'tokens' column"):
        TokenStream([bad], SEQ, BATCH, eot)
    with pytest.raises(DataError, match="no tokenizer.json"):
        open_token_artifact(tmp_path)
    few = TokenStream(files[:1], SEQ, BATCH, eot, rank=30, world_size=31)  # 15 row groups, 31 ranks
    with pytest.raises(DataError, match="fewer row groups than ranks"):
        next(few)


def test_streams_the_real_tokenize_stage_output(tmp_path):
    """The lead's tokenize stage (project BPE, hash split, 1024-doc row groups) on Austen's text:
    the artifact opens through its manifest and streams exactly its documents of each split."""
    import pyarrow as pa

    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages import get_stage
    from pipeline.stages.tokenize import TokenizeConfig
    from pipeline.tokenizer import train_bpe
    from storage.store import ArtifactStore
    from token_corpus import austen_documents

    docs = austen_documents() * 3  # 2160 documents: 3 row groups in the first part
    ids = [f"{doc_id}#{i}" for i, (doc_id, _) in enumerate(docs)]
    table = pa.table({"id": ids, "text": [t for _, t in docs]})
    pq.write_table(table.slice(0, 1800), tmp_path / "a.parquet")
    pq.write_table(table.slice(1800), tmp_path / "b.parquet")
    train_bpe([t for _, t in docs[:720]], 1024).save(str(tmp_path / "tokenizer.json"))
    result = run_stage(get_stage("tokenize"), [tmp_path / "a.parquet", tmp_path / "b.parquet"],
                       TokenizeConfig(tokenizer=str(tmp_path / "tokenizer.json"), val_fraction=0.05),
                       ArtifactStore(tmp_path / "store"), RunOptions(workers=1, progress=False))
    files, _, vocab_size, eot = open_token_artifact(result.path)
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet"] and vocab_size <= 1024
    units = unit_documents(files)
    assert len(units) == 3  # row groups of at most 1024 documents
    counts = {}
    for split in ("train", "val"):
        stream = TokenStream(files, 128, 4, eot, split=split, seed=1, loop=False)
        got = loader_windows(list(stream))
        want, split_ids = expected_stream(units, stream.epoch_order(0), split, eot, stream.document_order)
        assert sorted(got) == sorted(cut_windows(want, 128))
        counts[split] = int((want == eot).sum())
    manifest_splits = result.manifest["stats"]["splits"]
    assert counts == {s: manifest_splits[s]["docs"] for s in ("train", "val")}
    assert sum(manifest_splits[s]["tokens"] for s in ("train", "val")) == sum(len(t) for *_, toks in units for t in toks)
