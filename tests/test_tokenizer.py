"""The BPE tokenizer: trained by rustbpe, written and used as a Hugging Face tokenizer.json."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rustbpe
from tokenizers import Tokenizer

from pipeline.runner import RunOptions, run_stage
from pipeline.stages import get_stage
from pipeline.stages.train_tokenizer import TrainTokenizerConfig
from pipeline.tokenizer import END_OF_TEXT, SPECIAL_TOKENS, SPLIT_PATTERN, train_bpe
from storage.store import ArtifactStore

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent
ODD_STRINGS = [
    "", " ", "   leading spaces", "trailing spaces   ", "emoji 😀🎉 and a family 👩‍👩‍👧 and flags 🇫🇷",
    "中文字符和日本語のテキスト、한국어", "NUL\x00inside\x00", "lone\rcarriage return", "\r\n\r\n", "tab\tand\x0bvertical",
    "a" * 10_000, "é" * 3_000, "12345678901234567890", "don't I'll WE'VE they'RE", "\u200b\ufeff zero width",
    "<|endoftext|> written in a page", "mixed ünïcödé\u0301 combining", "\U0010fffd private use",
]


def multilingual_texts() -> list[str]:
    """Real text in 26 languages (Debian handbook paragraphs) and Jane Austen."""
    texts = [p for f in sorted((FIXTURES / "langid" / "handbook").glob("*.txt")) for p in f.read_text().split("\n\n") if p.strip()]
    with gzip.open(FIXTURES / "dedup" / "austen_paragraphs.txt.gz", "rt") as f:
        texts += [line for line in f.read().split("\n") if line.strip()][:300]
    return texts


@pytest.fixture(scope="module")
def trained():
    texts = multilingual_texts()
    return texts, train_bpe(texts, 2048)


def test_every_string_round_trips(trained):
    texts, tokenizer = trained
    for text in ODD_STRINGS + texts:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text, repr(text[:60])
    assert len(tokenizer.encode(" the" * 2_500).ids) == 2_500  # learned merges apply: one token per word


def test_ids_equal_the_trainers_own_encoding(trained):
    """The exported merges reproduce rustbpe's rank-based encoding token for token."""
    texts, tokenizer = trained
    reference = rustbpe.Tokenizer()
    reference.train_from_iterator(iter(texts), 2048 - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    checked = [t for t in texts + ODD_STRINGS if "<|" not in t]
    assert all(reference.encode(t) == tokenizer.encode(t, add_special_tokens=False).ids for t in checked)


def test_special_tokens_take_the_last_ids_and_vocab_size_is_respected(trained):
    _, tokenizer = trained
    size = tokenizer.get_vocab_size()
    assert size == 2048
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(size - len(SPECIAL_TOKENS), size))
    assert tokenizer.encode("a" + END_OF_TEXT + "b").ids[1] == tokenizer.token_to_id(END_OF_TEXT)


def test_gpt4_pre_tokenisation(trained):
    _, tokenizer = trained
    pieces = [p for p, _ in tokenizer.pre_tokenizer.pre_tokenize_str("I'll pay 12345 dollars!!\n\n  ok")]
    # ByteLevel shows a space as Ġ and a newline as Ċ; numbers split in runs of at most three digits.
    assert pieces == ["I", "'ll", "Ġpay", "Ġ", "123", "45", "Ġdollars", "!!ĊĊ", "Ġ", "Ġok"]


def test_loads_in_transformers_without_our_code(trained, tmp_path):
    texts, tokenizer = trained
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    code = f"""
import json
from transformers import PreTrainedTokenizerFast
tok = PreTrainedTokenizerFast(tokenizer_file={str(path)!r}, eos_token={END_OF_TEXT!r})
texts = json.load(open({str(tmp_path / 'texts.json')!r}))
print(json.dumps([[tok(t)["input_ids"] for t in texts], [tok.decode(tok(t)["input_ids"]) for t in texts], tok.eos_token_id]))
"""
    sample = texts[:20] + ODD_STRINGS[:12]
    (tmp_path / "texts.json").write_text(json.dumps(sample))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ids, decoded, eos = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ids == [tokenizer.encode(t).ids for t in sample]
    assert decoded == sample
    assert eos == tokenizer.token_to_id(END_OF_TEXT)


def test_stage_sample_is_deterministic_capped_and_reports_bytes_per_token(tmp_path):
    texts = multilingual_texts()
    handbook = sorted((FIXTURES / "langid" / "handbook").glob("*.txt"))
    languages = [f.stem[:2] for f in handbook for p in f.read_text().split("\n\n") if p.strip()]
    languages += ["en"] * (len(texts) - len(languages))
    table = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts, "language": languages})
    pq.write_table(table.slice(0, 400), tmp_path / "a.parquet")
    pq.write_table(table.slice(400), tmp_path / "b.parquet")
    stage = get_stage("train-tokenizer")
    options = RunOptions(progress=False)
    total_chars = sum(min(len(t), 500) for t in texts)
    config = TrainTokenizerConfig(vocab_size=700, max_chars=total_chars // 2, doc_max_chars=500)
    one = run_stage(stage, [tmp_path / "a.parquet", tmp_path / "b.parquet"], config, ArtifactStore(tmp_path / "s1"), options)
    two = run_stage(stage, [tmp_path / "a.parquet", tmp_path / "b.parquet"], config, ArtifactStore(tmp_path / "s2"), options)
    assert (one.path / "tokenizer.json").read_bytes() == (two.path / "tokenizer.json").read_bytes()
    stats = one.manifest["stats"]
    assert 0.3 * total_chars < stats["extra"]["sample_chars"] < 0.7 * total_chars  # about half, by hash of id
    assert 0 < stats["docs_out"] < stats["docs_in"] == len(texts)
    assert {"en", "fr", "ja", "ru"} <= set(stats["bytes_per_token"])
    # English is most of the sample, so its merges are learned first: it compresses best.
    per_language = stats["bytes_per_token"]
    assert all(v > 1.0 for v in per_language.values())
    assert per_language["en"] == max(per_language.values())
    assert (one.path / "report.png").stat().st_size > 1000
    assert Tokenizer.from_file(str(one.path / "tokenizer.json")).get_vocab_size() == 700
    different_seed = run_stage(stage, [tmp_path / "a.parquet", tmp_path / "b.parquet"],
                               TrainTokenizerConfig(vocab_size=700, max_chars=total_chars // 2, doc_max_chars=500, seed=1),
                               ArtifactStore(tmp_path / "s1"), options)
    assert different_seed.manifest["stats"]["extra"]["sample_chars"] != stats["extra"]["sample_chars"]


def test_bad_options_are_one_line_errors(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "some text here"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "stage", "train-tokenizer", "--input", str(tmp_path / "t.jsonl"),
                           "--vocab-size", "100", "--store", str(tmp_path / "store")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "vocab_size must be at least" in proc.stderr
