"""iter_html_records on a real wget crawl, then on damaged copies of it.

The oracle for the clean crawl is the HTTP server's own log of what it sent; the oracle for a
damaged copy is the clean read plus where the damage was put (gzip member offsets are found by
zlib, independently of the reader). Every test runs under a timeout: a resync loop that does not
advance shows up as a failure, not a hung suite.
"""
from __future__ import annotations

import gzip
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from pipeline.warc_reader import GZIP_MAGIC, SCAN_CHUNK, ReaderOptions, iter_html_records, sniff_html
from warc_fixtures import gzip_member_offsets, warc_crawl  # noqa: F401  (warc_crawl: fixture)

pytestmark = pytest.mark.timeout(60)

SNIFFED = {"/raw-page", "/untyped"}            # HTML sent without an HTML Content-Type
NOT_HTML = {"/logo.png", "/style.css", "/blob.bin"}


class Outcome:
    """Everything one read produced."""

    def __init__(self, path: Path, options: ReaderOptions | None = None):
        self.faults: list[tuple[str, str]] = []
        self.skips: Counter = Counter()
        self.docs = list(iter_html_records(
            path, lambda reason, message: self.faults.append((reason, message)), self._skip,
            options))
        self.ids = [doc["id"] for doc in self.docs]
        self.by_id = {doc["id"]: doc for doc in self.docs}

    def _skip(self, reason: str) -> None:
        self.skips[reason] += 1

    @property
    def reasons(self) -> list[str]:
        return [reason for reason, _ in self.faults]

    @property
    def records(self) -> int:
        """Records accounted for: yielded or skipped (not lost to a fault)."""
        return len(self.docs) + sum(self.skips.values())


def offset_of(doc: dict) -> int:
    return int(doc["source"].rsplit(":", 1)[1])


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_one_line_naming(message: str, name: str, offset: int | None = None) -> None:
    assert "\n" not in message and message.startswith(f"{name}: ")
    if offset is not None:
        assert re.search(rf"\bat offset {offset}\b", message), message


@pytest.fixture(scope="module")
def clean(warc_crawl):
    return Outcome(warc_crawl.warc_gz)


@pytest.fixture(scope="module")
def gz_bytes(warc_crawl) -> bytes:
    return warc_crawl.warc_gz.read_bytes()


@pytest.fixture(scope="module")
def members(gz_bytes) -> list[tuple[int, int]]:
    """(start, end) of every gzip member in wget's file: one record each."""
    starts = gzip_member_offsets(gz_bytes)
    return list(zip(starts, starts[1:] + [len(gz_bytes)]))


def response_member(members, gz_bytes, url_path: str) -> int:
    """Index of the member holding the response record for url_path."""
    for i, (start, end) in enumerate(members):
        record = gzip.decompress(gz_bytes[start:end])
        if b"WARC-Type: response" in record and re.search(
                rb"WARC-Target-URI: <?http://[^/]+" + re.escape(url_path.encode()) + rb">?\r\n", record):
            return i
    raise AssertionError(f"no response for {url_path}")


def rebuild(gz_bytes, members, index: int, record: bytes) -> bytes:
    start, end = members[index]
    return gz_bytes[:start] + gzip.compress(record) + gz_bytes[end:]


def record_of(gz_bytes, members, index: int) -> bytes:
    start, end = members[index]
    return gzip.decompress(gz_bytes[start:end])


def with_block(record: bytes, block: bytes) -> bytes:
    """The record with a new block and a Content-Length that matches it."""
    header = record.split(b"\r\n\r\n", 1)[0]
    header = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(block), header)
    return header + b"\r\n\r\n" + block + b"\r\n\r\n"


# -- the clean crawl ---------------------------------------------------------------------------

def test_every_html_response_the_server_sent_is_read(warc_crawl, clean):
    sent_html = Counter(
        path for path, status, ctype in warc_crawl.served
        if ctype.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")
        or path in SNIFFED)
    read = Counter(doc["url"].removeprefix(warc_crawl.base_url) for doc in clean.docs)
    assert read == sent_html
    assert clean.faults == []


def test_bodies_are_dechunked_and_decoded(warc_crawl, clean):
    for doc in clean.docs:
        path = doc["url"].removeprefix(warc_crawl.base_url)
        if path in warc_crawl.html_bodies:
            assert doc["html"] == warc_crawl.html_bodies[path], path
    by_path = {doc["url"].removeprefix(warc_crawl.base_url): doc for doc in clean.docs}
    # Four of these went over the wire gzip/deflate/brotli-encoded or chunked.
    for path in ("/gzip.html", "/deflate.html", "/brotli.html", "/chunked.html"):
        assert by_path[path]["html"].startswith(b"<!DOCTYPE html>"), path
    assert "Straßenbahn".encode() in by_path["/gzip.html"]["html"]


def test_fields_match_what_was_sent(warc_crawl, clean):
    sent = {(path, status, ctype) for path, status, ctype in warc_crawl.served}
    for doc in clean.docs:
        path = doc["url"].removeprefix(warc_crawl.base_url)
        assert (path, doc["http_status"], doc["content_type"]) in sent, doc["url"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["warc_date"])
        assert isinstance(doc["html"], bytes)
    statuses = {doc["url"].removeprefix(warc_crawl.base_url): doc["http_status"] for doc in clean.docs}
    assert statuses["/moved"] == 301 and statuses["/missing.html"] == 404
    assert len(set(clean.ids)) == len(clean.ids)
    assert all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in clean.ids)   # urn:uuid: and <> gone


def test_source_points_at_the_record(gz_bytes, members, clean):
    starts = {start for start, _ in members}
    for doc in clean.docs:
        offset = offset_of(doc)
        assert offset in starts
        record = gzip.decompress(gz_bytes[offset:dict(members)[offset]])
        assert f"WARC-Record-ID: <urn:uuid:{doc['id']}>".encode() in record


def test_other_records_are_counted_not_yielded(warc_crawl, members, clean):
    assert clean.skips["request_record"] == len(warc_crawl.served)
    assert clean.skips["not_html"] == len(NOT_HTML)
    assert clean.skips["warcinfo_record"] == 1
    # wget closes with a metadata (manifest) and a resource (its arguments) record.
    assert clean.skips["metadata_record"] == 1 and clean.skips["resource_record"] == 1
    assert clean.records == len(members)


def test_uncompressed_warc_reads_the_same(warc_crawl, clean):
    raw = Outcome(warc_crawl.warc)
    assert raw.faults == []
    assert raw.ids == clean.ids
    assert [d["html"] for d in raw.docs] == [d["html"] for d in clean.docs]
    assert raw.skips == clean.skips
    data = warc_crawl.warc.read_bytes()
    for doc in raw.docs:
        assert data[offset_of(doc):].startswith(b"WARC/1.")


def test_whole_file_gzip_reads_the_same(tmp_path, warc_crawl, clean):
    # Not how WARCs are published, but `gzip crawl.warc` makes one: one member for all records.
    path = write(tmp_path, "whole.warc.gz", gzip.compress(warc_crawl.warc.read_bytes()))
    whole = Outcome(path)
    assert whole.faults == [] and whole.ids == clean.ids


def test_html_larger_than_the_limit_is_skipped(warc_crawl, clean):
    sizes = sorted(len(d["html"]) for d in clean.docs)
    limit = sizes[len(sizes) // 2]
    capped = Outcome(warc_crawl.warc_gz, ReaderOptions(max_html_bytes=limit))
    assert capped.ids == [d["id"] for d in clean.docs if len(d["html"]) <= limit]
    assert capped.skips["html_too_large"] == sum(1 for s in sizes if s > limit) > 0


@pytest.mark.parametrize("body, is_html", [
    (b"<!DOCTYPE html>\n<html><body>x</body></html>", True),
    (b"\xef\xbb\xbf  <!doctype HTML><title>t</title>", True),
    (b"<HTML><HEAD><TITLE>old</TITLE></HEAD>", True),
    (b'<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"></html>', True),
    (b"<!-- generated -->\n<html lang=en>", True),
    (b'<?xml version="1.0"?><rss version="2.0"><channel/></rss>', False),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", False),
    (b'{"html": "<html>"}', False),
    (b"body { color: red }", False),
    (b"", False),
])
def test_sniff_html(body, is_html):
    assert sniff_html(body) is is_html


# -- damaged files -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, data", [
    ("empty.warc", b""),
    ("empty.warc.gz", b""),
])
def test_empty_file(tmp_path, name, data):
    out = Outcome(write(tmp_path, name, data))
    assert out.docs == [] and out.reasons == ["empty_file"]
    assert_one_line_naming(out.faults[0][1], name)


def test_files_that_are_not_warc(tmp_path, warc_crawl):
    site = warc_crawl.warc_gz.parent / "site"
    cases = {
        "image.warc": (site / "logo.png").read_bytes(),
        "notes.warc": "Just a text file.\nNothing to see here, über nichts.\n".encode() * 20,
        "page.warc": (site / "index.html").read_bytes(),
        "page.warc.gz": (site / "index.html").read_bytes(),
        "gzipped-page.warc.gz": gzip.compress((site / "index.html").read_bytes()),
    }
    for name, data in cases.items():
        out = Outcome(write(tmp_path, name, data))
        assert out.docs == [] and out.reasons == ["not_a_warc"], name
        assert_one_line_naming(out.faults[0][1], name)
    assert "PNG" in Outcome(tmp_path / "image.warc").faults[0][1]


@pytest.mark.parametrize("where", ["magic-1", "magic-2", "gzip-header", "warc-header", "body",
                                   "gzip-trailer"])
def test_truncated_gzip_keeps_every_record_before_the_cut(tmp_path, gz_bytes, members, clean,
                                                          where):
    index = response_member(members, gz_bytes, "/doc.xhtml")
    start, end = members[index]
    cut = {"magic-1": start + 1, "magic-2": start + 2, "gzip-header": start + 5,
           "warc-header": start + 20, "body": (start + end) // 2, "gzip-trailer": end - 3}[where]
    out = Outcome(write(tmp_path, "cut.warc.gz", gz_bytes[:cut]))
    assert out.ids == [d["id"] for d in clean.docs if offset_of(d) < start]
    assert out.reasons == ["truncated_gzip"]
    assert_one_line_naming(out.faults[0][1], "cut.warc.gz", start)


def test_truncated_uncompressed_warc(tmp_path, warc_crawl, clean):
    raw = Outcome(warc_crawl.warc)
    data = warc_crawl.warc.read_bytes()
    victim = raw.docs[len(raw.docs) // 2]
    offset = offset_of(victim)
    out = Outcome(write(tmp_path, "cut.warc", data[:offset + 700]))
    assert out.ids == [d["id"] for d in raw.docs if offset_of(d) < offset]
    assert out.reasons == ["truncated_record"]
    assert_one_line_naming(out.faults[0][1], "cut.warc", offset)


@pytest.mark.parametrize("garbage_len", [500, SCAN_CHUNK - 1, SCAN_CHUNK, SCAN_CHUNK + 1])
def test_garbage_between_gzip_members_loses_nothing(tmp_path, gz_bytes, members, clean, garbage_len):
    # The larger sizes put the next member's magic bytes on either side of a scan-chunk edge.
    rng = random.Random(garbage_len)
    garbage = rng.randbytes(garbage_len)
    # A fake member start inside the garbage must not fool the resync scan.
    garbage = garbage[:100] + b"\x1f\x8b\x08\x00" + garbage[104:]
    index = len(members) // 2
    at = members[index][0]
    out = Outcome(write(tmp_path, "junk.warc.gz", gz_bytes[:at] + garbage + gz_bytes[at:]))
    assert out.ids == clean.ids and out.records == clean.records
    assert out.reasons == ["garbage_between_records"]
    assert_one_line_naming(out.faults[0][1], "junk.warc.gz", at)
    assert f"resumed at offset {at + garbage_len}" in out.faults[0][1]
    moved = [offset_of(d) for d in out.docs if offset_of(d) > at]
    assert moved == [offset_of(d) + garbage_len for d in clean.docs if offset_of(d) >= at]


def test_garbage_between_uncompressed_records_and_at_the_end(tmp_path, warc_crawl):
    raw = Outcome(warc_crawl.warc)
    data = warc_crawl.warc.read_bytes()
    at = offset_of(raw.docs[3])
    garbage = b"\x00\xff junk line\r\n" * 40
    out = Outcome(write(tmp_path, "junk.warc", data[:at] + garbage + data[at:] + garbage))
    assert out.ids == raw.ids and out.records == raw.records
    assert out.reasons == ["garbage_between_records", "trailing_garbage"]
    assert_one_line_naming(out.faults[0][1], "junk.warc", at)
    assert_one_line_naming(out.faults[1][1], "junk.warc", len(data) + len(garbage))


@pytest.mark.parametrize("delta", [-30, +30, +10**8, "abc"])
def test_lying_content_length_in_gzip(tmp_path, gz_bytes, members, clean, delta):
    index = response_member(members, gz_bytes, "/fr.html")
    record = record_of(gz_bytes, members, index)
    declared = int(re.search(rb"Content-Length: (\d+)", record).group(1))
    lie = b"abc" if delta == "abc" else b"%d" % (declared + delta)
    bad = record.replace(b"Content-Length: %d" % declared, b"Content-Length: " + lie, 1)
    out = Outcome(write(tmp_path, "lie.warc.gz", rebuild(gz_bytes, members, index, bad)))
    victim = members[index][0]
    assert out.ids == [d["id"] for d in clean.docs if offset_of(d) != victim]
    assert out.records == clean.records - 1
    assert out.reasons == ["bad_content_length"]
    assert_one_line_naming(out.faults[0][1], "lie.warc.gz", victim)


@pytest.mark.parametrize("delta", [-30, +30, +10**8, "abc"])
def test_lying_content_length_uncompressed(tmp_path, warc_crawl, delta):
    raw = Outcome(warc_crawl.warc)
    data = warc_crawl.warc.read_bytes()
    victim = offset_of(raw.docs[2])
    found = re.compile(rb"Content-Length: (\d+)").search(data, victim)
    declared = int(found.group(1))
    lie = b"abc" if delta == "abc" else b"%d" % (declared + delta)
    damaged = data[:found.start(1)] + lie + data[found.end(1):]
    out = Outcome(write(tmp_path, "lie.warc", damaged))
    assert out.ids == [d["id"] for d in raw.docs if offset_of(d) != victim]
    assert out.records == raw.records - 1
    assert out.reasons == ["bad_content_length"]
    assert_one_line_naming(out.faults[0][1], "lie.warc", victim)


def _binary_status(block):
    return random.Random(7).randbytes(60) + block[60:]


@pytest.mark.parametrize("damage", [
    pytest.param(lambda block: b"\x00\x01garbage" + block[block.index(b"\r\n"):], id="status-line"),
    pytest.param(_binary_status, id="binary"),
    pytest.param(lambda block: block.replace(b"\r\n\r\n", b"\r\n", 1), id="no-blank-line"),
    pytest.param(lambda block: block.replace(b"\r\n", b"\r\nX-Pad: " + b"a" * 40000 + b"\r\n", 1),
                 id="header-over-32k"),
])
def test_corrupt_http_header_block(tmp_path, gz_bytes, members, clean, damage):
    index = response_member(members, gz_bytes, "/fr.html")
    record = record_of(gz_bytes, members, index)
    block = record.split(b"\r\n\r\n", 1)[1][:-4]
    bad = with_block(record, damage(block))
    out = Outcome(write(tmp_path, "http.warc.gz", rebuild(gz_bytes, members, index, bad)))
    victim = members[index][0]
    assert out.ids == [d["id"] for d in clean.docs if offset_of(d) != victim]
    assert out.reasons == ["bad_http_header"]
    assert_one_line_naming(out.faults[0][1], "http.warc.gz", victim)


def test_bare_lf_http_header_is_read(tmp_path, gz_bytes, members, clean):
    # Some servers end header lines with LF alone; the page is fine.
    index = response_member(members, gz_bytes, "/fr.html")
    record = record_of(gz_bytes, members, index)
    block = record.split(b"\r\n\r\n", 1)[1][:-4]
    head, body = block.split(b"\r\n\r\n", 1)
    lf = with_block(record, head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    out = Outcome(write(tmp_path, "lf.warc.gz", rebuild(gz_bytes, members, index, lf)))
    assert out.faults == [] and out.ids == clean.ids
    def fields(doc):   # offsets after the rebuilt member moved; everything else must not
        return {key: value for key, value in doc.items() if key != "source"}
    assert [fields(d) for d in out.docs] == [fields(d) for d in clean.docs]


@pytest.mark.parametrize("url_path, damage", [
    ("/gzip.html", lambda body: body[:40] + b"\x00" * 30 + body[70:]),
    ("/chunked.html", lambda body: b"zz\r\n" + body[body.index(b"\r\n") + 2:]),
])
def test_undecodable_body_loses_only_its_record(tmp_path, gz_bytes, members, clean, url_path, damage):
    index = response_member(members, gz_bytes, url_path)
    record = record_of(gz_bytes, members, index)
    head, body = record.split(b"\r\n\r\n", 2)[1:]
    bad = with_block(record, head + b"\r\n\r\n" + damage(body[:-4]))
    out = Outcome(write(tmp_path, "enc.warc.gz", rebuild(gz_bytes, members, index, bad)))
    victim = members[index][0]
    assert out.ids == [d["id"] for d in clean.docs if offset_of(d) != victim]
    assert out.reasons == ["bad_content_encoding"]
    assert_one_line_naming(out.faults[0][1], "enc.warc.gz", victim)


def test_truncated_whole_file_gzip_is_reported(tmp_path, warc_crawl, clean):
    data = gzip.compress(warc_crawl.warc.read_bytes())
    out = Outcome(write(tmp_path, "whole.warc.gz", data[: len(data) // 2]))
    assert out.reasons == ["truncated_gzip"]
    assert 0 < len(out.ids) < len(clean.ids) and out.ids == clean.ids[:len(out.ids)]
    assert all(out.by_id[i]["html"] == clean.by_id[i]["html"] for i in out.ids)


def test_random_cuts_keep_exactly_the_whole_members(tmp_path, gz_bytes, members, clean):
    rng = random.Random(1)
    ends = {start: end for start, end in members}
    for cut in sorted(rng.sample(range(1, len(gz_bytes)), 25)) + [members[5][1]]:
        out = Outcome(write(tmp_path, "cut.warc.gz", gz_bytes[:cut]))
        assert out.ids == [d["id"] for d in clean.docs if ends[offset_of(d)] <= cut], cut
        on_boundary = cut in ends.values()
        assert out.reasons == ([] if on_boundary else ["truncated_gzip"]), (cut, out.faults)


def test_random_byte_flips_lose_at_most_the_damaged_record(tmp_path, gz_bytes, members, clean):
    rng = random.Random(2)
    for _ in range(40):
        at = rng.randrange(len(gz_bytes))
        damaged = bytearray(gz_bytes)
        damaged[at] ^= 1 << rng.randrange(8)
        out = Outcome(write(tmp_path, "flip.warc.gz", bytes(damaged)))
        hit = max(start for start, _ in members if start <= at)
        assert set(out.ids) <= set(clean.ids)
        lost = {d["id"] for d in clean.docs} - set(out.ids)
        assert lost <= {d["id"] for d in clean.docs if offset_of(d) == hit}, (at, out.faults)
        for doc in out.docs:
            assert doc["html"] == clean.by_id[doc["id"]]["html"]
        assert all("\n" not in message for _, message in out.faults)


def test_random_byte_flips_uncompressed(tmp_path, warc_crawl):
    raw = Outcome(warc_crawl.warc)
    data = warc_crawl.warc.read_bytes()
    starts = [m.start() for m in re.finditer(rb"(?m)^WARC/1\.0\r\n", data)]
    rng = random.Random(3)
    for _ in range(40):
        at = rng.randrange(len(data))
        damaged = bytearray(data)
        damaged[at] ^= 1 << rng.randrange(8)
        out = Outcome(write(tmp_path, "flip.warc", bytes(damaged)))
        hit = max(start for start in starts if start <= at)
        # Compared by offset: a flip may land in a record ID or a body, which no reader can see.
        clean_offsets = {offset_of(d) for d in raw.docs}
        read_offsets = {offset_of(d) for d in out.docs}
        assert read_offsets <= clean_offsets
        assert clean_offsets - read_offsets <= {hit}, (at, out.faults)
        for doc in out.docs:
            if offset_of(doc) != hit:
                assert doc["html"] == raw.by_id[doc["id"]]["html"]
        assert all("\n" not in message for _, message in out.faults)


def test_garbage_full_of_false_gzip_starts(tmp_path, gz_bytes, members, clean):
    # Every 3 bytes look like a member start; each must be rejected without losing the records.
    garbage = GZIP_MAGIC * 20000 + b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\x03\xff\xff" * 2000
    at = members[len(members) // 3][0]
    out = Outcome(write(tmp_path, "false-starts.warc.gz", gz_bytes[:at] + garbage + gz_bytes[at:]))
    assert out.ids == clean.ids
    assert len(out.faults) == 1 and f"resumed at offset {at + len(garbage)}" in out.faults[0][1]


def test_a_file_damaged_everywhere_is_given_up_on(tmp_path, warc_crawl):
    raw = Outcome(warc_crawl.warc)
    data = warc_crawl.warc.read_bytes()
    at = offset_of(raw.docs[2])
    broken = b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 5\r\n\r\nxx\r\n"  # 3 bytes short
    out = Outcome(write(tmp_path, "ruined.warc", data[:at] + broken * 50 + data[at:]),
                  ReaderOptions(max_resyncs=20))
    assert out.ids == raw.ids[:2]
    assert out.reasons == ["bad_content_length"] * 21 + ["too_many_faults"]   # the first run + 20
    everywhere = Outcome(tmp_path / "ruined.warc", ReaderOptions(max_resyncs=100))
    assert everywhere.ids == raw.ids and everywhere.reasons == ["bad_content_length"] * 50


def test_unreadable_path_is_a_fault_not_an_exception(tmp_path):
    out = Outcome(tmp_path)   # a directory
    assert out.docs == [] and out.reasons == ["unreadable_file"]
    assert_one_line_naming(out.faults[0][1], tmp_path.name)


@pytest.mark.parametrize("damage", [
    # The record's closing CRLF CRLF loses its last byte: the next record has no newline before it.
    pytest.param(lambda rec: rec[:-1] + b"J", id="closing-crlf"),
    # A header line ends in a bare LF: FastWARC then misses the Content-Length that follows it.
    pytest.param(lambda rec: rec.replace(b"\r\nContent-Length", b"M\nContent-Length", 1),
                 id="bare-lf-in-warc-header"),
])
def test_damage_to_one_record_spares_the_next(tmp_path, warc_crawl, damage):
    raw = Outcome(warc_crawl.warc)
    data = warc_crawl.warc.read_bytes()
    victim, after = offset_of(raw.docs[3]), offset_of(raw.docs[4])
    end = data.index(b"\r\n\r\nWARC/1.0\r\n", victim) + 4   # the victim record's end
    damaged = data[:victim] + damage(data[victim:end]) + data[end:]
    assert len(damaged) == len(data)
    out = Outcome(write(tmp_path, "one.warc", damaged))
    assert set(raw.ids) - set(out.ids) <= {raw.docs[3]["id"]}
    assert raw.docs[4]["id"] in out.ids and offset_of(out.by_id[raw.docs[4]["id"]]) == after
    # At most the damaged record is lost, whatever its type (the one after it is a request).
    assert out.records >= raw.records - 1
    assert len(out.faults) == 1
