"""The tokenize stage: token parts that pretraining streams and other tools open."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from pipeline.runner import RunOptions, run_stage
from pipeline.stages import get_stage
from pipeline.stages.tokenize import TokenizeConfig, is_validation
from pipeline.tokenizer import train_bpe
from storage.store import ArtifactStore
from tests.test_tokenizer import multilingual_texts

REPO = Path(__file__).resolve().parent.parent
OPTIONS = RunOptions(workers=2, progress=False)
STAGE = get_stage("tokenize")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """2,600 real paragraphs in two Parquet files, with provenance and quality-signal columns."""
    root = tmp_path_factory.mktemp("tokenize")
    texts = multilingual_texts()
    texts = (texts * (2600 // len(texts) + 1))[:2600]
    ids = [f"doc-{i}" for i in range(len(texts))]
    table = pa.table({"id": ids, "text": texts, "url": [f"http://x/{i}" for i in ids], "language": ["en"] * len(texts),
                      "source": ["crawl.warc.gz"] * len(texts), "word_count": list(range(len(texts)))})
    pq.write_table(table.slice(0, 1500), root / "a.parquet")
    pq.write_table(table.slice(1500), root / "b.parquet")
    tokenizer = train_bpe(texts, 1500)
    tokenizer.save(str(root / "tokenizer.json"))
    result = run_stage(STAGE, [root / "a.parquet", root / "b.parquet"], TokenizeConfig(tokenizer=str(root / "tokenizer.json")),
                       ArtifactStore(root / "store"), OPTIONS)
    return dict(root=root, table=table, tokenizer=tokenizer, result=result)


def test_parts_hold_tokens_that_decode_to_the_text(corpus):
    result, table, tokenizer = corpus["result"], corpus["table"], corpus["tokenizer"]
    parts = sorted(result.path.glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    tokens = pa.concat_tables([pq.read_table(p) for p in parts])
    assert tokens.schema.field("tokens").type == pa.list_(pa.uint16())
    assert set(tokens.column_names) == {"id", "split", "n_tokens", "tokens", "url", "language", "source"}
    assert tokens.column("id").to_pylist() == table.column("id").to_pylist()
    texts = table.column("text").to_pylist()
    for row, (ids, n) in enumerate(zip(tokens.column("tokens").to_pylist(), tokens.column("n_tokens").to_pylist())):
        assert n == len(ids) and tokenizer.decode(ids, skip_special_tokens=False) == texts[row]
    assert (result.path / "tokenizer.json").read_bytes() == (corpus["root"] / "tokenizer.json").read_bytes()


def test_row_groups_are_sized_for_streaming(corpus):
    for part in sorted(corpus["result"].path.glob("part-*.parquet")):
        meta = pq.ParquetFile(part).metadata
        assert meta.num_row_groups >= 2
        assert all(meta.row_group(i).num_rows <= 1024 for i in range(meta.num_row_groups))


def test_split_is_a_stable_hash_of_the_id(corpus):
    result = corpus["result"]
    tokens = pa.concat_tables([pq.read_table(p, columns=["id", "split"]) for p in sorted(result.path.glob("part-*.parquet"))])
    splits = dict(zip(tokens.column("id").to_pylist(), tokens.column("split").to_pylist()))
    assert all((s == "val") == is_validation(i, 0.03) for i, s in splits.items())
    val = sum(s == "val" for s in splits.values())
    assert 0.015 * len(splits) < val < 0.05 * len(splits)
    # Re-sharded input (one file instead of two): every document keeps its split.
    one_file = corpus["root"] / "one.parquet"
    pq.write_table(corpus["table"], one_file)
    again = run_stage(STAGE, [one_file], TokenizeConfig(tokenizer=str(corpus["root"] / "tokenizer.json")),
                      ArtifactStore(corpus["root"] / "store"), OPTIONS)
    table = pq.read_table(again.path / "part-00000.parquet", columns=["id", "split"])
    assert dict(zip(table.column("id").to_pylist(), table.column("split").to_pylist())) == splits
    stats = result.manifest["stats"]
    assert stats["splits"]["val"]["docs"] == val and stats["splits"]["train"]["docs"] == len(splits) - val
    total = sum(stats["splits"][s]["tokens"] for s in ("train", "val"))
    assert total == pa.compute.sum(pq.read_table(again.path / "part-00000.parquet", columns=["n_tokens"]).column(0)).as_py()
    assert stats["tokens_per_byte"] == round(total / sum(len(t.encode()) for t in corpus["table"].column("text").to_pylist()), 4)


def test_parts_open_in_pandas_and_duckdb_without_our_code(corpus):
    import duckdb
    import pandas as pd

    folder = corpus["result"].path
    frame = pd.read_parquet(folder / "part-00000.parquet")
    assert len(frame) == 1500 and list(frame["tokens"].iloc[0]) == corpus["tokenizer"].encode(corpus["table"]["text"][0].as_py()).ids
    count, tokens = duckdb.sql(f"SELECT count(*), sum(n_tokens) FROM read_parquet('{folder}/part-*.parquet') "
                               "WHERE split = 'train'").fetchall()[0]
    assert count == corpus["result"].manifest["stats"]["splits"]["train"]["docs"]
    assert tokens == corpus["result"].manifest["stats"]["splits"]["train"]["tokens"]



def test_parts_load_with_datasets_as_the_docs_show(corpus, tmp_path, monkeypatch):
    """docs/design.md's `load_dataset("parquet", data_files=".../part-*.parquet")` line, run."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the parquet builder ships with datasets: nothing to fetch
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    from datasets import load_dataset

    folder = corpus["result"].path
    dataset = load_dataset("parquet", data_files=f"{folder}/part-*.parquet", cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert dataset.num_rows == sum(s["docs"] for s in corpus["result"].manifest["stats"]["splits"].values())
    assert dataset[0]["id"] == "doc-0"
    assert dataset[0]["tokens"] == corpus["tokenizer"].encode(corpus["table"]["text"][0].as_py()).ids

def test_the_tokenizer_content_not_its_path_is_in_the_key(corpus, tmp_path):
    root, store = corpus["root"], ArtifactStore(corpus["root"] / "store")
    copy = tmp_path / "elsewhere.json"
    shutil.copy(root / "tokenizer.json", copy)
    same = run_stage(STAGE, [root / "a.parquet", root / "b.parquet"], TokenizeConfig(tokenizer=str(copy)), store, OPTIONS)
    assert same.cached and same.key == corpus["result"].key
    changed = Tokenizer.from_file(str(copy))
    changed.add_tokens(["<extra>"])
    changed.save(str(copy))
    other = run_stage(STAGE, [root / "a.parquet", root / "b.parquet"], TokenizeConfig(tokenizer=str(copy)), store, OPTIONS)
    assert not other.cached and other.manifest["stats"]["shards"] == {"total": 2, "computed": 2, "reused": 0}


def test_large_vocabularies_get_uint32_and_jsonl_input_works(corpus, tmp_path):
    big = Tokenizer.from_file(str(corpus["root"] / "tokenizer.json"))
    big.add_tokens([f"<extra_{i}>" for i in range(65_000)])
    big.save(str(tmp_path / "big.json"))
    lines = [{"text": t, "url": f"u{i}"} for i, t in enumerate(corpus["table"].column("text").to_pylist()[:50])]
    (tmp_path / "mine.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = run_stage(STAGE, [tmp_path / "mine.jsonl"], TokenizeConfig(tokenizer=str(tmp_path / "big.json")),
                       ArtifactStore(tmp_path / "store"), OPTIONS)
    table = pq.read_table(result.path / "part-00000.parquet")
    assert table.schema.field("tokens").type == pa.list_(pa.uint32())
    assert table.schema.field("n_tokens").type == pa.int32()
    assert table.column("url").to_pylist() == [f"u{i}" for i in range(50)]
    assert table.column("id").to_pylist() == [f"mine:{i}" for i in range(50)]


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.json", "no such tokenizer file or folder"),
    (lambda d: (d / "junk.json").write_text("{not json") and d / "junk.json", "not a tokenizers JSON file"),
    (lambda d: d, "no tokenizer.json in this folder"),
])
def test_a_bad_tokenizer_is_one_line_before_any_work(tmp_path, make, message):
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    tokenizer = make(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "stage", "tokenize", "--input", str(tmp_path / "t.jsonl"),
                           "--tokenizer", str(tokenizer), "--store", str(tmp_path / "store")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and message in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "store" / "tokenize").exists()
