"""Finding input files and reading documents from Parquet, JSONL or JSON.

Every stage after `ingest` accepts a user's own corpus: Parquet or JSONL (optionally .gz) with a
`text` column, or a .json file holding an array of such objects. An `id` is made from the file
name and row number when the column is missing.

Input expansion checks what it can cheaply before any work starts, so that a user's mistake is
one line naming the file: a folder of WARC files given to a text stage ("run ingest first"), a
file that is not what its suffix says, Parquet without the needed column, an artifact of the
wrong stage. Files of another kind found in a folder are skipped and named in one note line.
"""
from __future__ import annotations

import functools
import glob
import gzip
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ShardError, StageError
from storage.store import artifact_data_files, is_artifact, load_manifest

DOCUMENT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json")
WARC_SUFFIXES = (".warc", ".warc.gz")
READ_BATCH_ROWS = 1024
SNIFF_BYTES = 64 << 10
MAX_JSON_SNIFF_BYTES = 64 << 20  # a .json file this small is parsed whole while planning
DOCUMENT_LIST_KEYS = ("documents", "docs", "data", "rows", "records", "items")
_noted: set[str] = set()  # note lines already printed by this process (plan() runs more than once)


def an(word: str) -> str:
    """'an ingest', 'a dedup': the article that goes with a stage name."""
    return f"{'an' if word[:1].lower() in 'aeio' else 'a'} {word}"


def has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def suffix_of(path: Path) -> str:
    """The file's known suffix (.warc.gz, .jsonl.gz, ...), else its last suffix."""
    name = path.name.lower()
    for s in sorted(WARC_SUFFIXES + DOCUMENT_SUFFIXES, key=len, reverse=True):
        if name.endswith(s):
            return s
    return path.suffix.lower() or "(no suffix)"


def stage_inputs(stage: str, suffixes: Sequence[str] = DOCUMENT_SUFFIXES, require: str | None = "text"):
    """A stage's `input_files`: `expand_inputs` that names the stage and checks the column it reads."""
    return functools.partial(expand_inputs, suffixes=tuple(suffixes), stage=stage, require=require)


_TEXT = "text"


def expand_inputs(inputs: Sequence[str | os.PathLike], suffixes: Sequence[str], *, stage: str | None = None,
                  require: str | None = _TEXT) -> list[Path]:
    """Files, folders (searched recursively), globs and artifact folders → a sorted, de-duplicated file list.

    An artifact folder contributes exactly the data files its manifest lists (not side files).
    A file named explicitly must be usable (StageError otherwise); in a folder or a glob, files of
    another kind are skipped and named in one note line on stderr, and a folder with nothing
    usable is a StageError. `require` is the column this stage reads (checked in Parquet schemas;
    `text` unless said otherwise, None for none)."""
    suffixes = tuple(suffixes)
    if not set(suffixes) & set(DOCUMENT_SUFFIXES):
        require = None  # WARC and other inputs have no columns to check
    label = stage or "this stage"
    found: list[Path] = []
    for item in inputs:
        item = str(item)
        if glob.has_magic(item):
            matches = [Path(p) for p in sorted(glob.glob(item))]
            if not matches:
                raise StageError(f"{item}: no such file or folder")
            for folder in (m for m in matches if m.is_dir()):
                found.extend(_folder_files(folder, suffixes, label, require))
            files = [m for m in matches if m.is_file()]
            if files:
                found.extend(_take(item, files, suffixes, label, require))
            continue
        path = Path(item)
        if not path.exists():
            raise StageError(f"{item}: no such file or folder")
        if path.is_dir():
            found.extend(_folder_files(path, suffixes, label, require))
        elif not path.is_file():  # a pipe or a device: reading it to look could wait forever
            raise StageError(f"{item}: not a regular file")
        else:
            problem = _kind_problem(path, suffixes, label) or _content_problem(path, require)
            if problem:
                raise StageError(problem)
            found.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise StageError(f"{', '.join(map(str, inputs))}: no input files ({'/'.join(suffixes)}) found")
    return unique


def _folder_files(folder: Path, suffixes, label: str, require) -> list[Path]:
    if is_artifact(folder):
        return _artifact_files(folder, suffixes, label, require)
    artifacts = sorted({p.parent for p in folder.rglob("manifest.json") if is_artifact(p.parent)},
                       key=lambda p: (p / "manifest.json").stat().st_mtime)
    if (folder / "_shards").is_dir() or any(p.is_dir() for p in folder.glob("*/_shards")):
        # A store or a stage's folder in it (artifacts/extract): several runs' outputs plus cached
        # shards, never one input. One artifact there is meant; several are ambiguous.
        if len(artifacts) == 1:
            return _artifact_files(artifacts[0], suffixes, label, require)
        stages = ", ".join(sorted({artifact_stage(p) or "?" for p in artifacts}))
        raise StageError(f"{folder}: an artifact store holding {len(artifacts)} artifacts ({stages}), not one input; "
                         f"give one artifact folder" + (f", e.g. the newest: {artifacts[-1]}" if artifacts else ""))
    # An artifact inside a corpus folder gives its data parts, not its side files (removed.parquet, ...).
    found = [f for a in artifacts for f in _artifact_files(a, suffixes, label, require)]
    files = [p for p in sorted(folder.rglob("*"))
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
             and not any(a in p.parents for a in artifacts)]
    if not files and not found:
        raise StageError(f"{folder}: an empty folder (no input files)")
    return found + (_take(str(folder), files, suffixes, label, require) if files else [])


def _take(where: str, files: list[Path], suffixes, label: str, require) -> list[Path]:
    """The files of this stage's kind; the others are named in one note line."""
    taken = [f for f in files if has_suffix(f, suffixes)]
    other = [f for f in files if not has_suffix(f, suffixes)]
    warcs = [f for f in other if has_suffix(f, WARC_SUFFIXES)]
    # Whole-file problems (a .parquet that is text, a .json that is not documents) are left to the
    # run, which counts them, unless no file at all is usable: then it is one error, now.
    problems = [p for p in (_content_problem(f, require) for f in taken) if p]
    if len(problems) == len(taken):
        if warcs and not has_suffix(warcs[0], suffixes):
            raise StageError(f"{where}: these are WARC files: run ingest first (scratchlm stage ingest --input {where})")
        if problems:
            raise StageError(f"{where}: nothing usable: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        kinds = ", ".join(f"{n} {s}" for s, n in Counter(suffix_of(f) for f in other).most_common())
        raise StageError(f"{where}: no {_kind_name(suffixes)} files here ({kinds}; {label} reads {', '.join(suffixes)})")
    line = f"{'input' if label == 'this stage' else label}: {len(taken)} file{'s' if len(taken) != 1 else ''} ({_breakdown(taken)}) from {where}"
    if other:
        skipped = Counter(suffix_of(f) for f in other)
        reasons = ", ".join(f"{n} {s} ({_why_not(s, suffixes)})" for s, n in skipped.most_common())
        line += f"; skipped {reasons}"
    if problems:
        line += f"; {len(problems)} unreadable (counted when the run reaches them)"
    _note(line)
    return taken


def _artifact_files(folder: Path, suffixes, label: str, require) -> list[Path]:
    manifest = load_manifest(folder)
    made_by = manifest.get("stage", "unknown")
    files = artifact_data_files(folder)
    if not files:
        side = ", ".join(e["file"] for e in manifest.get("side_outputs", [])) or "nothing"
        raise StageError(f"{folder}: {an(made_by)} artifact with no data parts (it holds {side}); "
                         f"{label} reads {_kind_name(suffixes)} files")
    wrong = [f for f in files if not has_suffix(f, suffixes)]
    if wrong:
        raise StageError(f"{folder}: {an(made_by)} artifact ({suffix_of(wrong[0])} parts); "
                         f"{label} reads {_kind_name(suffixes)} files ({', '.join(suffixes)})")
    if require and has_suffix(files[0], (".parquet",)):
        try:
            schema = pq.read_schema(files[0])
        except Exception as exc:  # noqa: BLE001 - a damaged artifact is the user's input problem
            raise StageError(f"{files[0]}: not a readable Parquet file ({_first_line(exc)})") from None
        problem = column_problem(files[0].name, schema, require)
        if problem:
            raise StageError(f"{folder}: {an(made_by)} artifact, not input for {label}: {problem}")
    return files


def _kind_problem(path: Path, suffixes, label: str) -> str | None:
    """Why a file named explicitly is not of this stage's kind (by suffix), or None."""
    if has_suffix(path, suffixes):
        return None
    if has_suffix(path, WARC_SUFFIXES):
        return f"{path}: a WARC file: run ingest first (scratchlm stage ingest --input {path})"
    if set(suffixes) <= set(WARC_SUFFIXES):
        return f"{path}: not a WARC file ({suffix_of(path)}); {label} reads {', '.join(suffixes)}"
    if set(suffixes) & set(DOCUMENT_SUFFIXES):
        return f"{path}: not Parquet or JSONL (expected {', '.join(suffixes)})"
    return f"{path}: not a {'/'.join(suffixes)} file; {label} reads {', '.join(suffixes)}"


def _kind_name(suffixes) -> str:
    if set(suffixes) <= set(WARC_SUFFIXES):
        return "WARC"
    if set(suffixes) <= set(DOCUMENT_SUFFIXES):
        return "Parquet/JSONL"
    return "/".join(suffixes)


def _why_not(suffix: str, suffixes) -> str:
    if suffix in WARC_SUFFIXES:
        return "WARC: run ingest on them first"
    return f"not {_kind_name(suffixes)}"


def _breakdown(files: list[Path]) -> str:
    return ", ".join(f"{n} {s}" for s, n in Counter(suffix_of(f) for f in files).most_common())


def _note(line: str) -> None:
    if line not in _noted:
        _noted.add(line)
        print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ whole-file checks

def _content_problem(path: Path, require: str | None) -> str | None:
    """A cheap look at a document file (magic bytes, Parquet schema, JSON layout); None if it looks right.
    WARC files are not looked at here: the WARC reader reports and counts damage itself."""
    try:
        if has_suffix(path, (".parquet",)):
            return _parquet_problem(path, require)
        if has_suffix(path, (".jsonl", ".jsonl.gz")):
            head = _head_text(path)
            if head is None:
                return f"{path.name}: not gzip-compressed ({_looks_like(path.read_bytes()[:64])})"
            first = head.lstrip()[:1]
            if first in ("", "{"):
                return None
            if first == "[":
                return f"{path.name}: a JSON array, not JSON Lines (one object per line); name it .json"
            return f"{path.name}: not JSON Lines ({_looks_like(head[:64].encode())})"
        if has_suffix(path, (".json",)):
            layout = json_layout(path)
            if layout == "document" and path.stat().st_size <= MAX_JSON_SNIFF_BYTES:
                _documents_in(_load_json(path), path.name, require or "text")
            return None
    except ShardError as exc:
        return str(exc)
    except OSError as exc:
        return f"{path.name}: unreadable ({_first_line(exc)})"
    return None


def _parquet_problem(path: Path, require: str | None) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if size < 12 or head[:4] != b"PAR1" or tail != b"PAR1":
        return f"{path.name}: not a Parquet file ({_looks_like(head)})"
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's input problem
        return f"{path.name}: not a readable Parquet file ({_first_line(exc)})"
    return column_problem(path.name, schema, require) if require else None


def column_problem(name: str, schema: pa.Schema, column: str) -> str | None:
    """Why `column` of this schema cannot be read as text (html may also be bytes), or None."""
    if column not in schema.names:
        return f"{name}: has no '{column}' column (columns: {', '.join(schema.names)})"
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    ok = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
    if column == "html":
        ok = ok or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
    if ok:
        return None
    return f"{name}: column '{column}' is {kind}, not {'text or bytes' if column == 'html' else 'text'}"


def _head_text(path: Path) -> str | None:
    """The first bytes of a (gzipped) text file as text; None for a .gz file that is not gzip."""
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            if f.read(2) not in (b"", b"\x1f\x8b"):
                return None
        try:
            with gzip.open(path, "rb") as f:
                data = f.read(SNIFF_BYTES)
        except (OSError, EOFError):
            return None
    else:
        with open(path, "rb") as f:
            data = f.read(SNIFF_BYTES)
    return data.decode("utf-8", "replace")


def _looks_like(head: bytes) -> str:
    if not head:
        return "an empty file"
    if head.startswith(b"\x1f\x8b"):
        return "gzip data"
    if head.startswith(b"PAR1"):
        return "Parquet data"
    if head.startswith(b"WARC/"):
        return "a WARC file"
    text = head[:40].decode("utf-8", "replace")
    if "\ufffd" not in text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"it starts with {text.strip()[:30]!r}"
    return "binary data"


# ------------------------------------------------------------------------------------ reading

def parquet_rows(path: Path) -> int | None:
    if has_suffix(path, (".parquet",)):
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:
            return None
    return None


def read_documents(path: Path, on_bad: Callable[[str, str], None], batch_rows: int = READ_BATCH_ROWS,
                   require: str = "text", columns: Sequence[str] | None = None) -> Iterator[dict]:
    """Rows of a Parquet, JSONL or JSON file as dicts, with the `require`d column (`text`) present.

    `columns`: read only these from Parquet (those that exist; the others are not decoded at all).
    A file that cannot be read at all raises ShardError; a bad JSONL line or a row whose text is
    not a string is reported through `on_bad(reason, message)` and skipped."""
    if has_suffix(path, (".parquet",)):
        yield from _read_parquet(path, on_bad, batch_rows, require, columns)
    elif has_suffix(path, (".jsonl", ".jsonl.gz")):
        yield from _read_jsonl(path, on_bad, require)
    elif has_suffix(path, (".json",)):
        yield from _read_json(path, on_bad, require)
    else:
        raise ShardError("unsupported_file", f"{path.name}: not Parquet or JSONL (expected {', '.join(DOCUMENT_SUFFIXES)})")
    # `on_bad` is usually a ShardContext's fault(): at the end of the file it prints one line for
    # the warnings it held back ("and N more like this"), whichever stage reads the file.
    end_of_file = getattr(getattr(on_bad, "__self__", None), "end_of_file", None)
    if callable(end_of_file):
        end_of_file(path.name)


def _read_parquet(path: Path, on_bad, batch_rows: int, require: str, columns: Sequence[str] | None = None) -> Iterator[dict]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        problem = _parquet_problem(path, None) if path.is_file() else None
        raise ShardError("unreadable_parquet", problem or f"{path.name}: not a readable Parquet file ({_first_line(exc)})") from None
    names = parquet.schema_arrow.names
    problem = column_problem(path.name, parquet.schema_arrow, require)
    if problem:
        reason = f"no_{require}_column" if require not in names else f"{require}_not_string"
        raise ShardError(reason, problem)
    make_id = "id" not in names
    row = 0
    try:
        wanted = None if columns is None else [c for c in names if c in columns or c == require]
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted):
            for doc in batch.to_pylist():
                if make_id:
                    doc["id"] = f"{path.stem}:{row}"
                row += 1
                if _column_ok(doc, require, path, row - 1, on_bad):
                    yield doc
    except (OSError, pa.ArrowException) as exc:
        on_bad("unreadable_parquet", f"{path.name}: unreadable after row {row} ({_first_line(exc)})")


def _read_jsonl(path: Path, on_bad, require: str) -> Iterator[dict]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as raw:
            stream = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
            for line_no, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as exc:
                    on_bad("bad_json_line", f"{path.name}:{line_no}: not valid JSON ({exc.msg})")
                    continue
                if not isinstance(doc, dict):
                    on_bad("bad_json_line", f"{path.name}:{line_no}: a JSON line must be an object")
                    continue
                doc.setdefault("id", f"{path.stem}:{line_no - 1}")
                doc["id"] = str(doc["id"])
                if _column_ok(doc, require, path, line_no - 1, on_bad):
                    yield doc
    except (OSError, EOFError) as exc:
        on_bad("unreadable_file", f"{path.name}: unreadable ({_first_line(exc)})")


def json_layout(path: Path) -> str:
    """'lines' (JSON Lines under a .json name, as `datasets` writes them) or 'document' (one JSON
    value: an array of objects, or an object holding one); ShardError if it is not JSON."""
    head = _head_text(path) or ""
    stripped = head.lstrip()
    if not stripped:
        return "lines"  # empty: no documents, nothing wrong
    if stripped[0] == "[":
        return "document"
    if stripped[0] != "{":
        raise ShardError("not_json", f"{path.name}: not JSON ({_looks_like(head[:64].encode())})")
    first_line = stripped.split("\n", 1)[0]
    try:
        return "lines" if isinstance(json.loads(first_line), dict) else "document"
    except json.JSONDecodeError:
        return "document"


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ShardError("not_json", f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise ShardError("not_json", f"{path.name}: not valid JSON (not UTF-8 text)") from None


def _documents_in(data, name: str, require: str) -> list:
    """The documents of a JSON value: an array, an object with one array of documents, or one document."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if isinstance(data.get(require), (str, bytes)):
            return [data]
        lists = {k: v for k, v in data.items()
                 if isinstance(v, list) and v and isinstance(v[0], dict) and require in v[0]}
        for key in DOCUMENT_LIST_KEYS:
            if key in lists:
                return lists[key]
        if len(lists) == 1:
            return next(iter(lists.values()))
        keys = ", ".join(list(data)[:8]) + (", ..." if len(data) > 8 else "")
        raise ShardError("not_documents", f"{name}: a JSON document, not JSON Lines, and it holds no list of "
                                          f"documents with a '{require}' field (keys: {keys})")
    raise ShardError("not_documents", f"{name}: a JSON {type(data).__name__}, not documents")


def _read_json(path: Path, on_bad, require: str) -> Iterator[dict]:
    if json_layout(path) == "lines":
        yield from _read_jsonl(path, on_bad, require)
        return
    for number, doc in enumerate(_documents_in(_load_json(path), path.name, require)):
        if not isinstance(doc, dict):
            on_bad("bad_json_item", f"{path.name}: item {number} is not an object")
            continue
        doc.setdefault("id", f"{path.stem}:{number}")
        doc["id"] = str(doc["id"])
        if _column_ok(doc, require, path, number, on_bad):
            yield doc


def _column_ok(doc: dict, column: str, path: Path, row: int, on_bad) -> bool:
    value = doc.get(column)
    if column == "html" and isinstance(value, str):
        doc[column] = value = value.encode("utf-8")  # a user's own HTML as text
    if isinstance(value, (bytes, str) if column == "html" else str):
        return True
    if column not in doc:
        on_bad(f"no_{column}_column", f"{path.name}: row {row} has no '{column}'")
    else:
        on_bad(f"{column}_not_string", f"{path.name}: row {row} has a '{column}' that is not a string")
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------- artifacts

def nothing_readable(fault_messages: Sequence[str], files: int, shown_files: int = 4) -> StageError:
    """No input file yielded a single document, and some could not be read as documents: the
    error of a stage that would otherwise write an empty artifact with exit 0. One line naming
    each file (up to `shown_files`) by its first problem; fault messages start with the file name."""
    first_by_file: dict[str, str] = {}
    for message in fault_messages:
        first_by_file.setdefault(message.split(": ", 1)[0], message)
    shown = list(first_by_file.values())[:shown_files]
    more = len(first_by_file) - len(shown)
    where = "its one file" if files == 1 else f"any of its {files} files"
    return StageError(f"nothing readable in the input (not one document in {where}): " + "; ".join(shown)
                      + (f"; and {more} more file{'s' if more > 1 else ''}" if more else ""))


def artifact_stage(folder: str | os.PathLike) -> str | None:
    """The stage that made an artifact folder, or None if it is not one."""
    folder = Path(folder)
    if not is_artifact(folder):
        return None
    try:
        return str(load_manifest(folder).get("stage"))
    except (OSError, ValueError):
        return None


def require_artifact(item: str | os.PathLike, expected: str | Sequence[str], reader: str) -> Path:
    """An input that must be an artifact of the `expected` stage(s) (a pretrain artifact for
    evaluate, ...): its folder, or a one-line StageError naming what it is instead."""
    expected = (expected,) if isinstance(expected, str) else tuple(expected)
    path = Path(item)
    want = " or ".join(expected)
    if not path.exists():
        raise StageError(f"{item}: no such file or folder")
    if not path.is_dir():
        raise StageError(f"{item}: a file; {reader} reads {an(want)} artifact folder")
    made_by = artifact_stage(path)
    if made_by is None:
        raise StageError(f"{item}: not an artifact folder (no manifest.json); {reader} reads {an(want)} artifact")
    if made_by not in expected:
        raise StageError(f"{item}: {an(made_by)} artifact; {reader} reads {an(want)} artifact")
    return path
