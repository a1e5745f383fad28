"""The stage runner: caching, shard reuse, manifests, and misbehaving documents."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import StageError
from pipeline.runner import RunOptions, run_stage
from storage.store import ArtifactStore
from toy_stage import STAGE, LengthConfig

QUIET = dict(progress=False)


def write_parquet(path, texts):
    pq.write_table(pa.table({"text": texts}), path)
    return path


def test_manifest_funnel_and_outputs(tmp_path):
    a = write_parquet(tmp_path / "a.parquet", ["a long document", "tiny", "another long one"])
    (tmp_path / "b.jsonl").write_text('{"id": "x", "text": "json document", "lang": "en"}\n{"oops"\n{"text": 5}\n')
    store = ArtifactStore(tmp_path / "store")
    result = run_stage(STAGE, [a, tmp_path / "b.jsonl"], LengthConfig(), store, RunOptions(workers=2, keep_rejects=5, **QUIET))
    m = result.manifest
    assert not result.cached and result.path == store.path("length", result.key)
    stats = m["stats"]
    assert stats["docs_in"] == 4 and stats["docs_out"] == 3
    assert stats["dropped"] == {"too_short": 1}
    assert stats["faults"] == {"bad_json_line": 1, "text_not_string": 1}
    assert stats["docs_in"] == stats["docs_out"] + sum(stats["dropped"].values())
    assert [o["rows"] for o in m["outputs"]] == [2, 1]
    rows = pq.read_table(result.path / "part-00001.parquet").to_pylist()
    assert rows == [{"id": "x", "text": "json document", "lang": "en", "chars": 13}]
    ids = pq.read_table(result.path / "part-00000.parquet").column("id").to_pylist()
    assert ids == ["a:0", "a:2"]  # made from file name and row when the input has none
    rejects = pq.read_table(result.path / "rejects.parquet").to_pylist()
    assert rejects == [{"id": "a:1", "reason": "too_short", "text": "tiny"}]
    assert (result.path / "report.png").stat().st_size > 1000
    assert m["config"] == {"min_chars": 5, "workers_hint": 1}


def test_cache_hit_and_shard_reuse(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_parquet(inputs / "1.parquet", ["first file document"])
    first = run_stage(STAGE, [inputs], LengthConfig(), store, RunOptions(**QUIET))
    again = run_stage(STAGE, [inputs], LengthConfig(workers_hint=7), store, RunOptions(**QUIET))
    assert again.cached and again.path == first.path  # a knob outside the key changes nothing
    write_parquet(inputs / "2.parquet", ["second file document"])
    grown = run_stage(STAGE, [inputs], LengthConfig(), store, RunOptions(**QUIET))
    assert grown.key != first.key
    assert grown.manifest["stats"]["shards"] == {"total": 2, "computed": 1, "reused": 1}
    # the reused shard is the very same file (hard link), not a recomputation
    assert (grown.path / "part-00000.parquet").stat().st_ino == (first.path / "part-00000.parquet").stat().st_ino
    changed = run_stage(STAGE, [inputs], LengthConfig(min_chars=100), store, RunOptions(**QUIET))
    assert changed.key != grown.key and changed.manifest["stats"]["docs_out"] == 0


def test_hanging_and_crashing_documents_are_dropped_not_fatal(tmp_path):
    path = write_parquet(tmp_path / "bad.parquet",
                         ["good one here", "HANG forever", "good two here", "SEGFAULT now", "good three here"])
    result = run_stage(STAGE, [path], LengthConfig(), ArtifactStore(tmp_path / "s"),
                       RunOptions(doc_timeout=1.5, **QUIET))
    stats = result.manifest["stats"]
    assert stats["dropped"] == {"doc_timeout": 1, "worker_crashed": 1}
    texts = pq.read_table(result.path / "part-00000.parquet").column("text").to_pylist()
    assert texts == ["good one here", "good two here", "good three here"]


def test_unusable_input_is_a_one_line_error(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    with pytest.raises(StageError, match="no such file"):
        run_stage(STAGE, [tmp_path / "missing"], LengthConfig(), store, RunOptions(**QUIET))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "notext.parquet")
    with pytest.raises(StageError, match="notext.parquet: has no 'text' column"):
        run_stage(STAGE, [tmp_path / "notext.parquet"], LengthConfig(), store, RunOptions(**QUIET))
    assert store.artifacts("length") == []


def test_manifest_is_written_last(tmp_path):
    path = write_parquet(tmp_path / "a.parquet", ["some document text"])
    result = run_stage(STAGE, [path], LengthConfig(), ArtifactStore(tmp_path / "s"), RunOptions(**QUIET))
    manifest = json.loads((result.path / "manifest.json").read_text())
    listed = {o["file"] for o in manifest["outputs"] + manifest["side_outputs"]}
    assert listed == {p.name for p in result.path.iterdir()} - {"manifest.json"}


def test_a_broken_stage_fails_once_instead_of_retrying_forever(tmp_path):
    path = write_parquet(tmp_path / "a.parquet", ["fine text here", "EXIT please"])
    with pytest.raises(RuntimeError, match="exited with code 1"):
        run_stage(STAGE, [path], LengthConfig(), ArtifactStore(tmp_path / "s"), RunOptions(**QUIET))
    assert ArtifactStore(tmp_path / "s").artifacts("length") == []
