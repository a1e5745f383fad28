import json
import os

import pytest

from storage.keys import canonical_json, content_key, file_digest
from storage.store import ArtifactStore, AtomicDir, export_artifact, is_artifact


def test_key_changes_with_any_part_and_not_with_dict_order():
    base = content_key("quality", "1", {"a": 1, "b": 0.5}, ["sha256:x"])
    assert base == content_key("quality", "1", {"b": 0.5, "a": 1}, ["sha256:x"])
    assert base != content_key("quality", "1", {"a": 1, "b": 0.6}, ["sha256:x"])
    assert base != content_key("quality", "2", {"a": 1, "b": 0.5}, ["sha256:x"])
    assert base != content_key("quality", "1", {"a": 1, "b": 0.5}, ["sha256:y"])
    assert canonical_json({"b": [1, 2], "a": "é"}) == '{"a":"é","b":[1,2]}'


def test_file_digest_follows_content(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    first = file_digest(f)
    assert first == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    f.write_bytes(b"abd")
    os.utime(f, ns=(1, 1))  # a rewrite changes size or mtime; the memo must not hide it
    assert file_digest(f) != first


def test_atomic_dir_is_invisible_until_commit(tmp_path):
    final = tmp_path / "stage" / "key1"
    with pytest.raises(RuntimeError):
        with AtomicDir(final) as out:
            out.path("data.parquet").write_bytes(b"partial")
            assert not final.exists()
            raise RuntimeError("crash before the manifest")
    assert not final.exists()
    assert list((tmp_path / "stage").iterdir()) == []  # temp folder removed
    with AtomicDir(final) as out:
        out.path("data.parquet").write_bytes(b"whole")
        out.commit({"key": "key1"})
    assert is_artifact(final) and (final / "data.parquet").read_bytes() == b"whole"


def test_second_commit_of_same_key_keeps_first(tmp_path):
    final = tmp_path / "s" / "k"
    for content in (b"first", b"second"):
        with AtomicDir(final) as out:
            out.path("f").write_bytes(content)
            out.commit({"key": "k"})
    assert (final / "f").read_bytes() == b"first"
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["k"]


def test_export_artifact(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    with store.open("extract", "abc") as out:
        out.path("part-00000.parquet").write_bytes(b"data")
        out.commit({"key": "abc", "outputs": []})
    dest = export_artifact(store.path("extract", "abc"), tmp_path / "out")
    assert json.loads((dest / "manifest.json").read_text())["key"] == "abc"
    assert export_artifact(store.path("extract", "abc"), tmp_path / "out") == dest  # idempotent
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("unrelated")
    with pytest.raises(FileExistsError):
        export_artifact(store.path("extract", "abc"), tmp_path / "other")
