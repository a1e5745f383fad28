"""Classification fine-tuning: the head reads each row's last real token (padding never changes a
prediction), transformers' LlamaForSequenceClassification computes the same logits from the export,
the stage learns a learnable task past the majority baseline and writes its report, the LoRA adapter
loads in peft with the same logits, and bad data files are one line, exit 2."""
import json
import random
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import one_torch_thread, pattern_text, tiny_gpt, train_tokenizer, write_checkpoint  # noqa: E402,F401

from model.classify import (Classifier, encode_texts, export_sequence_classification, load_classifier,  # noqa: E402
                            pad_batch, predict)

GROUPS = {"cat": "pet", "dog": "pet", "horse": "farm", "sheep": "farm", "goat": "farm",
          "mouse": "wild", "bird": "wild", "fish": "wild"}


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("classify") / "tokenizer.json", pattern_text(200))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path):
    return Tokenizer.from_file(str(tokenizer_path))


def randomised(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def labelled(n: int, seed: int) -> list[dict]:
    """The animal's group is the label, named by the last word: learnable from the last token's state."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        animal = rng.choice(list(GROUPS))
        rows.append({"text": f"the sky is blue and the grass is green. the animal is a {animal}", "label": GROUPS[animal]})
    return rows


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer_path, tokenizer):
    root = tmp_path_factory.mktemp("classify-stage")
    checkpoint = write_checkpoint(root / "base", randomised(tiny_gpt(tokenizer.get_vocab_size())), tokenizer_path)
    return {"root": root, "checkpoint": checkpoint,
            "train": write_jsonl(root / "train.jsonl", labelled(120, 0)),
            "eval": write_jsonl(root / "eval.jsonl", labelled(40, 1))}


def test_padding_does_not_change_a_prediction(tokenizer):
    classifier = Classifier(randomised(tiny_gpt(tokenizer.get_vocab_size())), 3).eval()
    texts = ["the cat", "the dog barks loudly. the sky is blue and the grass is green.", "the fish swims"]
    rows = encode_texts(tokenizer, texts, 64)
    pad = tokenizer.token_to_id("<|pad|>")
    with torch.no_grad():
        alone = torch.cat([classifier(*pad_batch([r], pad)) for r in rows])
        ids, lengths = pad_batch(rows, pad)
        batched = classifier(ids, lengths)
        # what reading the last position would give: the short rows' logits come from a pad token
        last_position = classifier.score(classifier.model.hidden_states(ids)[:, -1])
    assert (ids == pad).any(dim=1).tolist() == [True, False, True]
    assert (batched - alone).abs().max().item() <= 1e-5
    assert (last_position[0] - alone[0]).abs().max().item() > 1e-3
    assert torch.equal(predict(classifier, rows, pad, batch_size=3).argmax(-1), alone.argmax(-1))


def test_transformers_sequence_classification_gives_the_same_logits(tokenizer_path, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    for shape in (dict(n_kv_head=2, tie_embeddings=False), dict(n_kv_head=4, tie_embeddings=True)):
        classifier = Classifier(randomised(tiny_gpt(tokenizer.get_vocab_size(), **shape)), 3).eval()
        folder = export_sequence_classification(classifier, ["farm", "pet", "wild"], tokenizer_path,
                                                tmp_path / f"hf-{shape['n_kv_head']}")
        hf = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
        assert type(hf).__name__ == "LlamaForSequenceClassification" and hf.config.id2label[2] == "wild"
        rows = encode_texts(tokenizer, ["the cat meows", "a much longer text about the horse and the sheep", "x"], 64)
        ids, lengths = pad_batch(rows, tokenizer.token_to_id("<|pad|>"))
        with torch.no_grad():
            theirs = hf(input_ids=ids, attention_mask=(torch.arange(ids.size(1)) < lengths[:, None]).long()).logits
            ours = classifier(ids, lengths)
        assert (theirs - ours).abs().max().item() <= 1e-4


def test_the_stage_learns_past_the_majority_baseline_and_is_cached(setup, tmp_path):
    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages.classify import STAGE, ClassifyConfig
    from storage.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    config = ClassifyConfig(data=[str(setup["train"])], eval_data=[str(setup["eval"])], epochs=4, cpu_threads=1)
    result = run_stage(STAGE, [setup["checkpoint"]], config, store, RunOptions(progress=False))
    report = json.loads((result.path / "eval.json").read_text())
    matrix = report["confusion_matrix"]["rows_true_columns_predicted"]
    assert report["labels"] == ["farm", "pet", "wild"] and report["items"] == 40
    assert sum(map(sum, matrix)) == 40
    assert report["accuracy"] == sum(matrix[i][i] for i in range(3)) / 40
    truth = [r["label"] for r in labelled(40, 1)]
    majority = max(set(truth), key=lambda label: sum(1 for t in truth if t == label))
    assert report["majority_baseline"]["accuracy"] == truth.count(report["majority_baseline"]["label"]) / 40
    assert report["majority_baseline"]["accuracy"] <= truth.count(majority) / 40
    assert report["accuracy"] >= 0.9 > report["majority_baseline"]["accuracy"] + 0.3
    for name, cls in report["per_class"].items():
        i = report["labels"].index(name)
        assert cls["support"] == sum(matrix[i]) and cls["recall"] == pytest.approx(matrix[i][i] / sum(matrix[i]))
    assert report["train"]["trainable_params"] < report["train"]["total_params"]
    assert {"model.safetensors", "config.json", "tokenizer.json", "eval.json", "metrics.jsonl", "loss.png",
            "confusion.png"} <= {p.name for p in result.path.iterdir()}
    # the saved classifier gives the report's predictions; the CLI prints a label and its probability
    classifier, meta = load_classifier(result.path)
    tokenizer = Tokenizer.from_file(str(result.path / "tokenizer.json"))
    probs = predict(classifier, encode_texts(tokenizer, ["the sky is blue. the animal is a dog"], 64), meta["pad_id"])
    from flows.cli import app

    out = CliRunner().invoke(app, ["classify", str(result.path), "the sky is blue. the animal is a dog"])
    assert out.exit_code == 0, out.stderr
    label, probability = out.stdout.strip().split("\t")
    assert label == meta["labels"][int(probs.argmax())] == "pet"
    assert float(probability) == pytest.approx(float(probs.max()), abs=1e-4)
    # same data and knobs: from the store; a changed data file: a new key
    assert run_stage(STAGE, [setup["checkpoint"]], config, store, RunOptions(progress=False)).cached
    changed = write_jsonl(tmp_path / "train.jsonl", labelled(120, 0)[:-1])
    other = run_stage(STAGE, [setup["checkpoint"]], ClassifyConfig(data=[str(changed)], eval_data=[str(setup["eval"])],
                                                                   max_steps=1, cpu_threads=1), store,
                      RunOptions(progress=False))
    assert other.key != result.key


def test_lora_classifier_adapter_loads_in_peft_with_the_same_logits(setup, tokenizer_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from model.checkpoint import load_model
    from model.export import export_hf
    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages.classify import STAGE, ClassifyConfig
    from storage.store import ArtifactStore

    config = ClassifyConfig(data=[str(setup["train"])], eval_data=[str(setup["eval"])], trainable="lora",
                            lora_rank=4, max_steps=12, lr=3e-3, cpu_threads=1)
    result = run_stage(STAGE, [setup["checkpoint"]], config, ArtifactStore(tmp_path / "store"), RunOptions(progress=False))
    adapter = json.loads((result.path / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and adapter["modules_to_save"] == ["score"] and adapter["r"] == 4
    base = export_hf(load_model(setup["checkpoint"])[0], tokenizer_path, tmp_path / "base")
    hf = AutoModelForSequenceClassification.from_pretrained(base, num_labels=3, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf, result.path).eval()
    classifier, meta = load_classifier(result.path)  # the merged weights
    rows = encode_texts(Tokenizer.from_file(str(tokenizer_path)), ["the animal is a goat", "the cat meows loudly"], 64)
    ids, lengths = pad_batch(rows, meta["pad_id"])
    with torch.no_grad():
        theirs = peft_model(input_ids=ids).logits
        ours = classifier(ids, lengths)
    assert (theirs - ours).abs().max().item() <= 1e-4


@pytest.mark.parametrize("content, says", [
    (['{"text": "fine", "label": "a"}', 'not json at all'], ":2: not a JSON object"),
    (['{"text": "fine", "label": "a"}', '{"text": "no label"}'], "line 2: `label` must be a non-empty string"),
    (['{"words": "x", "label": "a"}'], "line 1: no `text` string"),
    (['{"text": "one", "label": "a"}', '{"text": "two", "label": "a"}'], "only one label"),
    ([], "no examples"),
])
def test_a_bad_data_file_is_one_line_exit_2(setup, tmp_path, content, says):
    from flows.cli import app

    bad = write_jsonl(tmp_path / "bad.jsonl", content)
    out = CliRunner().invoke(app, ["stage", "classify", "--input", str(setup["checkpoint"]), "--data", str(bad),
                                   "--store", str(tmp_path / "s")])
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.exit_code == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "bad.jsonl" in errors[0] and says in errors[0], errors[0]
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").rglob("manifest.json"))


def test_an_eval_label_never_trained_on_is_refused(setup, tmp_path):
    from flows.cli import app

    unseen = write_jsonl(tmp_path / "eval.jsonl", [{"text": "the animal is a lion", "label": "zoo"}])
    out = CliRunner().invoke(app, ["stage", "classify", "--input", str(setup["checkpoint"]), "--data", str(setup["train"]),
                                   "--eval-data", str(unseen), "--store", str(tmp_path / "s")])
    assert out.exit_code == 2 and "'zoo' never occur" in out.stderr and "eval.jsonl" in out.stderr, out.stderr


def test_export_of_a_classify_artifact_and_its_adapter(setup, tmp_path):
    """`scratchlm export` writes LlamaForSequenceClassification from a classify artifact; `--format peft`
    writes the LoRA adapter with the base model beside it, and the two give the same logits."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from flows.cli import app
    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages.classify import STAGE, ClassifyConfig
    from storage.store import ArtifactStore

    config = ClassifyConfig(data=[str(setup["train"])], eval_data=[str(setup["eval"])], trainable="lora",
                            lora_rank=2, max_steps=4, lr=3e-3, cpu_threads=1)
    artifact = run_stage(STAGE, [setup["checkpoint"]], config, ArtifactStore(tmp_path / "store"),
                         RunOptions(progress=False)).path
    for args in (["export", str(artifact), "-o", str(tmp_path / "hf")],
                 ["export", "--format", "peft", str(artifact), "-o", str(tmp_path / "peft")]):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 0, out.stderr
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "peft" / "base", num_labels=3,
                                                              dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    ids = torch.tensor([encode_texts(Tokenizer.from_file(str(artifact / "tokenizer.json")), ["the animal is a cat"], 64)[0]])
    with torch.no_grad():
        assert (merged(input_ids=ids).logits - adapted(input_ids=ids).logits).abs().max().item() <= 1e-4
    assert merged.config.id2label == {0: "farm", 1: "pet", 2: "wild"}


def test_the_sample_data_is_what_its_script_builds(tmp_path):
    """data/align/classify-*.jsonl and dpo-train.jsonl come from the bundled crawl, byte for byte, and
    read without an error in the stages' readers."""
    import importlib.util

    from model.classify import read_labelled
    from model.dpo import read_preferences

    folder = Path(__file__).resolve().parent.parent / "data" / "align"
    spec = importlib.util.spec_from_file_location("make_classify_dpo", folder / "make_classify_dpo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    train, evaluation, pairs = script.build()
    for rows, name in ((train, "classify-train.jsonl"), (evaluation, "classify-eval.jsonl"), (pairs, "dpo-train.jsonl")):
        script.write_jsonl(rows, tmp_path / name)
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), f"{name}: rerun data/align/make_classify_dpo.py"
    labels = {label for _, label in read_labelled(folder / "classify-train.jsonl")}
    assert labels == {"handbook", "install", "python", "libreoffice", "books"}
    assert {label for _, label in read_labelled(folder / "classify-eval.jsonl")} <= labels
    assert len(read_preferences(folder / "dpo-train.jsonl")) == 400


def test_balance_gives_every_class_the_same_total_weight(tokenizer):
    from model.classify import ClassifyTrainConfig, class_weights, train_classifier

    weights = class_weights([90, 9, 1, 0])
    assert torch.allclose(weights[:3] * torch.tensor([90.0, 9.0, 1.0]), torch.full((3,), 100 / 3)) and weights[3] == 0
    # on a 9:1 set, the balanced loss of the first step is the mean of the two classes' losses, not
    # the example-weighted mean, so it differs from the unbalanced one from the same start
    rows = [("the animal is a dog", "pet")] * 18 + [("the animal is a goat", "farm")] * 2
    first = {}
    for balance in (False, True):
        config = ClassifyTrainConfig(balance=balance, max_steps=1, batch_size=20)
        _, summary = train_classifier(tiny_gpt(tokenizer.get_vocab_size()), tokenizer, rows, config, progress=False)
        first[balance] = summary["first_loss"]
    assert abs(first[True] - first[False]) > 1e-4


def test_the_align_flow_runs_classify_from_the_base_model_and_caches(setup, tmp_path, prefect_server):
    """scratchlm-align: classify is a branch from `model` when its data is given (sft and dpo skipped
    without theirs); a second run returns the same artifact from its cached task."""
    from flows.align_flow import align_pipeline
    from pipeline.stages.classify import ClassifyConfig

    config = ClassifyConfig(data=[str(setup["train"])], eval_data=[str(setup["eval"])], max_steps=2, cpu_threads=1)
    first = align_pipeline(model=[str(setup["checkpoint"])], store=str(tmp_path / "store"), classify=config)
    again = align_pipeline(model=[str(setup["checkpoint"])], store=str(tmp_path / "store"), classify=config)
    assert set(first) == {"classify"} and again == first
    manifest = json.loads((Path(first["classify"]) / "manifest.json").read_text())
    assert manifest["inputs"][0]["path"].startswith(str(setup["checkpoint"]))
