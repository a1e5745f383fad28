"""Read the HTML responses out of a WARC file (.warc or .warc.gz), surviving damaged files.

    iter_html_records(path, on_fault, on_skip=None, options=None) -> Iterator[dict]

yields one dict per HTTP response whose body is HTML (by Content-Type, or sniffed when the type
is missing or generic): id, url, warc_date, content_type, html, http_status, source. Every other
record is counted through on_skip(reason); every fault is one on_fault(reason, message) call
with a one-line message naming the file and byte offset.

FastWARC does the reading; on a clean file nothing else runs per record. On damaged files it
is not enough by itself (FastWARC 2.0.1, checked by hand):
  - a truncated file (cut mid gzip member or mid record) ends the iteration silently, and the
    last record comes out with a short body;
  - garbage between records, or a Content-Length that lies, raises OSError at the *next*
    record, after the lying record was already handed out with a wrong body;
  - a body whose chunked/gzip encoding is broken raises while reading, and the iterator is
    unusable afterwards.
So every record is held back until FastWARC has parsed the header of the one after it (which
proves the held record's framing), and when FastWARC stops, a small pure-Python check of the
record framing at the offset where it stopped decides what went wrong. The reader then scans
forward for the next record start (a gzip member that inflates to "WARC/", or a "WARC/1.x"
line) and restarts FastWARC there, on a file object seeked to that offset (never the whole
file in memory). A file gzipped as one member (not how WARCs are published) has no record
offsets to resume from: it is read as FastWARC reads it, and damage loses the rest of it.
"""
from __future__ import annotations

import dataclasses
import re
import zlib
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from fastwarc.warc import ArchiveIterator, WarcHeader, WarcRecordType

from pipeline.knobs import knob

GZIP_MAGIC = b"\x1f\x8b\x08"   # gzip id bytes + deflate method: how every member starts
_GZIP_START = re.compile(re.escape(GZIP_MAGIC))
_VERSION_LINE = re.compile(rb"WARC/1\.\d\r\n")   # how every record starts
SCAN_CHUNK = 1 << 20           # resync scans read this much at a time: memory stays bounded
MAX_WARC_HEADER = 32 << 10     # as FastWARC: a longer WARC header is damage, not data
# A real member yields "WARC/" from its first few hundred bytes (gzip header + one deflate block
# header); the resync scan tests candidates on this many bytes, never more.
CANDIDATE_BYTES = 4096

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Content types that say nothing about the body; such bodies are sniffed.
GENERIC_TYPES = frozenset({
    "", "application/octet-stream", "binary/octet-stream", "application/unknown",
    "unknown/unknown", "application/x-unknown-content-type", "*/*",
})
SKIP_BY_RECORD_TYPE = {   # keyed by int: FastWARC's record type enum is not hashable
    int(kind): f"{kind}_record"
    for kind in (WarcRecordType.warcinfo, WarcRecordType.request, WarcRecordType.metadata,
                 WarcRecordType.revisit, WarcRecordType.resource, WarcRecordType.conversion,
                 WarcRecordType.continuation)
}
_RESPONSE = WarcRecordType.response
# Header keys as FastWARC enums: ~4x faster lookups than by string.
_TARGET_URI, _WARC_DATE = WarcHeader.WARC_TARGET_URI, WarcHeader.WARC_DATE
_CONTENT_TYPE = WarcHeader.CONTENT_TYPE    # the same name serves the HTTP header map
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$")
_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclasses.dataclass(frozen=True)
class ReaderOptions:
    max_html_bytes: int = knob(
        8 << 20, "HTML bodies larger than this (after decoding) are skipped as html_too_large; "
                 "bounds the memory one record can take")
    max_resyncs: int = knob(
        100, "Give up on a file (too_many_faults) after resuming past this many damaged places; "
             "bounds the time a file of crafted garbage can take")


class _Fault(NamedTuple):
    reason: str
    detail: str


# -- deciding what is HTML ---------------------------------------------------------------------

def sniff_html(body: bytes) -> bool:
    """Does this body start like an HTML or XHTML document? (For bodies with no useful type.)"""
    head = body[:1024].lstrip(b"\xef\xbb\xbf \t\r\n\x0c").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return True
    # An XML declaration or a leading comment may come first; the html root must follow soon.
    if head.startswith((b"<?xml", b"<!--")):
        return b"<html" in head or b"<!doctype html" in head
    return False


def _response_outcome(rec, name: str, offset: int, max_html_bytes: int):
    """A document dict for an HTML response record; otherwise a skip reason (str) or a _Fault.
    Raises OSError when the body's chunked/content encoding is broken."""
    if not rec.is_http:
        return "not_http_response"
    try:
        # quirks_mode: real servers send bare-LF header lines; strict parsing loses the body.
        rec.parse_http(auto_decode="all", quirks_mode=True)
    except OSError as exc:
        return _Fault("bad_http_header", f"unreadable HTTP header ({exc})")
    http = rec.http_headers
    status = http.status_code
    if status is None:
        line = ascii((http.status_line or "")[:40])
        return _Fault("bad_http_header", f"unreadable HTTP status line {line}")
    content_type = http.get(_CONTENT_TYPE) or ""
    mime = content_type.partition(";")[0].strip().lower()
    if mime not in HTML_TYPES and mime not in GENERIC_TYPES:
        return "not_html"
    body = rec.reader.read(max_html_bytes + 1)
    if not body:
        # A header block with no blank line swallows the body into header "names".
        if any(_HTTP_TOKEN.fullmatch(key) is None for key in http.keys()):
            return _Fault("bad_http_header", "HTTP header block without an end")
        return "empty_html"
    if mime not in HTML_TYPES and not sniff_html(body):
        return "not_html"
    if len(body) > max_html_bytes:
        return "html_too_large"
    source = f"{name}:{offset}"
    record_id = rec.record_id or source   # WARC requires an ID; the offset is unique too
    warc_headers = rec.headers
    url = warc_headers.get(_TARGET_URI) or ""
    return {
        "id": record_id[1:-1].removeprefix("urn:uuid:") if record_id.startswith("<") else record_id,
        "url": url[1:-1] if url.startswith("<") else url,   # wget writes <...> around it
        "warc_date": warc_headers.get(_WARC_DATE) or "",
        "content_type": content_type,
        "html": body,
        "http_status": status,
        "source": source,
    }


# -- checking record framing without FastWARC (only runs where FastWARC stopped) ----------------

class _GzipMember:
    """The inflated bytes of the single gzip member at `offset` (never the members after it)."""

    def __init__(self, f, offset: int):
        self._f, self._next_in = f, offset
        self._inflater = zlib.decompressobj(wbits=31)
        self._out = b""
        self.error: str | None = None
        self.end: int | None = None      # file offset just past the member, once it is seen

    def _inflate(self, limit: int) -> bool:
        """Inflate up to `limit` more bytes into self._out; False when nothing more will come."""
        if self.error or self._inflater.eof:
            return False
        data = self._inflater.unconsumed_tail
        if not data:
            self._f.seek(self._next_in)
            data = self._f.read(SCAN_CHUNK // 16)
            self._next_in += len(data)
            if not data:
                return False    # the file ended inside the member
        try:
            self._out += self._inflater.decompress(data, limit)
        except zlib.error as exc:
            self.error = str(exc)
            return False
        if self._inflater.eof:
            self.end = self._next_in - len(self._inflater.unused_data)
        return True

    def read(self, n: int) -> bytes:
        while len(self._out) < n and self._inflate(n - len(self._out)):
            pass
        data, self._out = self._out[:n], self._out[n:]
        return data

    def skip(self, n: int) -> int:
        skipped = 0
        while skipped < n:
            piece = self.read(min(n - skipped, SCAN_CHUNK))
            if not piece:
                break
            skipped += len(piece)
        return skipped

    def why_short(self) -> _Fault:
        """Why the member gave fewer bytes than the record needs."""
        if self.error:
            return _Fault("corrupt_gzip", f"corrupt gzip member ({self.error})")
        if self.end is None:
            return _Fault("truncated_gzip", "truncated gzip member")
        return _Fault("bad_content_length", "Content-Length longer than its gzip member")


class _RawSpan:
    """Bytes of an uncompressed file from `offset`, with the same interface as _GzipMember."""

    def __init__(self, f, offset: int, size: int):
        self._f, self._pos, self._size = f, offset, size
        self.end = None

    def read(self, n: int) -> bytes:
        self._f.seek(self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def skip(self, n: int) -> int:
        step = min(n, self._size - self._pos)
        self._pos += step
        return step

    def why_short(self) -> _Fault:
        return _Fault("truncated_record", "record cut short by the end of the file")


class _Verdict(NamedTuple):
    fault: _Fault | None   # None: a well-formed record
    end: int               # offset just past the record (when well-formed)


def _check_record_at(f, offset: int, gz: bool, size: int) -> _Verdict:
    """Is there a well-formed WARC record at `offset`: a header, exactly Content-Length bytes
    of block, then CRLF CRLF (and, in .warc.gz, the end of the gzip member)?"""
    if gz:
        f.seek(offset)
        magic = f.read(len(GZIP_MAGIC))
        if magic != GZIP_MAGIC:
            if len(magic) < len(GZIP_MAGIC) and GZIP_MAGIC.startswith(magic):
                return _Verdict(_Fault("truncated_gzip", "truncated gzip member"), offset)
            return _Verdict(_Fault("garbage", "no gzip member"), offset)
        stream = _GzipMember(f, offset)
    else:
        stream = _RawSpan(f, offset, size)
    head = stream.read(MAX_WARC_HEADER)
    if _VERSION_LINE.match(head) is None:
        cut_short = stream.end is None   # (always None for raw files)
        template = b"WARC/1.0\r\n"
        if len(head) < len(template) and cut_short and _VERSION_LINE.match(head + template[len(head):]):
            return _Verdict(stream.why_short(), offset)   # nothing, or a cut-off "WARC/1"
        return _Verdict(_Fault("garbage", "no WARC record"), offset)
    header_end = head.find(b"\r\n\r\n")
    if header_end < 0:
        if len(head) == MAX_WARC_HEADER:
            return _Verdict(_Fault("bad_warc_header", "WARC header longer than 32 KiB"), offset)
        if gz and stream.end is not None:
            return _Verdict(_Fault("bad_warc_header", "WARC header without an end"), offset)
        return _Verdict(stream.why_short(), offset)
    found = _CONTENT_LENGTH.search(head, 0, header_end + 2)
    length = found.group(1) if found else b"0"   # FastWARC reads a missing length as 0
    if not length.isdigit():
        value = length[:20].decode("latin-1")
        return _Verdict(_Fault("bad_content_length", f"Content-Length {value!r} is not a number"),
                        offset)
    block_end = header_end + 4 + int(length)   # where the closing CRLF CRLF belongs
    after_block = b""     # bytes already read past the closing CRLF CRLF
    if len(head) >= block_end + 4:
        tail, after_block = head[block_end:block_end + 4], head[block_end + 4:]
    elif len(head) >= block_end:
        tail = head[block_end:] + stream.read(block_end + 4 - len(head))
    else:
        wanted = block_end - len(head)
        if stream.skip(wanted) < wanted:
            return _Verdict(stream.why_short(), offset)
        tail = stream.read(4)
    if len(tail) < 4:
        return _Verdict(stream.why_short(), offset)
    if tail != b"\r\n\r\n":
        return _Verdict(_Fault("bad_content_length", "Content-Length does not match the record"),
                        offset)
    if not gz:
        return _Verdict(None, offset + block_end + 4)
    # In .warc.gz the member should end here; a longer member means the length was too short.
    after_block = (after_block + stream.read(64)).lstrip(b"\r\n")
    if after_block and not after_block.startswith(b"WARC/"):
        return _Verdict(_Fault("bad_content_length", "Content-Length shorter than the record"),
                        offset)
    while stream.end is None and stream.read(SCAN_CHUNK // 16):
        pass    # run to the member end (a record may share its member with the next one)
    if stream.end is None:
        return _Verdict(stream.why_short(), offset)
    return _Verdict(None, stream.end)


def _first_bad_member(f, offset: int, size: int) -> tuple[_Fault, int] | None:
    """Inflate gzip members one after another up to the end of the file: the first one that is
    corrupt or cut off, with its offset."""
    while offset < size:
        member = _GzipMember(f, offset)
        while member.read(SCAN_CHUNK):
            pass
        if member.end is None:
            return member.why_short(), offset
        offset = member.end
    return None


def _inflates_to_record(data: bytes) -> bool:
    """Does this gzip member start (its first few KiB suffice) inflate to a WARC header?"""
    try:
        return zlib.decompressobj(wbits=31).decompress(data, 5) == b"WARC/"
    except zlib.error:
        return False


def _find_next_record(f, start: int, gz: bool, size: int) -> int | None:
    """Offset of the first record start at or after `start`, scanning SCAN_CHUNK at a time.
    Each candidate is checked in memory, so garbage full of false starts stays linear."""
    # (Not only after a newline: damage may have hit the CRLF CRLF that ends the record before.)
    pattern, lookahead = (_GZIP_START, CANDIDATE_BYTES) if gz else (_VERSION_LINE, 16)
    pos = start
    while pos < size:
        f.seek(pos)
        window = f.read(SCAN_CHUNK + lookahead)
        # A match must begin inside this chunk; the lookahead lets it end past it.
        for found in pattern.finditer(window, 0, SCAN_CHUNK + lookahead):
            if found.start() >= SCAN_CHUNK:
                break
            if not gz or _inflates_to_record(window[found.start():found.start() + CANDIDATE_BYTES]):
                return pos + found.start()
        pos += SCAN_CHUNK
    return None


def _looks_like(head: bytes) -> str:
    """A few words on what a non-WARC file seems to be, for the not_a_warc message."""
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.startswith(GZIP_MAGIC):
        return "gzip data"
    if sniff_html(head):
        return "HTML"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:256]):
        return "text"
    return "binary data"


# -- the reader --------------------------------------------------------------------------------

def iter_html_records(
    path: Path,
    on_fault: Callable[[str, str], None],
    on_skip: Callable[[str], None] | None = None,
    options: ReaderOptions | None = None,
) -> Iterator[dict]:
    """Yield one dict per HTTP response record with an HTML body in the WARC file at `path`:
    id, url, warc_date, content_type, html (bytes, de-chunked and decoded), http_status, source.

    Every other record calls on_skip(reason) (e.g. "request_record", "not_html"). Damage calls
    on_fault(reason, one-line message with file name and offset); records before and after the
    damage are still read. Never raises for bad file content.
    """
    path = Path(path)
    options = options or ReaderOptions()
    on_skip = on_skip or (lambda reason: None)
    name = path.name
    try:
        size = path.stat().st_size
        stream = open(path, "rb")
    except OSError as exc:
        on_fault("unreadable_file", f"{name}: cannot open ({exc.strerror or exc})")
        return
    with stream, open(path, "rb") as probe:   # FastWARC reads `stream`; the checks read `probe`
        if size == 0:
            on_fault("empty_file", f"{name}: empty file (0 bytes)")
            return
        head = probe.read(256)
        # By content, not by name: FastWARC detects gzip the same way.
        gz = head.startswith(GZIP_MAGIC) or (not head.startswith(b"WARC/") and name.endswith(".gz"))
        reader = _Reader(name, gz, size, stream, probe, head, on_fault, on_skip, options)
        start: int | None = 0
        for _ in range(options.max_resyncs + 1):
            resume = yield from reader.read_from(start)
            if resume is None:
                return
            if resume <= start:
                # Cannot happen by construction; a guard so that no file can make this loop.
                on_fault("reader_stuck", f"{name}: no progress past offset {start}")
                return
            start = resume
        on_fault("too_many_faults", f"{name}: damaged in more than {options.max_resyncs} places; "
                                    f"the rest from offset {start} is skipped")


class _Reader:
    """One file's reading state; `read_from` is one FastWARC run."""

    def __init__(self, name, gz, size, stream, probe, head, on_fault, on_skip, options):
        self.name, self.gz, self.size = name, gz, size
        self.stream, self.probe, self.head = stream, probe, head
        self.on_fault, self.on_skip = on_fault, on_skip
        self.max_html_bytes = options.max_html_bytes

    def fault(self, reason: str, detail: str, offset: int, after: str = "") -> None:
        self.on_fault(reason, f"{self.name}: {detail} at offset {offset}{after}")

    def emit(self, offset: int, outcome):
        """Hand out a record whose framing is proven: yield it, count it, or report it."""
        if type(outcome) is dict:
            yield outcome
        elif type(outcome) is str:
            self.on_skip(outcome)
        else:
            self.fault(outcome.reason, outcome.detail, offset)

    def read_from(self, start: int):
        """Run FastWARC from `start` until it stops; yield the documents; return the offset to
        restart from (None when the file is done)."""
        self.stream.seek(start)
        # Not inplace=True: a reused record keeps the previous Content-Length when a damaged
        # header has none (FastWARC 2.0.1), and its body would then be cut at the wrong place.
        records = ArchiveIterator(self.stream, parse_http=False)
        # The last record read, held back until the next header proves where it ended.
        held_offset, held = start, None
        shared_offsets = False
        name, size, on_skip, max_html_bytes = self.name, self.size, self.on_skip, self.max_html_bytes
        while True:   # the hot loop: keep per-record work small
            try:
                rec = next(records)
            except StopIteration:
                error = None
                break
            except Exception as exc:  # FastWARC raises OSError; any error here is file damage
                error = str(exc) or type(exc).__name__
                break
            offset = rec.stream_pos
            if held is not None:
                if type(held) is dict:
                    yield held
                elif type(held) is str:
                    on_skip(held)
                else:
                    self.fault(held.reason, held.detail, held_offset)
                if offset == held_offset or offset >= size:
                    shared_offsets = True   # records share a gzip member (whole file gzipped)
            rtype = rec.record_type
            if rtype == _RESPONSE:
                try:
                    held = _response_outcome(rec, name, offset, max_html_bytes)
                except Exception as exc:
                    # A broken chunked/gzip body; FastWARC's stream cannot go on after it.
                    return self.after_bad_body(offset, str(exc))
            else:
                held = SKIP_BY_RECORD_TYPE.get(int(rtype), "other_record")
            held_offset = offset

        if held is not None and self.gz and not shared_offsets:
            # FastWARC's offset for a record inside a multi-record member is no member start.
            self.probe.seek(held_offset)
            shared_offsets = self.probe.read(len(GZIP_MAGIC)) != GZIP_MAGIC
        if shared_offsets:
            # Records inside one big gzip member have no offsets to check or resume from, so
            # FastWARC is trusted, except that a silent stop is checked for a cut-off member.
            if error is None:
                damage = _first_bad_member(self.probe, start, size)
            else:
                damage = (_Fault("corrupt_gzip", f"unreadable data ({error}) after the record"),
                          held_offset)
            if damage is None or error is not None:
                yield from self.emit(held_offset, held)
            if damage is not None:
                (reason, detail), offset = damage
                self.fault(reason, detail, offset, "; the rest of that gzip member is lost")
            return None
        if held is not None:
            verdict = _check_record_at(self.probe, held_offset, self.gz, size)
            if verdict.fault is not None:
                return self.skip_damage(verdict.fault, held_offset)
            yield from self.emit(held_offset, held)
            if verdict.end >= size or self.only_padding_from(verdict.end):
                return None
            # FastWARC may have framed the held record differently (a bare LF in its header, say)
            # and failed somewhere else: rerun it from where this check says the next one starts.
            return verdict.end
        # FastWARC failed on, or silently stopped before, the bytes at `start`.
        verdict = _check_record_at(self.probe, start, self.gz, size)
        if verdict.fault is None:
            # Well framed, yet FastWARC cannot parse it (e.g. a malformed header line).
            self.fault("bad_warc_header", f"record FastWARC cannot read ({error or 'no error'})",
                       start)
            return verdict.end if verdict.end < size else None
        return self.skip_damage(verdict.fault, start)

    def after_bad_body(self, offset: int, error: str) -> int | None:
        verdict = _check_record_at(self.probe, offset, self.gz, self.size)
        if verdict.fault is not None:
            return self.skip_damage(verdict.fault, offset)
        self.fault("bad_content_encoding", f"undecodable HTTP body ({error})", offset)
        return verdict.end if verdict.end < self.size else None

    def skip_damage(self, fault: _Fault, offset: int) -> int | None:
        """Report the damage at `offset` and return where the next record starts (or None)."""
        resume = _find_next_record(self.probe, offset + 1, self.gz, self.size)
        after = (f"; resumed at offset {resume} ({resume - offset} bytes skipped)"
                 if resume is not None else "; no record after it")
        reason, detail = fault
        if reason == "garbage":
            if offset == 0 and resume is None:
                self.on_fault("not_a_warc",
                              f"{self.name}: not a WARC file (starts like {_looks_like(self.head)})")
                return None
            if resume is None:
                reason, detail = "trailing_garbage", f"{self.size - offset} bytes of garbage"
            else:
                reason, detail = "garbage_between_records", f"{resume - offset} bytes of garbage"
        elif reason == "truncated_record" and resume is not None:
            # The file goes on after the "end of file" the record claimed: its length lies.
            reason, detail = "bad_content_length", "Content-Length past the next record"
        self.fault(reason, detail, offset, after)
        return resume

    def only_padding_from(self, offset: int) -> bool:
        """Some writers end a file with a few stray newlines; that is not damage."""
        if self.size - offset > 16:
            return False
        self.probe.seek(offset)
        return not self.probe.read().strip(b"\r\n")
