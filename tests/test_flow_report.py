"""The run report and `scratchlm report --compare`, over the manifests of real stage runs."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.report import changed_stages, compare, load_run, write_report
from pipeline.runner import RunOptions, run_stage
from pipeline.stages import get_stage
from storage.store import ArtifactStore, load_manifest

REPO = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "extract", "langid", "quality", "dedup")


def _run_chain(warc: Path, store: ArtifactStore, quality) -> dict[str, str]:
    outputs, inputs = {}, [str(warc)]
    for name in STAGES:
        config = quality if name == "quality" else None
        result = run_stage(get_stage(name), inputs, config, store, RunOptions(workers=1, progress=False))
        outputs[name] = str(result.path)
        inputs = [str(result.path)]
    return outputs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, sample_warcs):
    root = tmp_path_factory.mktemp("report")
    store = ArtifactStore(root / "store")
    base = get_stage("quality").config_cls()
    run_a = _run_chain(sample_warcs[0], store, base)
    run_b = _run_chain(sample_warcs[0], store, dataclasses.replace(base, gopher_min_words=150))
    return root, run_a, run_b


def test_report_shows_the_funnel_images_and_every_stage_config_and_key(two_runs):
    root, run_a, _ = two_runs
    report = write_report(run_a, root / "report-a")
    text = report.read_text()
    for stage, folder in run_a.items():
        manifest = load_manifest(folder)
        stats = manifest["stats"]
        assert f"| {stage} | {stats['docs_in']} | {stats['docs_out']} | {stats['bytes_in']} |" in text
        assert f"key `{manifest['key']}`" in text
        top_reason = max(stats["dropped"].items(), key=lambda kv: kv[1], default=None)
        if top_reason:
            assert f"{top_reason[0]} {top_reason[1]}" in text
    for image in ("funnel.png", "quality-report.png", "langid-report.png"):
        assert (report.parent / image).stat().st_size > 1000
        assert f"]({image})" in text
    record = load_run(report.parent)
    assert {s: r["key"] for s, r in record.items()} == {s: load_manifest(f)["key"] for s, f in run_a.items()}


def test_compare_names_the_changed_knob_and_what_moved_downstream(two_runs):
    root, run_a, run_b = two_runs
    write_report(run_a, root / "cmp-a")
    write_report(run_b, root / "cmp-b")
    record_a, record_b = load_run(root / "cmp-a"), load_run(root / "cmp-b")
    assert changed_stages(record_a, record_b) == ["quality", "dedup"]
    text = compare(record_a, record_b)
    assert "| ingest | same |" in text and "| langid | same |" in text
    default = get_stage("quality").config_cls().gopher_min_words
    assert f"gopher_min_words: {default} → 150" in text
    docs_a, docs_b = (load_manifest(r["dedup"])["stats"]["docs_out"] for r in (run_a, run_b))
    assert docs_b < docs_a and f"{docs_a} → {docs_b}" in text

    # The CLI, with flow outputs ({stage: folder} JSON) on one side and a report folder on the other.
    outputs_file = root / "outputs-b.json"
    outputs_file.write_text(json.dumps(run_b))
    proc = subprocess.run([sys.executable, "-c", "from flows.cli import main; main()", "report", "--compare",
                           str(root / "cmp-a"), str(outputs_file)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"gopher_min_words: {default} → 150" in proc.stdout
    bad = subprocess.run([sys.executable, "-c", "from flows.cli import main; main()", "report", "--compare",
                          str(root / "cmp-a"), str(root)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "not a report folder" in bad.stderr and "Traceback" not in bad.stderr
