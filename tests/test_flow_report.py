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


# ----------------------------------------- model stages: one data knob apart, a fixed held-out set

TINY_PRETRAIN = dict(max_steps=10, batch_tokens=512, seq_len=64, eval_every=0, checkpoint_every=0, lr=3e-3,
                     cpu_threads=1, device="cpu")


def _model_chain(store: ArtifactStore, run: dict[str, str], held_out: Path, seed: int = 0, **evaluate) -> dict[str, str]:
    options = RunOptions(workers=1, progress=False)
    run = dict(run)
    steps = [("train-tokenizer", [run["dedup"]], get_stage("train-tokenizer").config_cls(vocab_size=512)),
             ("tokenize", [run["dedup"]], None), ("pretrain", None, None), ("evaluate", None, None)]
    for name, inputs, config in steps:
        if name == "tokenize":
            config = get_stage(name).config_cls(tokenizer=run["train-tokenizer"], val_fraction=0.2)
        elif name == "pretrain":
            inputs, config = [run["tokenize"]], get_stage(name).config_cls(seed=seed, **TINY_PRETRAIN)
        elif name == "evaluate":
            inputs = [run["pretrain"]]
            config = get_stage(name).config_cls(**{"tokens": run["tokenize"], "held_out": str(held_out), "prompt": [],
                                                   "device": "cpu", "cpu_threads": 1, "continuation_task": 40, **evaluate})
        run[name] = str(run_stage(get_stage(name), inputs, config, store, options).path)
    return run


def _texts(folder: str) -> list[tuple[str, str]]:
    import pyarrow.parquet as pq

    return [row for p in sorted(Path(folder).glob("part-*.parquet"))
            for row in zip(*pq.read_table(p, columns=["id", "text"]).to_pydict().values())]


@pytest.fixture(scope="module")
def model_runs(two_runs):
    """The two runs of `two_runs` (quality.gopher_min_words 50 vs 150) continued through
    train-tokenizer → tokenize → pretrain (a tiny GPT, 10 steps) → evaluate on one fixed held-out
    set: 8 pages langid set aside (no run trains on them) and 6 pages run A trained on (so the
    contamination counts are known not to be zero)."""
    root, run_a, run_b = two_runs
    store = ArtifactStore(root / "store")
    kept = {doc_id for doc_id, _ in _texts(run_a["langid"])}
    unseen = [text for doc_id, text in _texts(run_a["extract"]) if doc_id not in kept and 500 < len(text) < 2500][:8]
    trained = [text for _, text in _texts(run_a["dedup"])][:6]
    texts = unseen + trained
    held_out = root / "held-out.jsonl"
    held_out.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return root, store, held_out, texts, _model_chain(store, run_a, held_out), _model_chain(store, run_b, held_out)


def _row(text: str, measure: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {measure} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_compare_two_runs_one_knob_apart_on_a_fixed_held_out_set(model_runs):
    """Issue 14's done-when: two runs one data knob apart, scored on the same held-out bytes: B − A
    of bits per byte with its standard error, the significance mark, the contamination counts."""
    from typer.testing import CliRunner

    from flows.cli import app
    from model.evaluate import texts_sha256

    root, store, held_out, texts, run_a, run_b = model_runs
    write_report(run_a, root / "model-a")
    write_report(run_b, root / "model-b")
    result = CliRunner().invoke(app, ["report", "--compare", str(root / "model-a"), "--compare", str(root / "model-b")])
    assert result.exit_code == 0, result.output
    text = result.stdout
    evals = [json.loads((Path(r["evaluate"]) / "eval.json").read_text()) for r in (run_a, run_b)]
    digest = texts_sha256(texts)
    assert all(e["held_out"]["sha256"] == digest for e in evals)  # the same bytes, whatever the tokenizer
    assert evals[0]["tokenizer_sha256"] != evals[1]["tokenizer_sha256"]

    measure, a, b, diff, verdict, contaminated, clean, sha = _row(text, "held_out.bits_per_byte")
    held_a, held_b = evals[0]["held_out"], evals[1]["held_out"]
    assert a == f"{held_a['bits_per_byte']:.4f} ± {held_a['bits_per_byte_stderr']:.4f}"
    assert b == f"{held_b['bits_per_byte']:.4f} ± {held_b['bits_per_byte_stderr']:.4f}"
    assert sha == digest[:12]
    value, se = (float(v) for v in diff.removesuffix(" (paired)").split(" ± "))
    assert diff.endswith("(paired)") and value == pytest.approx(held_b["bits_per_byte"] - held_a["bits_per_byte"], abs=1e-4)
    assert verdict == ("not significant" if abs(value) <= 2 * se else
                       "significant, better" if value < 0 else "significant, worse")
    counts = [e["held_out"]["contamination"] for e in evals]
    assert contaminated == f"{counts[0]['items']}/{len(texts)} → {counts[1]['items']}/{len(texts)}"
    from model.benchmarks import read_held_out_documents
    train_split = {text for _, text in read_held_out_documents([run_a["tokenize"]], split="train")}
    trained_by_a = {8 + i for i, text in enumerate(texts[8:]) if text in train_split}  # val-split pages are not
    assert trained_by_a and trained_by_a <= set(counts[0]["documents"]) and counts[0]["items"] < len(texts)
    assert clean.startswith(f"{counts[0]['clean']['bits_per_byte']:.4f} ± ")
    # the crawl-made task is made from the held-out set: the same file in both runs, so it compares too
    task = _row(text, "crawl-continuation.acc")
    shas = [next(b["sha256"] for b in e["benchmarks"] if b["name"] == "crawl-continuation") for e in evals]
    assert shas[0] == shas[1] and task[-1] == shas[0][:12] and task[3].endswith("(paired)")
    # nats per token of two tokenizers are not compared: one line says why
    assert "- held_out.loss: not comparable, nats per token of different tokenizers" in text

    # the paired standard error against a bootstrap over the same documents
    import numpy as np
    units = [e["held_out"]["per_document"] for e in evals]
    bits = [np.array(u["bits"]) for u in units]
    nbytes = np.array(units[0]["bytes"])
    assert units[1]["bytes"] == units[0]["bytes"]
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(3000):
        pick = rng.integers(0, len(nbytes), len(nbytes))
        boot.append((bits[1][pick].sum() - bits[0][pick].sum()) / nbytes[pick].sum())
    assert se == pytest.approx(np.std(boot), rel=0.2, abs=2e-4)

    # the funnel shows what model stages made, not documents in → out (issue 16.5)
    stages = _row(text, "pretrain")
    assert stages[3] == "5,120 tokens trained → 5,120 tokens trained"  # 10 steps × 512 tokens
    report = (root / "model-a" / "report.md").read_text()
    assert "| pretrain |  | 5,120 tokens trained |" in report
    assert f"{len(texts):,} held-out documents" in report


def test_compare_refuses_scores_made_on_different_held_out_bytes(model_runs):
    root, store, held_out, texts, run_a, _ = model_runs
    on_val = dict(run_a)
    config = get_stage("evaluate").config_cls(tokens=run_a["tokenize"], prompt=[], device="cpu", cpu_threads=1)
    on_val["evaluate"] = str(run_stage(get_stage("evaluate"), [run_a["pretrain"]], config, store,
                                       RunOptions(workers=1, progress=False)).path)
    text = compare(load_run(json_outputs(root / "a.json", run_a)), load_run(json_outputs(root / "v.json", on_val)))
    refusal = [line for line in text.splitlines() if line.startswith("- held_out.bits_per_byte")]
    assert len(refusal) == 1 and "not comparable, made on different held-out bytes" in refusal[0]
    assert "A: held-out" in refusal[0] and "B: val split" in refusal[0]
    assert "| held_out.bits_per_byte |" not in text


def json_outputs(path: Path, outputs: dict[str, str]) -> Path:
    path.write_text(json.dumps(outputs))
    return path


def test_seeds_run_pretrain_and_evaluate_once_each_and_report_mean_and_spread(model_runs, prefect_server):
    from flows.pipeline_flow import model_pipeline
    from flows.report import evaluation_scores

    root, store, held_out, texts, run_a, _ = model_runs
    pretrain = get_stage("pretrain").config_cls(**TINY_PRETRAIN)
    evaluate = get_stage("evaluate").config_cls(prompt=[], device="cpu", cpu_threads=1, continuation_task=40)
    outputs = model_pipeline(tokens=[run_a["tokenize"]], store=str(store.root), until="evaluate", workers=1,
                             held_out=str(held_out), seeds=[0, 1], pretrain=pretrain, evaluate=evaluate)
    assert set(outputs) == {"pretrain", "evaluate", "pretrain@seed1", "evaluate@seed1"}
    assert outputs["pretrain"] == run_a["pretrain"]  # seed 0: the run above, from the store
    assert load_manifest(outputs["pretrain@seed1"])["config"]["seed"] == 1
    assert load_manifest(outputs["evaluate@seed1"])["config"]["held_out"] == str(held_out.resolve())
    record = load_run(json_outputs(root / "seeds.json", outputs))
    scores = evaluation_scores(record)["held_out.bits_per_byte"]
    values = [json.loads((Path(outputs[s]) / "eval.json").read_text())["held_out"]["bits_per_byte"]
              for s in ("evaluate", "evaluate@seed1")]
    assert values[0] != values[1] and scores["seeds"] == 2
    assert scores["value"] == pytest.approx(sum(values) / 2)
    assert scores["spread"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    report = write_report(outputs, root / "seeds-report").read_text()
    assert "mean ± spread over 2 seeds" in report and "(mean of 2 seeds, spread" in report
