"""The `scratchlm` command line as a user runs it: a real process, real sample crawl."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.stages import STAGE_MODULES, get_stage

SCRATCHLM = [sys.executable, "-m", "flows.cli"]
REPO = Path(__file__).resolve().parent.parent


def scratchlm(*args, store, check=True):
    env = dict(os.environ, SCRATCHLM_STORE=str(store))
    proc = subprocess.run(SCRATCHLM + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_stages_chain_and_last_line_is_the_output_folder(tmp_path, sample_warcs):
    store = tmp_path / "store"
    ingest = scratchlm("stage", "ingest", "--input", *sample_warcs, "--no-progress", store=store)
    ingest_dir = Path(ingest.stdout.strip().splitlines()[-1])
    assert ingest_dir.parent == store / "ingest" and (ingest_dir / "manifest.json").exists()
    out = tmp_path / "extracted"
    extract = scratchlm("stage", "extract", "--input", ingest_dir, "--output", out, "--no-progress", store=store)
    assert extract.stdout.strip().splitlines()[-1] == str(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "extract" and manifest["inputs"][0]["path"].startswith(str(ingest_dir))
    table = pq.read_table(out / "part-00000.parquet")
    assert {"id", "url", "text"} <= set(table.column_names) and "html" not in table.column_names
    again = scratchlm("stage", "extract", "--input", ingest_dir, "--no-progress", store=store)
    assert "extract cached" in again.stderr


def test_a_users_own_jsonl_corpus(tmp_path):
    corpus = tmp_path / "mine.jsonl"
    docs = [{"text": "Le chat dort sur le canapé pendant que la pluie tombe sur la ville."},
            {"text": "The cat sleeps on the sofa while the rain falls on the town outside."}]
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    proc = scratchlm("stage", "langid", "--input", corpus, "--languages", "fr", "--no-progress", store=tmp_path / "s")
    rows = pq.read_table(Path(proc.stdout.strip().splitlines()[-1]) / "part-00000.parquet").to_pylist()
    assert [r["language"] for r in rows] == ["fr"] and rows[0]["id"] == "mine:0"


@pytest.mark.parametrize("args, message", [
    (["stage", "extract", "--input", "no/such/dir"], "no/such/dir: no such file or folder"),
    (["stage", "dedup", "--input", "README.md"], "README.md: not Parquet or JSONL"),
    (["stage", "langid", "--input", "x", "--min-language-score", "abc"], "Invalid value for '--min-language-score'"),
    (["run", "--set", "quality.no_such_knob=1"], "quality has no knob 'no_such_knob'"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, args, message):
    proc = scratchlm(*args, store=tmp_path / "s", check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_explains_every_knob(tmp_path):
    from pipeline.stages.quality import QualityConfig
    import dataclasses

    proc = scratchlm("stage", "quality", "--help", store=tmp_path, check=True)
    text = proc.stdout.replace("\n", " ")
    for field in dataclasses.fields(QualityConfig):
        assert "--" + field.name.replace("_", "-") in text


def test_killed_mid_run_leaves_nothing_that_looks_complete(tmp_path, sample_warcs):
    """kill -9 while extract writes; then a rerun gives the same bytes as an uninterrupted run."""
    clean = scratchlm("stage", "ingest", "--input", *sample_warcs, "--no-progress", store=tmp_path / "clean")
    ingest_dir = Path(clean.stdout.strip().splitlines()[-1])
    reference = Path(scratchlm("stage", "extract", "--input", ingest_dir, "--no-progress", "--workers", "1",
                               store=tmp_path / "clean").stdout.strip().splitlines()[-1])

    store = tmp_path / "crashy"
    env = dict(os.environ, SCRATCHLM_STORE=str(store))
    proc = subprocess.Popen(SCRATCHLM + ["stage", "extract", "--input", str(ingest_dir), "--workers", "1", "--no-progress"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((store / "extract").glob("_shards/.tmp-*")):
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((store / "extract").glob("_shards/.tmp-*")), "the kill should land while a shard is being written"
    complete = [p for p in (store / "extract").iterdir() if (p / "manifest.json").exists()]
    assert complete == []
    for shard in (store / "extract" / "_shards").iterdir():
        assert shard.name.startswith(".tmp-") or (shard / "shard.json").exists()

    rerun = Path(scratchlm("stage", "extract", "--input", ingest_dir, "--no-progress", store=store).stdout.strip().splitlines()[-1])
    parts = sorted(p.name for p in reference.glob("part-*.parquet"))
    assert parts == sorted(p.name for p in rerun.glob("part-*.parquet"))
    for name in parts:
        assert (rerun / name).read_bytes() == (reference / name).read_bytes()


def test_knob_reference_in_docs_is_generated_from_the_dataclasses():
    from flows.knob_docs import REGENERATE, knob_reference

    committed = (REPO / "docs" / "knobs.md").read_text()
    assert committed == knob_reference(), f"docs/knobs.md is stale; run: .venv/bin/{REGENERATE}"
    for name in STAGE_MODULES:  # every stage and every knob is in it
        assert f"## `{name}`" in committed
        for field in dataclasses.fields(get_stage(name).config_cls):
            assert f"`--{field.name.replace('_', '-')}`" in committed


def test_knobs_command_writes_the_reference_and_says_whether_it_changed(tmp_path):
    from flows.knob_docs import knob_reference

    target = tmp_path / "knobs.md"
    first = scratchlm("knobs", "--write", target, store=tmp_path / "s")
    assert "updated" in first.stderr and target.read_text() == knob_reference()
    second = scratchlm("knobs", "--write", target, store=tmp_path / "s")
    assert "already current" in second.stderr
    assert scratchlm("knobs", store=tmp_path / "s").stdout == knob_reference()


def test_run_command_starts_its_own_prefect_server_when_none_is_given(tmp_path, sample_warcs):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(SCRATCHLM_STORE=str(tmp_path / "store"), PREFECT_HOME=str(tmp_path / "prefect-home"))
    proc = subprocess.run(SCRATCHLM + ["run", "--crawl", str(sample_warcs[0]), "--until", "extract", "--workers", "1"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = Path(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["stage"] == "extract" and manifest["stats"]["docs_out"] > 0
    assert "temporary server" in proc.stderr.lower() or "temporary server" in proc.stdout.lower()


def test_ui_server_env_points_the_ui_at_its_own_port_unless_the_user_chose(monkeypatch):
    from flows.ui import server_env

    monkeypatch.delenv("PREFECT_SERVER_UI_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_UI_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere:4200/api")
    env = server_env(None, "127.0.0.1", 4311)
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4311/api" and "PREFECT_API_URL" not in env
    assert server_env(None, "0.0.0.0", 4311)["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4311/api"
    assert server_env(None, "::1", 4311)["PREFECT_SERVER_UI_API_URL"] == "http://[::1]:4311/api"
    monkeypatch.setenv("PREFECT_UI_API_URL", "https://prefect.example.org/api")  # behind a proxy: theirs wins
    assert "PREFECT_SERVER_UI_API_URL" not in server_env(None, "127.0.0.1", 4311)


def test_ui_names_the_database_it_really_uses(monkeypatch, tmp_path):
    from flows.ui import database_description

    for name in ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(name, raising=False)
    assert database_description(tmp_path) == f"SQLite under {tmp_path}"
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://prefect:s3cret@db.local:5432/prefect")
    described = database_description(tmp_path)
    assert described == "postgresql at db.local:5432/prefect" and "s3cret" not in described
