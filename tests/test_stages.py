"""The ingest and extract stages end to end on damaged and pathological input: every fault is
counted in the manifest by reason, one line each, and nothing readable is lost."""
import os
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.runner import RunOptions, run_stage
from pipeline.stages import get_stage
from storage.store import ArtifactStore
from conftest import REPO
from warc_fixtures import gzip_member_offsets

OPTIONS = RunOptions(workers=2, progress=False)
HTML_FIXTURES = REPO / "tests" / "fixtures" / "html"


def ingest(paths, store):
    return run_stage(get_stage("ingest"), paths, store=store, options=OPTIONS)


def rows(result, column):
    return [v for p in sorted(result.path.glob("part-*.parquet")) for v in pq.read_table(p, columns=[column]).column(column).to_pylist()]


@pytest.fixture(scope="module")
def clean_ids(sample_warcs, tmp_path_factory):
    store = ArtifactStore(tmp_path_factory.mktemp("clean"))
    return {w.name: set(rows(ingest([w], store), "id")) for w in sample_warcs}


def test_damaged_crawl_keeps_every_readable_record(sample_warcs, clean_ids, tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    first, second, third = sample_warcs[:3]
    shutil.copy(first, crawl / first.name)
    data = second.read_bytes()
    members = gzip_member_offsets(data)
    cut = members[len(members) // 2] + 100  # inside a gzip member
    (crawl / "truncated.warc.gz").write_bytes(data[:cut])
    data = third.read_bytes()
    middle = gzip_member_offsets(data)[len(gzip_member_offsets(data)) // 2]
    (crawl / "garbage.warc.gz").write_bytes(data[:middle] + os.urandom(500) + data[middle:])
    (crawl / "empty.warc.gz").write_bytes(b"")
    (crawl / "picture.warc").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))

    result = ingest([crawl], ArtifactStore(tmp_path / "store"))
    faults = result.manifest["stats"]["faults"]
    assert faults.get("empty_file") == 1 and faults.get("not_a_warc") == 1
    assert faults.get("garbage_between_records") == 1
    assert faults.get("truncated_gzip", 0) + faults.get("truncated_record", 0) == 1
    parts = {entry["path"].rsplit("/", 1)[1]: i for i, entry in enumerate(result.manifest["inputs"])}
    ids_of = lambda name: set(pq.read_table(result.path / f"part-{parts[name]:05d}.parquet").column("id").to_pylist())
    assert ids_of(first.name) == clean_ids[first.name]
    assert ids_of("garbage.warc.gz") == clean_ids[third.name]  # records after the garbage too
    truncated = ids_of("truncated.warc.gz")
    assert truncated < clean_ids[second.name] and len(truncated) >= len(clean_ids[second.name]) // 2 - 2
    messages = result.manifest["stats"]["fault_messages"]  # the same lines the user saw on stderr
    assert len(messages) == sum(faults.values()) and all("\n" not in m for m in messages)
    for name in ("truncated.warc.gz", "garbage.warc.gz"):
        assert any(m.startswith(name) and re.search(r"offset \d+", m) for m in messages), name
    assert any(m.startswith("empty.warc.gz") for m in messages) and any(m.startswith("picture.warc") for m in messages)


def test_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "a.warc.gz").write_bytes(b"")
    (tmp_path / "b.warc").write_text("just some text, not a WARC\n")
    from pipeline.errors import StageError

    with pytest.raises(StageError, match="nothing readable"):
        ingest([tmp_path], ArtifactStore(tmp_path / "store"))


def _page(name):
    return (HTML_FIXTURES / name).read_bytes()


def test_extract_charsets_and_pathological_pages(tmp_path):
    ja = _page("handbook_ja_role_of_distributions.html")
    fr = _page("handbook_fr_who_is_this_book_for.html")
    ja_text = ja.decode("utf-8")
    ja_sjis_declared = ja_text.replace('charset="UTF-8"', 'charset="Shift_JIS"').replace("charset=UTF-8", "charset=Shift_JIS").encode("cp932")
    ja_sjis_bare = re.sub(r"<meta[^>]*charset[^>]*>", "", ja_text, flags=re.I).encode("cp932")
    fr_latin1 = re.sub(r"<meta[^>]*charset[^>]*>", "", fr.decode("utf-8"), flags=re.I).encode("latin-1")
    pages = [
        ("utf8-ja", "text/html; charset=utf-8", ja),
        ("sjis-declared", "text/html", ja_sjis_declared),
        ("sjis-bare", "text/html", ja_sjis_bare),
        ("latin1-as-utf8", "text/html; charset=utf-8", fr_latin1),
        ("utf8-fr", "text/html; charset=utf-8", fr),
        ("nested", "text/html", b"<html><body>" + b"<div>" * 300_000 + b"deep" + b"</div>" * 300_000),
        ("png", "text/html", b"\x89PNG\r\n\x1a\n" + os.urandom(5000)),
        ("nul", "text/html", b"<html><body><p>" + b"\x00" * 3000 + b"</p></body></html>"),
        ("huge", "text/html", b"<html><body>" + b"<p>words and more words</p>" * 400_000 + b"</body></html>"),
    ]
    table = pa.table({"id": [p[0] for p in pages], "url": [f"http://x/{p[0]}" for p in pages],
                      "content_type": [p[1] for p in pages], "html": pa.array([p[2] for p in pages], pa.binary())})
    pq.write_table(table, tmp_path / "pages.parquet")
    result = run_stage(get_stage("extract"), [tmp_path / "pages.parquet"], store=ArtifactStore(tmp_path / "s"), options=OPTIONS)
    assert result.manifest["stats"]["dropped"] == {"too_many_tags": 1, "binary_content": 2, "too_large": 1}
    texts = dict(zip(rows(result, "id"), rows(result, "text")))
    assert texts["sjis-declared"] == texts["utf8-ja"] == texts["sjis-bare"]
    assert texts["latin1-as-utf8"] == texts["utf8-fr"]
    assert "é" in texts["utf8-fr"] and "\ufffd" not in texts["latin1-as-utf8"]


def _austen(n):
    import gzip

    lines = gzip.open(REPO / "tests" / "fixtures" / "dedup" / "austen_paragraphs.txt.gz", "rt").read().splitlines()
    return [line.split("\t", 1)[1] for line in lines[:n]]


def test_dedup_against_an_earlier_crawl_uses_its_saved_index(tmp_path):
    import json

    paragraphs = _austen(60)
    old = [{"id": f"old-{i}", "text": t} for i, t in enumerate(paragraphs[:40])]
    old.append({"id": "old-copy", "text": paragraphs[0].upper()})  # an exact duplicate inside the old crawl
    (tmp_path / "old.jsonl").write_text("".join(json.dumps(d) + "\n" for d in old))
    store = ArtifactStore(tmp_path / "store")
    dedup = get_stage("dedup")
    first = run_stage(dedup, [tmp_path / "old.jsonl"], store=store, options=OPTIONS)
    assert first.manifest["stats"]["dropped"] == {"exact_duplicate": 1}
    removed = pq.read_table(first.path / "removed.parquet").to_pylist()
    assert removed[0]["id"] == "old-copy" and removed[0]["duplicate_of"] == "old-0"

    words = paragraphs[5].split()
    near = " ".join(words[:-2] + ["indeed", "so"])  # two words changed at the end: J well above 0.8
    new = [{"id": "new-near", "text": near}] + [{"id": f"new-{i}", "text": t} for i, t in enumerate(paragraphs[40:])]
    pq.write_table(pa.Table.from_pylist(new), tmp_path / "new.parquet")
    alone = run_stage(dedup, [tmp_path / "new.parquet"], store=store, options=OPTIONS)
    assert alone.manifest["stats"]["docs_out"] == len(new)
    against = run_stage(dedup, [tmp_path / "new.parquet"], store=store, options=OPTIONS, against=[first.path])
    assert against.key != alone.key
    assert against.manifest["stats"]["docs_out"] == len(new) - 1
    [row] = pq.read_table(against.path / "removed.parquet").to_pylist()
    assert row["id"] == "new-near" and row["duplicate_of"] == "old-5" and row["kind"] == "near"
    assert against.manifest["stats"]["extra"]["against_documents"] == 40


def test_extract_on_a_users_jsonl_keeps_its_columns(tmp_path):
    import json

    page = _page("python_tutorial_appetite.html").decode("utf-8")
    (tmp_path / "pages.jsonl").write_text(json.dumps({"id": "p1", "url": "http://x/a", "source": "mine", "html": page}) + "\n")
    result = run_stage(get_stage("extract"), [tmp_path / "pages.jsonl"], store=ArtifactStore(tmp_path / "s"), options=OPTIONS)
    [row] = pq.read_table(result.path / "part-00000.parquet").to_pylist()
    assert (row["id"], row["url"], row["source"]) == ("p1", "http://x/a", "mine")
    assert "html" not in row and "Python" in row["text"]


def test_a_new_warc_in_the_crawl_folder_computes_only_its_shards(sample_warcs, tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for warc in sample_warcs[:-1]:
        shutil.copy(warc, crawl)
    store = ArtifactStore(tmp_path / "store")
    before = ingest([crawl], store)
    before_text = run_stage(get_stage("extract"), [before.path], store=store, options=OPTIONS)
    shutil.copy(sample_warcs[-1], crawl)
    after = ingest([crawl], store)
    after_text = run_stage(get_stage("extract"), [after.path], store=store, options=OPTIONS)
    n = len(sample_warcs)
    for result in (after, after_text):
        assert result.manifest["stats"]["shards"] == {"total": n, "computed": 1, "reused": n - 1}
    for i in range(n - 1):  # the reused parts are the same files, not recomputations
        assert (after_text.path / f"part-{i:05d}.parquet").stat().st_ino == (before_text.path / f"part-{i:05d}.parquet").stat().st_ino


def test_dedup_counts_a_bad_jsonl_line_once(tmp_path):
    import json

    lines = [json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(_austen(3))]
    (tmp_path / "c.jsonl").write_text(lines[0] + "\n{broken\n" + "\n".join(lines[1:]) + "\n")
    result = run_stage(get_stage("dedup"), [tmp_path / "c.jsonl"], store=ArtifactStore(tmp_path / "s"), options=OPTIONS)
    stats = result.manifest["stats"]
    assert stats["faults"] == {"bad_json_line": 1} and stats["docs_out"] == 3
    assert stats["fault_messages"] == ["c.jsonl:2: not valid JSON (Expecting property name enclosed in double quotes)"]
