"""Incremental re-tokenization end to end, on the real sample crawl: a new WARC in the crawl
folder computes only its own shards in every stage, dedup included; every earlier dedup and token
part is reused byte for byte; the result equals a run from scratch; a new tokenizer re-tokenizes
everything and nothing upstream."""
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline.chain import DATA_STAGES, run_chain, shard_counts, update_tokens
from pipeline.runner import RunOptions, run_stage
from pipeline.stages import get_stage
from pipeline.stages.langid import LangIdConfig
from pipeline.stages.train_tokenizer import TrainTokenizerConfig
from storage.store import ArtifactStore

OPTIONS = RunOptions(workers=2, progress=False)
CONFIGS = {"langid": LangIdConfig(languages="all")}


def parts(result):
    return sorted(result.path.glob("part-*.parquet"))


@pytest.fixture(scope="module")
def incremental(tmp_path_factory, sample_warcs):
    root = tmp_path_factory.mktemp("incremental")
    crawl = root / "crawl"
    crawl.mkdir()
    for warc in sample_warcs[:3]:
        shutil.copy(warc, crawl)
    store = ArtifactStore(root / "store")
    text = run_chain([crawl], DATA_STAGES, store, CONFIGS, OPTIONS)
    tokenizer = run_stage(get_stage("train-tokenizer"), [text["dedup"].path], TrainTokenizerConfig(vocab_size=1024),
                          store, OPTIONS)
    before = update_tokens([crawl], tokenizer.path, store, CONFIGS, OPTIONS)
    old_bytes = {name: [p.read_bytes() for p in parts(before[name])] for name in ("dedup", "tokenize")}
    shutil.copy(sample_warcs[3], crawl)  # the new WARC lands
    after = update_tokens([crawl], tokenizer.path, store, CONFIGS, OPTIONS)
    return dict(root=root, crawl=crawl, store=store, tokenizer=tokenizer, before=before, after=after,
                old_bytes=old_bytes, sample_warcs=sample_warcs)


def test_a_new_warc_computes_only_its_own_shards_in_every_stage(incremental):
    before, after = incremental["before"], incremental["after"]
    for name in DATA_STAGES:
        assert before[name].cached, f"{name}: the first update_tokens re-ran a stage run_chain had just run"
    for name in DATA_STAGES + ("tokenize",):
        assert not after[name].cached
        assert shard_counts(after[name]) == (1, 3), name
    # Nothing tokenized twice: the computed tokenize shard read exactly the new dedup part's documents.
    new_dedup_rows = pq.ParquetFile(parts(after["dedup"])[3]).metadata.num_rows
    token_stats = after["tokenize"].manifest["stats"]
    assert token_stats["docs_in"] == sum(pq.ParquetFile(p).metadata.num_rows for p in parts(after["dedup"]))
    assert new_dedup_rows > 0
    assert sum(s["docs"] for s in token_stats["splits"].values()) == token_stats["docs_out"]


def test_earlier_dedup_and_token_parts_are_reused_byte_for_byte(incremental):
    after, old_bytes = incremental["after"], incremental["old_bytes"]
    for name in ("dedup", "tokenize"):
        new_parts = parts(after[name])
        assert len(new_parts) == 4
        assert [p.read_bytes() for p in new_parts[:3]] == old_bytes[name], name
    # The new file's documents never displaced a document kept from the earlier files.
    removed = pq.read_table(after["dedup"].path / "removed.parquet").to_pylist()
    old_ids = {i for p in parts(incremental["before"]["dedup"]) for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()}
    kept_ids = {i for p in parts(after["dedup"]) for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()}
    assert old_ids <= kept_ids
    assert any(r["duplicate_of"] in old_ids for r in removed)  # the new WARC does repeat earlier pages


def test_incremental_result_equals_a_run_from_scratch(incremental, tmp_path):
    fresh_store = ArtifactStore(tmp_path / "fresh")
    fresh = update_tokens([incremental["crawl"]], incremental["tokenizer"].path, fresh_store, CONFIGS, OPTIONS)
    after = incremental["after"]
    for name in ("dedup", "tokenize"):
        assert fresh[name].key == after[name].key
        assert [p.read_bytes() for p in parts(fresh[name])] == [p.read_bytes() for p in parts(after[name])], name


def test_a_new_tokenizer_retokenizes_everything_and_nothing_upstream(incremental):
    store, after = incremental["store"], incremental["after"]
    other = run_stage(get_stage("train-tokenizer"), [after["dedup"].path], TrainTokenizerConfig(vocab_size=1100),
                      store, OPTIONS)
    again = update_tokens([incremental["crawl"]], other.path, store, CONFIGS, OPTIONS)
    for name in DATA_STAGES:
        assert again[name].cached and again[name].key == after[name].key
    assert shard_counts(again["tokenize"]) == (4, 0)
    assert again["tokenize"].key != after["tokenize"].key
