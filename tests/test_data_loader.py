"""The streaming loader (model/data.py) on real token parts: Austen's paragraphs tokenized by a
BPE trained with HF tokenizers, written in the token artifact's schema (tests/token_corpus.py).

Expected streams are built here independently of the loader (whole-file pyarrow reads)."""
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


def expected_stream(units, order, split, eot):
    """The token stream of the given unit order: each document of `split`, then the separator."""
    out, ids = [], []
    for u in order:
        for doc_id, s, tokens in zip(*units[u]):
            if s == split:
                out.extend(tokens)
                out.append(eot)
                ids.append(doc_id)
    return np.array(out, dtype=np.int64), ids


def stream_tokens(batches) -> np.ndarray:
    """Invert the packing: every x row in order, then the very last target."""
    if not batches:
        return np.empty(0, dtype=np.int64)
    for x, y in batches:
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert x.dtype == torch.long
    return np.concatenate([x.flatten().numpy() for x, _ in batches] + [batches[-1][1][-1, -1:].numpy()])


def take(stream, n):
    return [next(stream) for _ in range(n)]


def test_open_token_artifact_finds_parts_tokenizer_and_separator(artifact, opened):
    files, tokenizer_path, vocab_size, eot = opened
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert tokenizer_path == artifact / "tokenizer.json"
    assert vocab_size == 512 and eot == vocab_size - len(SPECIAL_TOKENS)  # special tokens are the last ids


def test_packing_is_every_document_of_the_split_then_the_separator(opened):
    files, _, _, eot = opened
    stream = TokenStream(files, SEQ, BATCH, eot, split="train", seed=3, loop=False)
    got = stream_tokens(list(stream))
    want, ids = expected_stream(unit_documents(files), stream.epoch_order(0), "train", eot)
    # nothing lost but the final remainder shorter than one row; no padding, no truncated document
    assert len(want) - SEQ < len(got) <= len(want)
    assert np.array_equal(got, want[:len(got)])
    assert (got == eot).sum() >= len(ids) - 1
    assert len(list(stream)) == 0  # a finished finite stream stays finished


def test_split_is_respected_and_train_val_are_disjoint(opened):
    files, _, _, eot = opened
    units = unit_documents(files)
    train = TokenStream(files, SEQ, 1, eot, split="train", seed=0, loop=False)
    val = TokenStream(files, SEQ, 1, eot, split="val", seed=0, loop=False)
    got_train, got_val = stream_tokens(list(train)), stream_tokens(list(val))
    want_train, train_ids = expected_stream(units, train.epoch_order(0), "train", eot)
    want_val, val_ids = expected_stream(units, val.epoch_order(0), "val", eot)
    assert np.array_equal(got_train, want_train[:len(got_train)])
    assert np.array_equal(got_val, want_val[:len(got_val)])
    all_ids = {i for ids, _, _ in units for i in ids}
    assert set(train_ids).isdisjoint(val_ids) and set(train_ids) | set(val_ids) == all_ids
    assert 0.03 < len(val_ids) / len(all_ids) < 0.2  # the val split is there and small
    assert len(got_val) < len(got_train) / 4


def test_same_seed_same_order_other_seed_other_order(opened):
    files, _, _, eot = opened
    a = TokenStream(files, SEQ, BATCH, eot, seed=1)
    b = TokenStream(files, SEQ, BATCH, eot, seed=1)
    c = TokenStream(files, SEQ, BATCH, eot, seed=2)
    batches_a, batches_b, batches_c = take(a, 5), take(b, 5), take(c, 5)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(batches_a, batches_b))
    assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(batches_a, batches_c))
    assert a.epoch_order(0) != a.epoch_order(1)  # reshuffled every epoch


@pytest.mark.parametrize("stop_at", [0, 1, 7, 40, 95])
def test_resume_yields_the_same_batches(opened, stop_at):
    """Stop after k batches (some k land past an epoch end: ~90 batches per epoch), restore the
    JSON state into a fresh stream, and compare the next batches with the uninterrupted stream."""
    files, _, _, eot = opened
    uninterrupted = TokenStream(files, SEQ, BATCH, eot, seed=5)
    take(uninterrupted, stop_at)
    state = json.loads(json.dumps(uninterrupted.state_dict()))
    assert len(json.dumps(state)) < 400  # small: a few integers
    resumed = TokenStream(files, SEQ, BATCH, eot, seed=5)
    resumed.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(take(uninterrupted, 12), take(resumed, 12)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_resume_of_a_finite_stream_and_epochs_continue(opened):
    files, _, _, eot = opened
    val = TokenStream(files, SEQ, BATCH, eot, split="val", loop=False)
    everything = list(val)
    again = TokenStream(files, SEQ, BATCH, eot, split="val", loop=False)
    first = take(again, 2)
    rest = TokenStream(files, SEQ, BATCH, eot, split="val", loop=False)
    rest.load_state_dict(again.state_dict())
    assert stream_tokens(first + list(rest)).tolist() == stream_tokens(everything).tolist()
    # looping: epoch 1 starts right after epoch 0 in the same stream, in its own order
    looping = TokenStream(files, SEQ, 1, eot, split="val", seed=0)
    n_rows = (len(stream_tokens(everything)) - 1) // SEQ
    tokens = stream_tokens(take(looping, n_rows + 30))
    units = unit_documents(files)
    epoch0, _ = expected_stream(units, looping.epoch_order(0), "val", eot)
    epoch1, _ = expected_stream(units, looping.epoch_order(1), "val", eot)
    both = np.concatenate([epoch0, epoch1])
    assert np.array_equal(tokens, both[:len(tokens)])


def test_two_ranks_together_see_each_sequence_exactly_once(opened):
    files, _, _, eot = opened
    units = unit_documents(files)
    single = TokenStream(files, SEQ, BATCH, eot, seed=7, loop=False)
    ranks = [TokenStream(files, SEQ, BATCH, eot, seed=7, rank=r, world_size=2, loop=False) for r in range(2)]
    order = single.epoch_order(0)
    # unit i of the seeded order belongs to rank i % 2
    assert ranks[0].epoch_order(0) == order[0::2] and ranks[1].epoch_order(0) == order[1::2]
    seen_ids = []
    total_targets = 0
    for r, stream in enumerate(ranks):
        got = stream_tokens(list(stream))
        want, ids = expected_stream(units, order[r::2], "train", eot)
        assert np.array_equal(got, want[:len(got)]) and len(want) - len(got) < SEQ
        seen_ids.append(ids)
        total_targets += len(got) - 1
    _, all_ids = expected_stream(units, order, "train", eot)
    assert set(seen_ids[0]).isdisjoint(seen_ids[1])
    assert sorted(seen_ids[0] + seen_ids[1]) == sorted(all_ids)
    single_targets = len(stream_tokens(list(single))) - 1
    assert single_targets - 2 * SEQ < total_targets <= single_targets  # only the ranks' tails differ


def test_ranks_resume_independently(opened):
    files, _, _, eot = opened
    a = TokenStream(files, SEQ, BATCH, eot, seed=2, rank=1, world_size=2)
    take(a, 9)
    b = TokenStream(files, SEQ, BATCH, eot, seed=2, rank=1, world_size=2)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(take(a, 5), take(b, 5)))
    wrong_rank = TokenStream(files, SEQ, BATCH, eot, seed=2, rank=0, world_size=2)
    with pytest.raises(DataError, match="rank"):
        wrong_rank.load_state_dict(a.state_dict())


def test_reads_one_row_group_of_two_columns_at_a_time(tmp_path, monkeypatch):
    """A dataset ~200 row groups large: the loader reads row groups one by one, only `tokens` and
    `split`, and its Python-visible memory stays a small multiple of one row group."""
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
    stream = TokenStream(files, SEQ, BATCH, eot, loop=False)
    n_units = len(stream.units)
    assert n_units > 150
    tracemalloc.start()
    batches = 0
    for _ in stream:
        batches += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(reads) == n_units and all(cols == ("tokens", "split") for _, cols in reads)
    # one row group of 16 docs is ~ whole_bytes / n_units; the batch buffer is 2 KB
    assert peak < 8 * whole_bytes / n_units + 64_000, (peak, whole_bytes)
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
        got = stream_tokens(list(stream))
        want, split_ids = expected_stream(units, stream.epoch_order(0), split, eot)
        assert np.array_equal(got, want[:len(got)]) and len(want) - len(got) < 128
        counts[split] = int((want == eot).sum())
    manifest_splits = result.manifest["stats"]["splits"]
    assert counts == {s: manifest_splits[s]["docs"] for s in ("train", "val")}
    assert sum(manifest_splits[s]["tokens"] for s in ("train", "val")) == sum(len(t) for *_, toks in units for t in toks)
