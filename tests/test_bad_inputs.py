"""Every command survives wrong input and wrong options: exit status 2, exactly one `error:` line on
stderr that names the culprit (the file, folder or option), no traceback, no flood.

The matrix is built from the stage registry (pipeline.stages.STAGE_MODULES) and from the CLI's own
commands (flows.cli.app), so a stage or command added later is covered by the generic cases
(missing input, an input of the wrong kind, an artifact of the wrong stage, an unknown option, a
value of the wrong type) the day it is registered. Commands run in-process (typer's CliRunner);
a few end-to-end cases run `python -m flows.cli` as a user would."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer.main
from typer.testing import CliRunner

from conftest import REPO, SAMPLE_CRAWL
from flows.cli import app
from pipeline.runner import RunOptions, run_stage
from pipeline.stages import STAGE_MODULES, get_stage
from storage.store import ArtifactStore

MAX_STDERR_LINES = 12  # an error line, a note or two, never one line per row
MAX_STDERR_CHARS = 3000
CLI = typer.main.get_command(app)
# Options that name where results go, not what is read: a path that does not exist there is fine.
OUTPUT_PARAMS = {"output", "out_dir", "store", "home", "cache_dir"}


# Gaps in code that other engineers own, each with what to do. Strict: once fixed, the case
# passes, and XPASS fails the run until its entry here is removed.
KNOWN_GAPS: dict = {}  # (test, stage, case) → why it is expected to fail; strict, so a fix must remove it


def with_gaps(test: str, params: list) -> list:
    """Parameters (a stage name first) with an xfail mark where KNOWN_GAPS lists them."""
    marked = []
    for values in params:
        values = values if isinstance(values, tuple) else (values,)
        gap = next((KNOWN_GAPS[(test, *values[:n])] for n in range(len(values), 0, -1)
                    if (test, *values[:n]) in KNOWN_GAPS), None)
        marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
        marked.append(pytest.param(*values, marks=marks, id="-".join(map(str, values))))
    return marked


def leaf_commands() -> dict[str, object]:
    """'stage langid', 'run', 'generate', ...: every command a user can type, by its words."""
    found = {}

    def walk(prefix, group):
        for name, command in group.commands.items():
            words = f"{prefix} {name}".strip()
            if getattr(command, "commands", None):
                walk(words, command)
            else:
                found[words] = command
    walk("", CLI)
    return found


COMMANDS = leaf_commands()


def annotation(param):
    hint = param.type_descriptor.annotation
    if typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) in (list, tuple):
        hint = typing.get_args(hint)[0]
    return hint


def input_params(command) -> list:
    """The parameters naming something the command reads: --input, --crawl and required paths."""
    return [p for p in command.params if annotation(p) is Path and p.name not in OUTPUT_PARAMS
            and (p.required or p.name in ("input", "crawl"))]


def invocation(command, replace: dict | None = None, first: list[str] = ()) -> list[str]:
    """Arguments for `command`: `first`, then each required parameter with a placeholder value
    (or the value in `replace`, by parameter name), then any `replace` entries for optional ones."""
    replace = dict(replace or {})
    args, positional = list(first), []
    for param in command.params:
        if not (param.required or param.name in replace):
            continue
        value = str(replace.pop(param.name, "placeholder"))
        if param.param_type_name == "argument":
            positional.append(value)
        else:
            args += [param.opts[0], value]
    return args + positional


def invoke(words: str | list[str], args: list[str]):
    words = words.split() if isinstance(words, str) else list(words)
    return CliRunner().invoke(app, words + [str(a) for a in args])


def assert_one_line_error(result, *culprits: str):
    """Exit 2; exactly one `error:` line, naming one of `culprits`; no traceback; a short stderr."""
    err = result.stderr
    detail = f"exit {result.exit_code}, exception {result.exception!r}\nstderr:\n{err}\nstdout:\n{result.stdout}"
    assert result.exit_code == 2, detail
    assert "Traceback" not in err and "Traceback" not in result.stdout, detail
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, detail
    assert any(c in errors[0] for c in culprits), f"{errors[0]!r} names none of {culprits}"
    assert len(err.splitlines()) <= MAX_STDERR_LINES and len(err) <= MAX_STDERR_CHARS, detail
    return errors[0]


# ------------------------------------------------------------------------------------ inputs

@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """A small zoo of wrong inputs, and one right one (docs.parquet)."""
    root = tmp_path_factory.mktemp("bad")
    docs = pa.table({"id": ["a", "b"], "text": ["A first document with some words in it.", "And a second one, also short."]})
    pq.write_table(docs, root / "docs.parquet")
    (root / "notes.txt").write_text("just some notes, not a corpus\n")
    (root / "fake.parquet").write_text("id,text\n1,this is CSV with a Parquet name\n")
    pq.write_table(pa.table({"id": ["a"], "body": ["no text column here"]}), root / "notext.parquet")
    pq.write_table(pa.table({"id": ["a", "b"], "text": [1, 2]}), root / "inttext.parquet")
    (root / "object.json").write_text(json.dumps({"name": "settings", "version": 3, "options": {"a": 1}}, indent=2))
    (root / "array.jsonl").write_text('[{"text": "an array"},\n {"text": "is not JSON Lines"}]\n')
    (root / "empty").mkdir()
    html_only = root / "html-only"
    html_only.mkdir()
    pq.write_table(pa.table({"id": ["p"], "html": [b"<p>a page</p>"]}), html_only / "pages.parquet")
    return {"root": root, "docs": root / "docs.parquet", "notes": root / "notes.txt", "fake": root / "fake.parquet",
            "notext": root / "notext.parquet", "inttext": root / "inttext.parquet", "object": root / "object.json",
            "array": root / "array.jsonl", "empty": root / "empty", "docs_folder": html_only}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, sample_warcs) -> dict[str, Path]:
    """Real artifacts to hand to the wrong stage: ingest's (html, no text) and extract's (text, no html)."""
    store = ArtifactStore(tmp_path_factory.mktemp("store"))
    options = RunOptions(workers=1, progress=False)
    smallest = min(sample_warcs, key=lambda p: p.stat().st_size)
    ingest = run_stage(get_stage("ingest"), [smallest], store=store, options=options)
    extract = run_stage(get_stage("extract"), [ingest.path], store=store, options=options)
    return {"ingest": ingest.path, "extract": extract.path}


FILE_CASES = ["notes", "fake", "notext", "inttext", "object", "array"]


@pytest.fixture(scope="module")
def knob_values(tmp_path_factory) -> dict[str, str]:
    """Values for knobs that a stage requires (a reference to another artifact), by knob name, so
    that a case reaches the input check. A new stage with a new required knob: add it here."""
    from pipeline.tokenizer import MIN_VOCAB, train_bpe

    folder = tmp_path_factory.mktemp("tokenizer")
    train_bpe(["a few words to learn a handful of merges from"] * 4, MIN_VOCAB + 8).save(str(folder / "tokenizer.json"))
    return {"tokenizer": str(folder / "tokenizer.json")}


@pytest.fixture(scope="module")
def stage_args(knob_values):
    """`stage NAME` plus the required knobs of that stage (found by its config's own check())."""
    from pipeline.errors import ConfigError, build_checked

    def args(stage: str) -> list[str]:
        values: dict[str, str] = {}
        for _ in range(5):
            try:
                build_checked(get_stage(stage).config_cls, **values)
                break
            except ConfigError as exc:
                if exc.knob not in knob_values or exc.knob in values:
                    pytest.fail(f"stage {stage} requires --{exc.knob} ({exc}): add a value for it to knob_values")
                values[exc.knob] = knob_values[exc.knob]
        return ["stage", stage] + [a for k, v in values.items() for a in ("--" + k.replace("_", "-"), v)]
    return args


@pytest.mark.parametrize("stage", list(STAGE_MODULES))
def test_missing_or_empty_input(stage, stage_args, bad, tmp_path):
    missing = tmp_path / "no-such-folder"
    assert_one_line_error(invoke(stage_args(stage), ["--input", missing, "--store", tmp_path / "s"]), "no-such-folder")
    assert_one_line_error(invoke(stage_args(stage), ["--input", bad["empty"], "--store", tmp_path / "s"]), str(bad["empty"]))


@pytest.mark.parametrize("stage, case", with_gaps("wrong-file", [(s, c) for s in STAGE_MODULES for c in FILE_CASES]))
def test_a_file_of_the_wrong_kind(stage, case, stage_args, bad, tmp_path):
    """Text for Parquet, Parquet without `text` or with numbers in it, a JSON object, an array in
    .jsonl, notes: each is refused before any work, naming the file."""
    path = bad[case]
    line = assert_one_line_error(invoke(stage_args(stage), ["--input", path, "--store", tmp_path / "s"]), path.name)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("manifest.json")), line


@pytest.mark.parametrize("stage", [s for s in STAGE_MODULES if s != "ingest"])
def test_a_warc_folder_given_to_a_later_stage(stage, stage_args, tmp_path):
    """The issue's first report: dedup on the sample crawl printed 418 warnings and a KeyError."""
    line = assert_one_line_error(invoke(stage_args(stage), ["--input", SAMPLE_CRAWL, "--store", tmp_path / "s"]),
                                 str(SAMPLE_CRAWL), "crawl-0000")
    if get_stage(stage).input_files is None or "pipeline.documents" in repr(get_stage(stage).input_files):
        assert "run ingest first" in line


def test_ingest_given_documents_says_what_it_reads(bad, tmp_path):
    line = assert_one_line_error(invoke("stage ingest", ["--input", bad["docs_folder"], "--store", tmp_path / "s"]),
                                 str(bad["docs_folder"]))
    assert "WARC" in line
    line = assert_one_line_error(invoke("stage ingest", ["--input", bad["docs"], "--store", tmp_path / "s"]), "docs.parquet")
    assert "WARC" in line


@pytest.mark.parametrize("stage", list(STAGE_MODULES))
def test_an_artifact_of_the_wrong_stage(stage, stage_args, artifacts, tmp_path):
    """Extract reads ingest's artifact, the text stages extract's; every stage refuses one it cannot
    read, naming the artifact's stage."""
    made_by = "extract" if stage == "extract" else "ingest"
    folder = artifacts[made_by]
    line = assert_one_line_error(invoke(stage_args(stage), ["--input", folder, "--store", tmp_path / "s"]),
                                 str(folder), folder.name, "part-00000.parquet")
    assert f"{made_by} artifact" in line, line


def test_a_store_is_not_one_input(artifacts, tmp_path):
    """`--input artifacts/` (several runs' outputs and cached shards) is ambiguous; a stage's folder
    holding one artifact means that artifact."""
    store = artifacts["ingest"].parent.parent
    line = assert_one_line_error(invoke("stage quality", ["--input", store, "--store", tmp_path / "s"]), str(store))
    assert "holding 2 artifacts (extract, ingest)" in line and str(artifacts["extract"]) in line
    from pipeline.runner import input_files

    assert input_files(get_stage("quality"), [store / "extract"]) == [p.resolve() for p in sorted(artifacts["extract"].glob("part-*.parquet"))]


def test_a_pipe_is_refused_not_read(tmp_path):
    """Looking inside a named pipe to check its kind would wait for a writer forever."""
    from pipeline.documents import DOCUMENT_SUFFIXES, expand_inputs
    from pipeline.errors import StageError

    os.mkfifo(tmp_path / "corpus.jsonl")
    with pytest.raises(StageError, match="corpus.jsonl: not a regular file"):
        expand_inputs([tmp_path / "corpus.jsonl"], DOCUMENT_SUFFIXES)
    (tmp_path / "real.jsonl").write_text('{"text": "a document"}\n')
    assert expand_inputs([tmp_path], DOCUMENT_SUFFIXES) == [(tmp_path / "real.jsonl").resolve()]


def test_a_json_document_is_read_as_json_not_line_by_line(tmp_path):
    from pipeline.documents import read_documents

    faults = []
    on_bad = lambda reason, message: faults.append(reason)  # noqa: E731
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"text": "one"}, {"text": "two"}, {"id": "x", "text": 3}, "not an object"], indent=2))
    assert [d["text"] for d in read_documents(array, on_bad)] == ["one", "two"]
    assert faults == ["text_not_string", "bad_json_item"]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"version": 1, "documents": [{"text": "inside"}]}, indent=1))
    assert [d["text"] for d in read_documents(wrapped, on_bad)] == ["inside"]
    as_lines = tmp_path / "lines.json"  # what `datasets` writes under a .json name
    as_lines.write_text('{"text": "line one"}\n{"text": "line two"}\n')
    assert [d["id"] for d in read_documents(as_lines, on_bad)] == ["lines:0", "lines:1"]
    assert len(faults) == 2



# Stages that read documents (Parquet/JSONL/JSON rows); extract reads `html`, the others `text`.
DOCUMENT_STAGES = [s for s in ("extract", "langid", "quality", "dedup", "train-tokenizer", "tokenize") if s in STAGE_MODULES]


def _not_documents(folder: Path, name: str = "records.json") -> Path:
    """A JSON object whose array holds records without `text` (or `html`): passes the look at the
    file before any work, yields no document when read."""
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps({"records": [{"title": "a"}, {"title": "b", "body": "no text"}]}))
    return folder


def _written_artifacts(store: Path, stage: str) -> list[str]:
    """Anything in the store's stage folder but the per-file shard cache: artifacts, temp folders."""
    folder = store / stage
    return sorted(p.name for p in folder.iterdir() if p.name != "_shards") if folder.is_dir() else []


@pytest.mark.parametrize("stage", DOCUMENT_STAGES)
def test_input_without_a_single_document_fails_and_writes_no_artifact(stage, stage_args, knob_values, tmp_path):
    """Was: "0 docs in, 0 out", exit 0 and an empty artifact. Now one line naming the file and why."""
    folder = _not_documents(tmp_path / "in")
    store = tmp_path / "s"
    args = stage_args(stage)  # and the knobs a run needs though the config check lets them be empty (tokenizer)
    args += [a for k, v in knob_values.items() if k in {f.name for f in dataclasses.fields(get_stage(stage).config_cls)}
             and "--" + k.replace("_", "-") not in args for a in ("--" + k.replace("_", "-"), v)]
    line = assert_one_line_error(invoke(args, ["--input", folder, "--store", store]), "records.json")
    assert "not one document" in line and "records.json: row 0 has no" in line, line
    assert _written_artifacts(store, stage) == []
    # A second file of the same kind: both named in the one line.
    (folder / "more.json").write_text(json.dumps([{"title": "c"}]))
    line = assert_one_line_error(invoke(args, ["--input", folder, "--store", store]), "more.json")
    assert "records.json" in line and "any of its 2 files" in line, line
    assert _written_artifacts(store, stage) == []


@pytest.mark.parametrize("stage", [s for s in ("quality", "dedup") if s in STAGE_MODULES])  # a shard and a global stage
def test_one_unreadable_file_among_good_ones_stays_a_counted_fault(stage, tmp_path):
    folder = _not_documents(tmp_path / "in")
    (folder / "good.jsonl").write_text(json.dumps({"text": "A document with a few plain words in it."}) + "\n")
    result = run_stage(get_stage(stage), [folder], store=ArtifactStore(tmp_path / "s"),
                       options=RunOptions(workers=1, progress=False))
    stats = result.manifest["stats"]
    assert stats["docs_in"] == 1 and stats["docs_out"] <= 1 and sum(stats["faults"].values()) >= 1
    assert any(m.startswith("records.json") for m in stats["fault_messages"])


def test_no_document_in_the_input_as_a_user_sees_it(tmp_path):
    """A real process, the global stage that used to write an empty artifact: exit 2, one line."""
    folder = _not_documents(tmp_path / "in")
    proc = scratchlm("stage", "dedup", "--input", folder, "--no-progress", store=tmp_path / "s")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "records.json: row 0 has no 'text'" in errors[0], proc.stderr
    assert proc.stdout == "" and _written_artifacts(tmp_path / "s", "dedup") == []

# ----------------------------------------------------------------------------------- options

def _numeric_options():
    for words, command in COMMANDS.items():
        for param in command.params:
            if param.param_type_name == "option" and annotation(param) in (int, float) and not getattr(param, "is_flag", False):
                yield pytest.param(words, param.opts[0], id=f"{words}{param.opts[0]}")


@pytest.mark.parametrize("words", list(COMMANDS))
def test_an_unknown_option(words):
    command = COMMANDS[words]
    assert_one_line_error(invoke(words, invocation(command, first=["--no-such-option"])), "--no-such-option")


@pytest.mark.parametrize("words, option", list(_numeric_options()))
def test_a_number_that_is_not_a_number(words, option):
    assert_one_line_error(invoke(words, invocation(COMMANDS[words], first=[option, "abc"])), option)


@pytest.mark.parametrize("words", [w for w, c in COMMANDS.items() if input_params(c)])
def test_every_input_parameter_refuses_a_missing_path_and_a_wrong_file(words, stage_args, knob_values, bad, tmp_path):
    command = COMMANDS[words]
    required_knobs = stage_args(words.split()[1])[2:] if words.startswith("stage ") else []
    right = {"input": bad["docs"], "crawl": SAMPLE_CRAWL, "tokenizer": knob_values["tokenizer"]}
    for param in input_params(command):
        for path in (tmp_path / "no-such-thing", bad["notes"]):
            values = {p.name: right.get(p.name, bad["docs"]) for p in input_params(command)}  # the others: right ones
            values.update({p.name: tmp_path / "out" for p in command.params
                           if p.required and p.name in OUTPUT_PARAMS})
            values[param.name] = path
            if words.startswith("stage "):
                values["store"] = tmp_path / "store"
            result = invoke(words, invocation(command, values) + required_knobs)
            assert_one_line_error(result, path.name)


@pytest.mark.parametrize("words", [w for w, c in COMMANDS.items() if any(p.name == "store" for p in c.params)])
def test_a_store_that_is_a_file(words, stage_args, knob_values, bad):
    """Checked before any worker starts (a worker would die on it with a traceback)."""
    extra = stage_args(words.split()[1])[2:] if words.startswith("stage ") else []
    right = {"input": bad["docs"], "crawl": SAMPLE_CRAWL, "tokenizer": knob_values["tokenizer"]}
    args = invocation(COMMANDS[words], {**{p.name: right[p.name] for p in COMMANDS[words].params
                                           if p.required and p.name in right}, "store": bad["notes"]}) + extra
    assert_one_line_error(invoke(words, args), "--store")


def _stage_option_cases():
    """Values out of range for the data stages' knobs, and for the run options every stage has."""
    cases = [
        ("langid", "--languages", "klingon"), ("langid", "--min-language-score", "1.5"),
        ("langid", "--language-thresholds", "ja:2"), ("langid", "--batch-size", "0"),
        ("quality", "--fineweb-max-short-line-frac", "2"), ("quality", "--gopher-min-words", "-1"),
        ("quality", "--gopher-min-mean-word-length", "20"), ("extract", "--max-tags", "0"),
        ("extract", "--min-text-chars", "-5"), ("ingest", "--max-html-bytes", "0"),
        ("dedup", "--threshold", "1.5"), ("dedup", "--bands", "20"), ("dedup", "--num-perm", "0"),
    ]
    for stage in STAGE_MODULES:
        cases += [(stage, "--workers", "-1"), (stage, "--keep-rejects", "-1"), (stage, "--doc-timeout", "0")]
    return [pytest.param(*c, id=f"{c[0]}{c[1]}={c[2]}") for c in cases if c[0] in STAGE_MODULES]


@pytest.mark.parametrize("stage, option, value", _stage_option_cases())
def test_a_knob_out_of_range_is_refused_before_any_work(stage, option, value, stage_args, bad, tmp_path):
    """Checked before the input is even read: the input here is fine for no stage in particular."""
    store = tmp_path / "s"
    line = assert_one_line_error(invoke(stage_args(stage), [option, value, "--input", bad["docs"], "--store", store]), option)
    assert not store.exists()
    assert line.startswith(f"error: {option}")


@pytest.mark.parametrize("stage", with_gaps("config-check", list(STAGE_MODULES)))
def test_every_stage_config_checks_itself(stage):
    """A stage's knobs are checked by its config's check(), which the CLI (flows.options.build_config)
    and pipeline.errors.check_config run before any work starts."""
    assert callable(getattr(get_stage(stage).config_cls, "check", None)), f"define check() on {stage}'s config"


@pytest.mark.parametrize("args, culprit", [
    (["--set", "langid.languages=klingon"], "langid.languages"),
    (["--set", "dedup.bands=20"], "dedup.bands"),
    (["--set", "quality.no_such_knob=1"], "no_such_knob"),
    (["--set", "langid.min_language_score=high"], "langid.min_language_score"),
    (["--until", "nowhere"], "--until"),
    (["--workers", "-2"], "--workers"),
    (["--crawl", "no/such/crawl"], "no/such/crawl"),
])
def test_run_checks_everything_before_starting_prefect(args, culprit):
    assert_one_line_error(invoke("run", args), culprit)


def test_run_and_serve_refuse_a_crawl_that_is_not_warc(bad):
    for words in ("run", "serve"):
        line = assert_one_line_error(invoke(words, ["--crawl", bad["docs_folder"]]), str(bad["docs_folder"]))
        assert "WARC" in line


@pytest.mark.parametrize("args, culprit", [
    (["--max-pages", "0"], "--max-pages"), (["--warc-files", "-1"], "--warc-files"), (["--depth", "-1"], "--depth"),
])
def test_sample_crawl_checks_its_knobs(args, culprit, tmp_path):
    assert_one_line_error(invoke("sample-crawl", args + ["--output", tmp_path / "crawl"]), culprit)
    assert not (tmp_path / "crawl").exists()


def test_sample_crawl_output_that_is_a_file(bad):
    assert_one_line_error(invoke("sample-crawl", ["--output", bad["notes"]]), "notes.txt")


def test_warnings_are_summed_up_per_file_when_one_context_reads_several(tmp_path, capsys):
    """Global stages (dedup, train-tokenizer) read every file through one ShardContext."""
    from pipeline.documents import read_documents
    from pipeline.stage import ShardContext

    files = []
    for name, broken in (("a.jsonl", 12), ("b.jsonl", 7)):
        (tmp_path / name).write_text("\n".join(['{"text": "fine"}'] + ["{broken"] * broken) + "\n")
        files.append(tmp_path / name)
    ctx = ShardContext(files[0])
    assert sum(len(list(read_documents(f, ctx.fault))) for f in files) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "more like this" in line] == [
        "warning: a.jsonl: and 7 more like this (bad_json_line; all counted in the manifest)",
        "warning: b.jsonl: and 2 more like this (bad_json_line; all counted in the manifest)"]
    assert len(err) == 12 and ctx.faults == {"bad_json_line": 19}


# --------------------------------------------------------------------------- end to end, real process

def scratchlm(*args, store: Path):
    env = dict(os.environ, SCRATCHLM_STORE=str(store))
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_as_a_user_sees_it(tmp_path):
    """The issue's first report, in a real process: dedup on a WARC folder printed 418 warnings and
    a KeyError traceback; now one line."""
    proc = scratchlm("stage", "dedup", "--input", SAMPLE_CRAWL, store=tmp_path / "s")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "run ingest first" in errors[0], proc.stderr
    assert len(proc.stderr) < MAX_STDERR_CHARS


def test_bad_rows_are_capped_on_screen_and_all_counted(tmp_path, capsys):
    """A folder with good files, a WARC file and notes: one note names what was taken and skipped;
    a file with 40 broken lines shows 5 of them and one 'and 35 more' line; the manifest counts 40."""
    from pipeline.stage import ShardContext

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = [{"text": f"Document number {i} has a few plain words in it."} for i in range(3)]
    lines = [json.dumps(d) for d in good] + [f'{{"text": "broken line {i}"' for i in range(40)]
    (corpus / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.table({"text": ["A Parquet document with words."]}), corpus / "more.parquet")
    (corpus / "crawl.warc.gz").write_bytes((SAMPLE_CRAWL / "crawl-00001.warc.gz").read_bytes()[:1000])
    (corpus / "README.md").write_text("about this corpus\n")

    stage = get_stage("quality")
    ctx = ShardContext(corpus / "mixed.jsonl")
    assert len(list(stage.read(corpus / "mixed.jsonl", stage.config_cls(), ctx))) == 3
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if "not valid JSON" in line]) == 5, err
    assert err[-1].startswith("warning: mixed.jsonl: and 35 more like this (bad_json_line"), err
    assert ctx.faults == {"bad_json_line": 40} and len(err) == 6

    result = run_stage(stage, [corpus], store=ArtifactStore(tmp_path / "s"), options=RunOptions(workers=1, progress=False))
    note = [line for line in capsys.readouterr().err.splitlines() if line.startswith("quality: 2 files")]
    assert note and "1 .jsonl" in note[0] and "1 .parquet" in note[0] and ".warc.gz" in note[0] and ".md" in note[0]
    assert result.manifest["stats"]["faults"] == {"bad_json_line": 40}
    assert result.manifest["stats"]["docs_in"] == 4
