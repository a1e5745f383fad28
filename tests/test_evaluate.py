"""Evaluation: lm-eval-compatible scoring, bits per byte, benchmark files, the crawl-made task, the stage.

A tiny GPT is trained here for a few dozen steps on documents with a fixed pattern ("the dog
barks loudly. ..."), so the right answers are known; a zero-logit model is the uniform baseline
whose scores follow from token counts alone."""
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import (ANIMALS, SOUNDS, one_torch_thread, pattern_text, tiny_gpt, train_on,  # noqa: E402,F401
                           train_tokenizer, uniform_model, write_checkpoint, write_token_parts)

from model.benchmarks import (BenchmarkError, ChoiceItem, ClozeItem, ContinuationTaskConfig,  # noqa: E402
                              continuation_items, read_benchmark, read_held_out_documents)
from model.evaluate import (encode_pair, evaluate_held_out, loglikelihoods, mean_stderr,  # noqa: E402
                            score_cloze, score_multiple_choice)

REPO = Path(__file__).resolve().parent.parent



@pytest.fixture(scope="module")
def world(tmp_path_factory, one_torch_thread):
    """Tokenizer, a trained tiny GPT, its checkpoint folder and a token artifact (train + val)."""
    root = tmp_path_factory.mktemp("eval")
    texts = pattern_text(400)
    tokenizer_path = train_tokenizer(root / "tokenizer.json", texts)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    torch.manual_seed(0)
    model = tiny_gpt(tokenizer.get_vocab_size())
    train_on(model, tokenizer, texts, steps=80, seq_len=32, batch_size=8)
    docs = [("val" if i % 5 == 0 else "train", t) for i, t in enumerate(pattern_text(200, seed=1))]
    tokens = write_token_parts(root / "tokens", tokenizer_path, docs)
    checkpoint = write_checkpoint(root / "checkpoint", model, tokenizer_path, step=80, data=[tokens / "part-00000.parquet"])
    return {"root": root, "tokenizer": tokenizer, "tokenizer_path": tokenizer_path, "model": model,
            "checkpoint": checkpoint, "tokens": tokens, "docs": docs}


def animal_items() -> list[ChoiceItem]:
    sounds = sorted(set(SOUNDS.values()))
    items = []
    for n, animal in enumerate(ANIMALS):
        wrong = [s for s in sounds if s != SOUNDS[animal]][:3]
        label = n % 4
        choices = wrong[:label] + [SOUNDS[animal]] + wrong[label:]
        items.append(ChoiceItem(f"the {animal}", [c + " loudly." for c in choices], label))
    return items


# ------------------------------------------------------------------------------------ tokenising

def test_encode_pair_is_lm_evals(world):
    tok = world["tokenizer"]
    eot = tok.token_to_id("<|endoftext|>")
    context, continuation = encode_pair(tok, "the dog ", "barks", eot)
    assert (context, continuation) == encode_pair(tok, "the dog", " barks", eot)  # trailing space moves over
    assert context + continuation == tok.encode("the dog barks").ids
    assert tok.decode(continuation) == " barks"
    assert encode_pair(tok, "", "the dog", eot) == ([eot], tok.encode("the dog").ids)  # empty context


# -------------------------------------------------------------------------------------- scoring

def test_trained_model_picks_the_right_continuations(world):
    result = score_multiple_choice(world["model"], world["tokenizer"], animal_items())
    assert result.metrics["acc"] == 1.0 and result.metrics["acc_norm"] == 1.0
    assert result.metrics["chance"] == 0.25 and result.metrics["items"] == len(ANIMALS)
    # the untrained model of the same shape does not know them
    untrained = score_multiple_choice(tiny_gpt(world["tokenizer"].get_vocab_size(), seed=1), world["tokenizer"],
                                      animal_items())
    assert untrained.metrics["acc"] < 1.0


def test_acc_sums_and_acc_norm_divides_by_length(world):
    """Under a uniform model a continuation's log-likelihood is -(its tokens) · ln V, so acc
    prefers the fewest tokens and acc_norm the most characters per token."""
    tok = world["tokenizer"]
    V = tok.get_vocab_size()
    eot = tok.token_to_id("<|endoftext|>")
    choices = ["xq", "the grass is green and the sky is blue", "zz", "kw"]
    items = [ChoiceItem("the cat", choices, label) for label in range(4)]
    result = score_multiple_choice(uniform_model(V), tok, items)
    n_tokens = np.array([len(encode_pair(tok, "the cat", " " + c, eot)[1]) for c in choices])
    lls = -n_tokens * math.log(V)
    np.testing.assert_allclose(result.per_item[0]["loglikelihoods"], lls, rtol=1e-5)
    pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / np.array([len(c) for c in choices])))
    assert pred != pred_norm  # the long choice: more tokens, fewer per character
    assert [r["pred"] for r in result.per_item] == [pred] * 4
    assert [r["pred_norm"] for r in result.per_item] == [pred_norm] * 4
    assert result.metrics["acc"] == 0.25 and result.metrics["acc_norm"] == 0.25
    assert result.metrics["acc_stderr"] == pytest.approx(math.sqrt(0.25 * 0.75 / 3))


def test_mean_stderr_is_lm_evals():
    values = [1.0] * 7 + [0.0] * 13
    p = 7 / 20
    assert mean_stderr(values) == pytest.approx(math.sqrt(p * (1 - p) / 19))


def reference_loglikelihood(model, context, continuation):
    """One request, no batching, the model's own forward: the definition of the score."""
    whole = (context + continuation)[-(model.config.block_size + 1):]
    n = min(len(continuation), len(whole) - 1)
    with torch.no_grad():
        logits, _ = model(torch.tensor([whole[:-1]]))
    logprobs = F.log_softmax(logits[0, -n:].float(), dim=-1)
    target = torch.tensor(whole[-n:])
    return float(logprobs.gather(1, target[:, None]).sum()), bool((logprobs.argmax(-1) == target).all())


def test_batching_and_padding_do_not_change_scores(world):
    tok, model = world["tokenizer"], world["model"]
    eot = tok.token_to_id("<|endoftext|>")
    stream = tok.encode(" ".join(pattern_text(12, seed=3))).ids
    requests = [(stream[start:start + k], stream[start + k:start + k + m])  # from 4 to 110 tokens:
                for start, k, m in [(0, 3, 1), (5, 8, 4), (9, 15, 9), (2, 30, 2), (7, 50, 12), (1, 70, 5),
                                    (3, 90, 20), (11, 4, 30), (0, 60, 1), (4, 20, 20)]]  # some cut to block_size
    lengths = [len(c) + len(x) for c, x in requests]
    assert max(lengths) > model.config.block_size + 1 and min(lengths) < 10
    reference = [reference_loglikelihood(model, c, x) for c, x in requests]
    for batch_size in (1, 5, 64):
        scores = loglikelihoods(model, requests, batch_size=batch_size, pad_id=eot)
        np.testing.assert_allclose([s for s, _ in scores], [s for s, _ in reference], rtol=0, atol=1e-4)
        assert [g for _, g in scores] == [g for _, g in reference]
    # a different padding token gives the same scores too
    other = loglikelihoods(model, requests, batch_size=64, pad_id=7)
    np.testing.assert_allclose([s for s, _ in other], [s for s, _ in reference], rtol=0, atol=1e-4)


def test_lambada_greedy_accuracy_and_perplexity(world):
    tok, model = world["tokenizer"], world["model"]
    right = [ClozeItem(f"the {a}", f" {SOUNDS[a]}") for a in ANIMALS[:4]]
    wrong = [ClozeItem(f"the {a}", " sings" if SOUNDS[a] != "sings" else " barks") for a in ANIMALS[:4]]
    result = score_cloze(model, tok, right + wrong)
    assert [r["greedy"] for r in result.per_item] == [True] * 4 + [False] * 4
    assert result.metrics["acc"] == 0.5
    lls = [r["loglikelihood"] for r in result.per_item]
    assert result.metrics["perplexity"] == pytest.approx(math.exp(-np.mean(lls)))


# ---------------------------------------------------------------------------------- bits per byte

def test_bits_per_byte_of_uniform_model_and_learning(world):
    tok = world["tokenizer"]
    V = tok.get_vocab_size()
    files = [world["tokens"] / "part-00000.parquet"]
    uniform = evaluate_held_out(uniform_model(V), files, tok, show_progress=False)
    val_texts = [text for split, text in world["docs"] if split == "val"]
    assert uniform["bytes"] == sum(len(t.encode("utf-8")) for t in val_texts)  # separators count no bytes
    assert uniform["tokens"] == sum(len(tok.encode(t).ids) + 1 for t in val_texts)
    assert uniform["loss"] == pytest.approx(math.log(V), rel=1e-6)
    assert uniform["perplexity"] == pytest.approx(V, rel=1e-5)
    assert uniform["bits_per_byte"] == pytest.approx(math.log2(V) * uniform["bpb_tokens"] / uniform["bytes"], rel=1e-6)
    trained = evaluate_held_out(world["model"], files, tok, show_progress=False)
    # the trained model beats the unigram baseline, which beats the uniform model
    assert trained["bits_per_byte"] < trained["unigram"]["bits_per_byte"] < uniform["bits_per_byte"]
    assert trained["unigram"] == uniform["unigram"]


# -------------------------------------------------------------------------------- benchmark files

def write_lines(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_formats_are_read_as_lm_eval_prompts_them(tmp_path):
    hella = read_benchmark(write_lines(tmp_path / "h.jsonl", [{"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": "2"}]))
    assert hella.format == "hellaswag" and hella.items[0] == ChoiceItem("A man", ["a", "b", "c", "d"], 2)
    arc = read_benchmark(write_lines(tmp_path / "a.jsonl", [
        {"question": "Q?", "choices": {"text": ["x", "y", "z"], "label": ["A", "B", "C"]}, "answerKey": "C"}]))
    assert arc.format == "arc" and arc.items[0] == ChoiceItem("Question: Q?\nAnswer:", ["x", "y", "z"], 2)
    piqa = read_benchmark(write_lines(tmp_path / "p.jsonl", [{"goal": "G", "sol1": "s1", "sol2": "s2", "label": 1}]))
    assert piqa.format == "piqa" and piqa.items[0] == ChoiceItem("Question: G\nAnswer:", ["s1", "s2"], 1)
    lamb = read_benchmark(write_lines(tmp_path / "l.jsonl", [{"text": "he said hello"}, {"context": "she said", "target": "bye"}]))
    assert lamb.kind == "cloze" and lamb.items == [ClozeItem("he said", " hello"), ClozeItem("she said", " bye")]
    (tmp_path / "array.json").write_text(json.dumps([{"goal": "G", "sol1": "s1", "sol2": "s2", "label": 0}] * 3, indent=1))
    assert read_benchmark(tmp_path / "array.json").items == [ChoiceItem("Question: G\nAnswer:", ["s1", "s2"], 0)] * 3


BAD_FILES = {
    "missing_field": ([{"ctx": "a", "endings": ["x", "y"], "label": 0}, {"ctx": "b", "endings": ["x", "y"]}], 2, "missing field 'label'"),
    "label_out_of_range": ([{"ctx": "a", "endings": ["x", "y"], "label": 0}] * 2 + [{"ctx": "a", "endings": ["x", "y"], "label": 4}], 3, "label 4 out of range"),
    "not_json": ([{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}, "{not json"], 2, "not valid JSON"),
    "empty": ([], None, "empty file"),
    "unknown_format": ([{"prompt": "x"}], 1, "cannot tell the format"),
    "empty_choice": ([{"ctx": "a", "endings": ["x", " "], "label": 0}], 1, "choice 1 of 'endings' is empty"),
    "arc_answer": ([{"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}], 1, "answerKey 'E'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_benchmark_file_is_one_line_naming_file_and_line(tmp_path, case):
    records, line, message = BAD_FILES[case]
    path = write_lines(tmp_path / f"{case}.jsonl", records)
    with pytest.raises(BenchmarkError) as info:
        read_benchmark(path)
    text = str(info.value)
    assert "\n" not in text and message in text
    assert text.startswith(f"{path}:{line}:" if line else f"{path}:")


def run_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=240)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def cli_in_process(*args):
    from typer.testing import CliRunner

    from flows.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_bad_benchmark_through_the_cli_is_exit_2_and_one_line(world, tmp_path):
    records, line, message = BAD_FILES["label_out_of_range"]
    bad = write_lines(tmp_path / "bad.jsonl", records)
    good = write_lines(tmp_path / "good.jsonl", [{"ctx": "the dog", "endings": ["barks", "meows"], "label": 0}])
    proc = run_cli("stage", "evaluate", "--input", world["checkpoint"], "--benchmark", good, "--benchmark", bad,
                   "--store", tmp_path / "store", "--no-progress", check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert errors == [f"error: {bad}:{line}: label 4 out of range for 2 choices (0..1)"]
    assert not list((tmp_path / "store").glob("evaluate/*/manifest.json"))  # nothing half made


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_every_bad_file_case_through_the_cli(world, tmp_path, case):
    records, line, message = BAD_FILES[case]
    bad = write_lines(tmp_path / f"{case}.jsonl", records)
    result = cli_in_process("stage", "evaluate", "--input", world["checkpoint"], "--benchmark", bad,
                            "--store", tmp_path / "store", "--no-progress")
    assert result.exit_code == 2 and (result.exception is None or isinstance(result.exception, SystemExit))
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:{line}:" if line else f"error: {bad}:")
    assert message in lines[0]


# ------------------------------------------------------------------------ the crawl-made benchmark

def paragraph_docs(n=12, words=30):
    docs = []
    for d in range(n):
        paragraphs = [" ".join(f"w{d}p{p}x{i}" for i in range(words)) for p in range(3)]
        docs.append((f"doc{d}", "Title\n" + "\n\n".join(paragraphs)))
    return docs


def test_continuation_task_is_real_continuations_and_deterministic():
    config = ContinuationTaskConfig(items=8, context_words=10, ending_words=5, seed=3)
    items = continuation_items(paragraph_docs(), config)
    assert len(items) == 8
    for item in items:
        words = item["ctx"].split()
        assert len(words) == 10 and len(item["endings"]) == 4
        doc, paragraph = words[0].split("p")[0], words[0].split("x")[0]
        true = item["endings"][item["label"]].split()
        assert true == [f"{paragraph}x{i}" for i in range(10, 15)]  # the real next words
        assert words[0].endswith("x0")  # the start of a paragraph
        others = [e for i, e in enumerate(item["endings"]) if i != item["label"]]
        assert all(not e.startswith(doc + "p") for e in others)  # wrong endings: other documents
    assert continuation_items(paragraph_docs(), config) == items
    assert continuation_items(paragraph_docs(), ContinuationTaskConfig(items=8, context_words=10, ending_words=5, seed=4)) != items
    every = continuation_items(paragraph_docs(4), ContinuationTaskConfig(items=100, context_words=10, ending_words=5,
                                                                          per_document=0))
    assert len(every) == 12  # 3 paragraphs in each of 4 documents
    same_endings = [(f"d{n}", f"start {n} of the line and then the same words here") for n in range(10)]
    with pytest.raises(BenchmarkError, match="different endings"):  # and no endless search
        continuation_items(same_endings, ContinuationTaskConfig(context_words=3, ending_words=5))
    assert len({i["label"] for i in continuation_items(paragraph_docs(40), ContinuationTaskConfig(items=40, context_words=10, ending_words=5))}) == 4


def test_held_out_documents_from_text_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = paragraph_docs(4)
    write_lines(tmp_path / "docs.jsonl", [{"id": i, "text": t, "language": "en" if n % 2 else "fr"}
                                          for n, (i, t) in enumerate(docs)])
    assert list(read_held_out_documents([tmp_path / "docs.jsonl"])) == docs
    assert [i for i, _ in read_held_out_documents([tmp_path / "docs.jsonl"], language="en")] == ["doc1", "doc3"]
    (tmp_path / "art").mkdir()
    pq.write_table(pa.table({"id": [i for i, _ in docs], "text": [t for _, t in docs]}), tmp_path / "art" / "part-00000.parquet")
    assert list(read_held_out_documents([tmp_path / "art"])) == docs  # e.g. a dedup artifact
    write_lines(tmp_path / "bad.jsonl", [{"id": "x", "text": "fine"}, {"id": "y"}])
    with pytest.raises(BenchmarkError, match=r"bad.jsonl:2: no 'text' string"):
        list(read_held_out_documents([tmp_path / "bad.jsonl"]))


def test_make_benchmark_from_token_artifact_uses_val_documents(world, tmp_path):
    docs = [("val" if n % 2 else "train", text) for n, (_, text) in enumerate(paragraph_docs(16))]
    tok_dir = write_token_parts(tmp_path / "tokens", world["tokenizer_path"], docs)
    val_texts = {t for s, t in docs if s == "val"}
    assert {t for _, t in read_held_out_documents([tok_dir])} == val_texts  # decoded val documents only
    out = tmp_path / "task.jsonl"
    args = ("make-benchmark", "--input", tok_dir, "--output", out, "--items", "5",
            "--context-words", "10", "--ending-words", "5", "--seed", "1")
    run_cli(*args)  # a real process once; the rest in this one
    first = out.read_bytes()
    out.unlink()
    assert cli_in_process(*args).exit_code == 0 and out.read_bytes() == first
    bench = read_benchmark(out)
    assert bench.format == "hellaswag" and len(bench.items) == 5
    for item in bench.items:
        assert any(item.context + " " + item.choices[item.label] in t for t in val_texts)
    too_few = cli_in_process("make-benchmark", "--input", tok_dir, "--output", tmp_path / "x.jsonl", "--context-words", "50")
    assert too_few.exit_code == 2 and (too_few.exception is None or isinstance(too_few.exception, SystemExit))
    assert too_few.stderr.strip().splitlines() == ["error: only 0 paragraphs of 62+ words in the documents; need at least 4 "
                                                   "(fewer --context-words/--ending-words?)"]


# ------------------------------------------------------------------------------------- the stage

def test_evaluate_stage_writes_report_and_caches(world, tmp_path):
    from pipeline.runner import run_stage
    from pipeline.stages import get_stage
    from pipeline.stages.evaluate import EvaluateConfig
    from storage.store import ArtifactStore

    bench = write_lines(tmp_path / "animals.jsonl", [
        {"ctx": i.context, "endings": i.choices, "label": i.label} for i in animal_items()])
    cloze = write_lines(tmp_path / "cloze.jsonl", [{"text": f"the {a} {SOUNDS[a]}"} for a in ANIMALS])
    config = EvaluateConfig(benchmark=[str(bench), str(cloze)], prompt=["the dog"], max_new_tokens=8, device="cpu")
    stage, store = get_stage("evaluate"), ArtifactStore(tmp_path / "store")
    result = run_stage(stage, [world["checkpoint"]], config, store)
    report = json.loads((result.path / "eval.json").read_text())
    assert report["benchmarks"][0]["acc"] == 1.0 and report["benchmarks"][0]["format"] == "hellaswag"
    assert report["benchmarks"][1]["kind"] == "cloze" and report["benchmarks"][1]["acc"] == 1.0
    held = report["held_out"]  # token files from the checkpoint's config.json
    assert held["tokens"] > 0 and held["bits_per_byte"] < held["unigram"]["bits_per_byte"]
    assert report["generations"][0]["prompt"] == "the dog" and report["generations"][0]["text"]
    assert report["continuation_task"].startswith("no continuation task: only 0 paragraphs")  # one-line docs
    markdown = (result.path / "eval.md").read_text()
    assert "| animals | hellaswag | 8 | 1.0000" in markdown and "unigram" in markdown
    assert (result.path / "eval.png").stat().st_size > 0
    assert result.manifest["stats"]["eval"]["animals"]["acc"] == 1.0
    assert run_stage(stage, [world["checkpoint"]], config, store).cached
    write_lines(bench, [{"ctx": "the dog", "endings": ["barks", "meows"], "label": 1}])  # new content, same path
    changed = run_stage(stage, [world["checkpoint"]], config, store)
    assert not changed.cached and changed.key != result.key
    # the crawl-made task from val documents with long paragraphs
    long_docs = write_token_parts(tmp_path / "long", world["tokenizer_path"],
                                  [("val", text) for _, text in paragraph_docs(8, words=40)] + world["docs"][:5])
    made = run_stage(stage, [world["checkpoint"]], EvaluateConfig(tokens=str(long_docs), prompt=[], device="cpu"), store)
    task = json.loads((made.path / "eval.json").read_text())["benchmarks"][0]
    assert task["name"] == "crawl-continuation" and task["items"] == 24 and task["chance"] == 0.25  # 8 docs × 3
    assert len((made.path / "continuation-task.jsonl").read_text().splitlines()) == 24
    # its path is relative to the artifact (the work folder it was written in is renamed away), and
    # its sha256 names the file that is there
    assert task["path"] == "continuation-task.jsonl" and ".work" not in json.dumps(json.loads((made.path / "eval.json").read_text())["benchmarks"])
    assert hashlib.sha256((made.path / task["path"]).read_bytes()).hexdigest() == task["sha256"]
    other_tokenizer = train_tokenizer(tmp_path / "other.json", pattern_text(50), vocab_size=280)
    other_tokens = write_token_parts(tmp_path / "other-tokens", other_tokenizer, world["docs"][:10])
    from pipeline.errors import StageError
    with pytest.raises(StageError, match="another tokenizer"):
        run_stage(stage, [world["checkpoint"]], EvaluateConfig(tokens=str(other_tokens), prompt=[]), store)


# ------------------------------------------------------------- official formats (HellaSwag, MMLU)

def test_hellaswag_published_fields_get_lm_evals_preprocessing(tmp_path):
    """lm_eval/tasks/hellaswag/utils.py: activity_label + ": " + ctx_a + " " + ctx_b.capitalize(),
    " [title]" → ". ", other [...] markers removed, double spaces made single; endings too."""
    records = [
        {"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
         "ctx_b": "then", "ctx": "ignored when the published fields are there",
         "endings": [", the man adds wax.", ", the man walks away.", "a woman [step] smiles.", "he stops."], "label": "3"},
        {"activity_label": "Home and Garden", "ctx_a": "[header] How to grow tomatoes [title] Pick a sunny spot.",
         "ctx_b": "", "endings": ["[substeps] Dig  a hole.", "Eat it.", "Sing.", "Sleep."], "label": 0},
    ]
    bench = read_benchmark(write_lines(tmp_path / "hellaswag.jsonl", records))
    assert bench.format == "hellaswag"
    first, second = bench.items
    assert first.context == "Removing ice from car: Then, the man writes over the snow. Then"
    assert first.choices == [", the man adds wax.", ", the man walks away.", "a woman smiles.", "he stops."]
    assert first.label == 3
    assert second.context == "Home and Garden: How to grow tomatoes. Pick a sunny spot."
    assert second.choices[0] == " Dig a hole."  # lm-eval strips before it removes the marker
    # the crawl-made task's records (ctx only) are scored on ctx as written
    plain = read_benchmark(write_lines(tmp_path / "plain.jsonl", [{"ctx": "A [b] c", "endings": ["x", "y"], "label": 0}]))
    assert plain.items[0].context == "A [b] c"


def test_mmlu_is_read_with_lm_evals_prompt(tmp_path):
    records = [{"question": " Which organ pumps blood? ", "subject": "high_school_biology",
                "choices": ["lung", "heart", "liver", "skin"], "answer": 1},
               {"question": "2+2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"], "answer": "B"}]
    bench = read_benchmark(write_lines(tmp_path / "mmlu.jsonl", records))
    assert bench.format == "mmlu"
    item = bench.items[0]
    assert item.context == ("The following are multiple choice questions (with answers) about high school biology.\n\n"
                            "Which organ pumps blood?\nA. lung\nB. heart\nC. liver\nD. skin\nAnswer:")
    assert item.choices == ["A", "B", "C", "D"] and item.label == 1 and item.subject == "high_school_biology"
    assert bench.items[1].label == 1 and bench.items[1].context.startswith(
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n2+2?\nA. 3")
    with pytest.raises(BenchmarkError, match=r"mmlu3.jsonl:1: field 'choices' must be a list of 4 strings"):
        read_benchmark(write_lines(tmp_path / "mmlu3.jsonl", [{**records[0], "choices": ["a", "b", "c"]}]))
    with pytest.raises(BenchmarkError, match=r"mmlu5.jsonl:1: answer 7 is not a choice"):
        read_benchmark(write_lines(tmp_path / "mmlu5.jsonl", [{**records[0], "answer": 7}]))


def test_acc_per_subject_with_macro_and_micro_averages():
    from model.evaluate import choice_metrics

    def item(subject, right):
        return {"pred": 0 if right else 1, "pred_norm": 0, "pred_bytes": 0, "label": 0, "choices": 4, "subject": subject}

    per_item = [item("anatomy", True), item("anatomy", True), item("anatomy", False), item("virology", False)]
    metrics = choice_metrics(per_item)
    assert metrics["subjects"]["anatomy"]["acc"] == pytest.approx(2 / 3) and metrics["subjects"]["anatomy"]["items"] == 3
    assert metrics["subjects"]["virology"]["acc"] == 0.0
    assert metrics["acc_macro"] == pytest.approx((2 / 3 + 0) / 2)  # each subject weighs the same
    assert metrics["acc_micro"] == metrics["acc"] == 0.5  # each item weighs the same (lm-eval's weight_by_size)
    assert "subjects" not in choice_metrics([{**i, "subject": ""} for i in per_item])


# ------------------------------------------------------------ held-out set, standard errors, digests

def test_held_out_texts_score_the_same_bytes_as_the_split_with_standard_errors(world):
    from model.evaluate import texts_sha256

    tok, files = world["tokenizer"], [world["tokens"] / "part-00000.parquet"]
    val_texts = [text for split, text in world["docs"] if split == "val"]
    from_split = evaluate_held_out(world["model"], files, tok, show_progress=False, keep_documents=True)
    from_texts = evaluate_held_out(world["model"], files, tok, "held-out", texts=val_texts, show_progress=False,
                                   keep_documents=True)
    # the same documents, whether read from token parts or from text: the same bytes, digest and scores
    assert from_split["sha256"] == from_texts["sha256"] == texts_sha256(val_texts)
    assert from_split["documents"] == from_texts["documents"] == len(val_texts)
    assert from_split["bytes"] == sum(len(t.encode()) for t in val_texts)
    for key in ("bits_per_byte", "bits_per_byte_stderr", "loss", "loss_stderr"):
        assert from_texts[key] == pytest.approx(from_split[key], rel=1e-9)
    documents = from_texts["_documents"]
    assert documents.bytes.tolist() == [len(t.encode()) for t in val_texts]
    assert documents.texts == val_texts
    # the delta-method standard error against a bootstrap over documents
    rng = np.random.default_rng(0)
    n = len(val_texts)
    boot = []
    for _ in range(4000):
        pick = rng.integers(0, n, n)
        boot.append(documents.bpb_nats[pick].sum() / math.log(2) / documents.bytes[pick].sum())
    assert from_texts["bits_per_byte_stderr"] == pytest.approx(np.std(boot), rel=0.15)
    assert 0 < from_texts["bits_per_byte_stderr"] < 0.2 * from_texts["bits_per_byte"]


def test_decontamination_finds_13_grams_of_the_training_data():
    from pipeline.decontaminate import TrainingNgrams, contaminated

    training = TrainingNgrams(["One two three four five six seven eight nine ten eleven twelve thirteen fourteen.",
                               "a b c"])
    texts = ["ONE two, three four five six seven eight nine ten eleven twelve thirteen!",  # case and punctuation
             "zero one two three four five six seven eight nine ten eleven twelve",           # shifted: no 13-gram
             "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen",
             "A  B c",                                                                        # a short text, whole
             "one two three"]
    found = contaminated(training, texts)
    assert found.flags.tolist() == [True, False, True, True, False]
    assert found.overlap[2] == pytest.approx(1 / 3)  # 15 words: 3 13-grams, the first one trained on
    assert contaminated(training, texts, min_overlap=0.6).flags.tolist() == [True, False, False, True, False]
    assert found.summary()["items"] == 3 and found.summary()["of"] == 5


def test_evaluate_stage_on_a_held_out_file_with_contamination_counts(world, tmp_path):
    """--held-out: the set is named by its text's sha256; documents and benchmark items that share a
    13-gram with the train split the checkpoint saw are counted, and every score is given without them."""
    from model.evaluate import texts_sha256
    from pipeline.runner import run_stage
    from pipeline.stages import get_stage
    from pipeline.stages.evaluate import EvaluateConfig
    from storage.store import ArtifactStore

    trained = [text for split, text in world["docs"] if split == "train"][:6]  # 13 words each: one 13-gram
    novel = [" ".join(f"novel{d}word{i}" for i in range(20)) for d in range(6)]
    held_out = write_lines(tmp_path / "held-out.jsonl", [{"text": t} for t in trained + novel])
    copied = [{"ctx": f"{t} the {a}", "endings": [f"{SOUNDS[a]} loudly.", "swims slowly."], "label": 0}
              for t, a in zip(trained[:3], ANIMALS)]  # the context holds a training document
    fresh = [{"ctx": f"the {a}", "endings": [f"{SOUNDS[a]} loudly.", "swims slowly."], "label": 0} for a in ANIMALS[3:]]
    bench = write_lines(tmp_path / "bench.jsonl", copied + fresh)
    config = EvaluateConfig(held_out=str(held_out), benchmark=[str(bench)], prompt=[], device="cpu", continuation_task=0)
    result = run_stage(get_stage("evaluate"), [world["checkpoint"]], config, ArtifactStore(tmp_path / "store"))
    report = json.loads((result.path / "eval.json").read_text())
    held = report["held_out"]
    assert held["set"]["kind"] == "held-out" and held["set"]["path"] == str(held_out.resolve())
    assert held["sha256"] == held["set"]["sha256"] == texts_sha256(trained + novel) and held["documents"] == 12
    assert held["contamination"]["items"] == 6 and held["contamination"]["of"] == 12
    assert held["contamination"]["clean"]["documents"] == 6
    assert held["bits_per_byte_stderr"] > 0 and held["loss_stderr"] > 0
    scored = report["benchmarks"][0]
    assert scored["contamination"]["items"] == 3 and scored["contamination"]["clean"]["items"] == len(fresh)
    assert scored["sha256"] == hashlib.sha256(bench.read_bytes()).hexdigest()
    assert scored["contamination"]["clean"]["acc"] == np.mean(scored["per_item"]["acc"][3:])
    assert report["decontamination"]["training_documents"] == sum(1 for s, _ in world["docs"] if s == "train")
    records = {r["name"]: r for r in result.manifest["stats"]["scores"]}
    assert records["held_out.bits_per_byte"]["sha256"] == held["sha256"]
    assert records["held_out.bits_per_byte"]["contaminated"] == 6
    assert records["bench.acc"]["sha256"] == scored["sha256"] and records["bench.acc"]["contaminated"] == 3
    assert result.manifest["stats"]["items_scored"] == len(copied + fresh)
    # the same text as another file is the same set; different text is another key
    changed = write_lines(tmp_path / "held-out-2.jsonl", [{"text": t} for t in trained + novel[:-1]])
    other = run_stage(get_stage("evaluate"), [world["checkpoint"]], EvaluateConfig(held_out=str(changed), prompt=[],
                      device="cpu", continuation_task=0, decontaminate=False), ArtifactStore(tmp_path / "store"))
    other_held = json.loads((other.path / "eval.json").read_text())["held_out"]
    assert other_held["sha256"] != held["sha256"] and "contamination" not in other_held


def test_bad_held_out_or_seeds_is_one_line_exit_2(world, tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    result = cli_in_process("stage", "evaluate", "--input", world["checkpoint"], "--held-out", missing,
                            "--store", tmp_path / "store", "--no-progress")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [f"error: {missing}: no such held-out file or folder"]
    empty = write_lines(tmp_path / "empty-texts.jsonl", [{"id": "a"}])
    result = cli_in_process("stage", "evaluate", "--input", world["checkpoint"], "--held-out", empty,
                            "--store", tmp_path / "store", "--no-progress")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [f"error: {empty}:1: no 'text' string"]
    assert not list((tmp_path / "store").glob("evaluate/*/manifest.json"))
    result = cli_in_process("run", "--until", "evaluate", "--seeds", "0,one", "--store", tmp_path / "store")
    assert result.exit_code == 2 and "error: --seeds: a comma-separated list of integers" in result.stderr
    result = cli_in_process("run", "--until", "evaluate", "--held-out", missing, "--store", tmp_path / "store")
    assert result.exit_code == 2 and f"error: --held-out {missing}: no such file or folder" in result.stderr
