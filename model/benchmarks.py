"""Benchmark files in the formats people already have, and a benchmark made from our own crawl.

Multiple choice (scored by the log-likelihood of each continuation given the context):
- HellaSwag: the published fields `activity_label`, `ctx_a`, `ctx_b`, `endings`, `label` are read as
  lm-eval's `hellaswag` task does (lm_eval/tasks/hellaswag/utils.py): the prompt is
  activity_label + ": " + ctx_a + " " + ctx_b.capitalize(), and prompt and endings lose the WikiHow
  markers ("[title]" becomes ". ", any other "[...]" goes, double spaces become one). A record with
  only `ctx`, `endings`, `label` (the crawl-made task) is scored on `ctx` as written.
- MMLU: `question`, `subject`, `choices` (a list of 4), `answer` (index): lm-eval's `mmlu` prompt,
  "The following are multiple choice questions (with answers) about {subject}.\n\n" (underscores
  of the subject as spaces), the question, "A. ..." to "D. ..." lines and "Answer:"; the choices
  scored are " A" ... " D". acc per subject, macro (mean of subjects) and micro (all items) averages.
- ARC: `question`, `choices` {`text`: [...], `label`: [...]}, `answerKey` (one of the labels)
- PIQA: `goal`, `sol1`, `sol2`, `label` (0 or 1)
Cloze (LAMBADA): `text` (the last word is the target) or `context` + `target`.

ARC and PIQA prompt "Question: ...\nAnswer:", and every choice is preceded by the target delimiter
" ", as in lm-eval's task YAMLs, so our scores and lm-eval's own tasks on the same file are the same
numbers (benchmarks/lm_eval_parity.py).

Each item also carries `text`: the words a training set would have to contain for the item to be
contaminated (question or context and the right answer; for LAMBADA the whole passage), which
pipeline/decontaminate.py checks. A Benchmark has the sha256 of its file, so a score names the
exact file it was made on.

A bad file raises BenchmarkError with one line naming the file and the line: not JSON, a missing
field, a label out of range, an empty file.
"""
from __future__ import annotations

import gzip
import io
import json
import random
import re
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

FORMATS = ("hellaswag", "mmlu", "arc", "piqa", "lambada")
MMLU_LETTERS = ("A", "B", "C", "D")
TARGET_DELIMITER = " "  # lm-eval's default between a multiple-choice context and each choice


class BenchmarkError(ValueError):
    """A benchmark file that cannot be used; the message is one line naming file and line."""


@dataclass
class ChoiceItem:
    context: str
    choices: list[str]  # as written in the file; scored as TARGET_DELIMITER + choice
    label: int
    subject: str = ""   # MMLU's subject: acc is also reported per subject
    text: str = field(default="", compare=False)  # checked for contamination [default: context + right choice]

    def __post_init__(self):
        if not self.text:
            self.text = f"{self.context} {self.choices[self.label]}"


@dataclass
class ClozeItem:
    context: str
    target: str  # scored as the continuation of context, e.g. " word"
    text: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.text:
            self.text = self.context + self.target


@dataclass
class Benchmark:
    name: str
    path: Path
    format: str
    items: list
    sha256: str = ""  # of the file's bytes: which file a score was made on

    @property
    def kind(self) -> str:
        return "cloze" if self.format == "lambada" else "multiple_choice"


# ------------------------------------------------------------------------------------ reading

def read_records(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed record) of a JSONL(.gz), JSON array or Parquet file; bad JSON is a
    BenchmarkError. For Parquet and a JSON array the "line" is the record's number, from 1."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is the user's input problem
            raise BenchmarkError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
        for row, record in enumerate(table.to_pylist(), 1):
            yield row, record
        return
    opener = gzip.open if name.endswith(".gz") else open
    if name.endswith(".json"):  # one JSON array of records (or JSONL under a .json name)
        try:
            whole = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            whole = None
        if isinstance(whole, list):
            yield from enumerate(whole, 1)  # "line" = the record's position in the array
            return
    try:
        with opener(path, "rb") as raw:
            for line_no, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8", errors="strict"), 1):
                if not line.strip():
                    continue
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BenchmarkError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise BenchmarkError(f"{path}: not UTF-8 text (expected JSONL or Parquet)") from None
    except OSError as exc:
        raise BenchmarkError(f"{path}: unreadable ({_first_line(exc)})") from None


def detect_format(record: dict) -> str | None:
    keys = set(record)
    if {"ctx", "endings"} <= keys or {"ctx_a", "ctx_b", "endings"} <= keys:
        return "hellaswag"
    if {"question", "choices", "answer"} <= keys and isinstance(record.get("choices"), list):
        return "mmlu"
    if {"question", "choices", "answerKey"} <= keys:
        return "arc"
    if {"goal", "sol1", "sol2"} <= keys:
        return "piqa"
    if "text" in keys or {"context", "target"} <= keys:
        return "lambada"
    return None


def read_benchmark(path: str | Path, format: str = "auto", limit: int = 0) -> Benchmark:
    """Every item of a benchmark file (the first `limit` if > 0), validated."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such file")
    if format not in ("auto",) + FORMATS:
        raise BenchmarkError(f"{path}: unknown benchmark format {format!r} (formats: auto, {', '.join(FORMATS)})")
    items = []
    chosen = None if format == "auto" else format
    for line_no, record in read_records(path):
        where = f"{path}:{line_no}"
        if not isinstance(record, dict):
            raise BenchmarkError(f"{where}: a line must be a JSON object, not {type(record).__name__}")
        if chosen is None:
            chosen = detect_format(record)
            if chosen is None:
                raise BenchmarkError(f"{where}: cannot tell the format from the fields ({', '.join(sorted(record)) or 'none'}); "
                                     "expected HellaSwag (ctx or activity_label/ctx_a/ctx_b, endings, label), MMLU "
                                     "(question, subject, choices, answer), ARC (question, choices, answerKey), "
                                     "PIQA (goal, sol1, sol2, label) or LAMBADA (text, or context and target)")
        items.append(_PARSERS[chosen](record, where))
        if limit and len(items) >= limit:
            break
    if not items:
        raise BenchmarkError(f"{path}: empty file (no benchmark items)")
    return Benchmark(name=_benchmark_name(path), path=path, format=chosen, items=items, sha256=file_sha256(path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _benchmark_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".parquet"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _field(record: dict, name: str, where: str, kind: type | tuple = str):
    if name not in record:
        raise BenchmarkError(f"{where}: missing field '{name}'")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise BenchmarkError(f"{where}: field '{name}' must be {' or '.join(k.__name__ for k in kinds)}, "
                             f"not {type(value).__name__}")
    return value


def _string_list(record: dict, name: str, where: str, parent: dict | None = None) -> list[str]:
    values = _field(parent if parent is not None else record, name, where, list)
    if len(values) < 2:
        raise BenchmarkError(f"{where}: field '{name}' needs at least 2 choices, has {len(values)}")
    if not all(isinstance(v, str) for v in values):
        raise BenchmarkError(f"{where}: field '{name}' must be a list of strings")
    empty = [i for i, v in enumerate(values) if not v.strip()]
    if empty:
        raise BenchmarkError(f"{where}: choice {empty[0]} of '{name}' is empty")
    return values


def _index_label(record: dict, where: str, n_choices: int) -> int:
    value = _field(record, "label", where, (int, str))
    if isinstance(value, str):
        if not value.strip().lstrip("-").isdigit():
            raise BenchmarkError(f"{where}: field 'label' must be a choice index, not {value!r}")
        value = int(value)
    if not 0 <= value < n_choices:
        raise BenchmarkError(f"{where}: label {value} out of range for {n_choices} choices (0..{n_choices - 1})")
    return value


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag `preprocess`: the brackets are WikiHow artifacts."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(record: dict, where: str) -> ChoiceItem:
    endings = _string_list(record, "endings", where)
    label = _index_label(record, where, len(endings))
    if {"activity_label", "ctx_a", "ctx_b"} <= set(record):  # the published fields: lm-eval's process_docs
        ctx = _field(record, "ctx_a", where) + " " + _field(record, "ctx_b", where).capitalize()
        query = hellaswag_preprocess(_field(record, "activity_label", where) + ": " + ctx)
        endings = [hellaswag_preprocess(e) for e in endings]
        return ChoiceItem(query, endings, label, text=f"{ctx} {endings[label]}")
    return ChoiceItem(_field(record, "ctx", where), endings, label)


def mmlu_description(subject: str) -> str:
    """lm-eval's per-subject description of its `mmlu` tasks (lm_eval/tasks/mmlu/_generate_configs.py)."""
    return f"The following are multiple choice questions (with answers) about {' '.join(subject.split('_'))}.\n\n"


def _mmlu(record: dict, where: str) -> ChoiceItem:
    question = _field(record, "question", where)
    subject = _field(record, "subject", where)
    choices = _field(record, "choices", where, list)
    if len(choices) != len(MMLU_LETTERS) or not all(isinstance(c, str) for c in choices):
        raise BenchmarkError(f"{where}: field 'choices' must be a list of {len(MMLU_LETTERS)} strings (MMLU's A-D), "
                             f"has {len(choices)} entries")
    answer = _field(record, "answer", where, (int, str))
    if isinstance(answer, str):  # "B" or "1"
        answer = MMLU_LETTERS.index(answer) if answer in MMLU_LETTERS else int(answer) if answer.isdigit() else -1
    if not 0 <= answer < len(choices):
        raise BenchmarkError(f"{where}: answer {record['answer']!r} is not a choice (0..3 or A..D)")
    prompt = question.strip() + "".join(f"\n{letter}. {c}" for letter, c in zip(MMLU_LETTERS, choices)) + "\nAnswer:"
    return ChoiceItem(mmlu_description(subject) + prompt, list(MMLU_LETTERS), answer, subject=subject,
                      text=f"{question} {choices[answer]}")


def _arc(record: dict, where: str) -> ChoiceItem:
    question = _field(record, "question", where)
    choices = _field(record, "choices", where, dict)
    texts = _string_list(record, "text", where, parent=choices) if "text" in choices else None
    if texts is None or "label" not in choices:
        raise BenchmarkError(f"{where}: field 'choices' must have 'text' and 'label' lists")
    labels = [str(v) for v in _field(choices, "label", where, list)]
    if len(labels) != len(texts):
        raise BenchmarkError(f"{where}: choices has {len(texts)} texts but {len(labels)} labels")
    answer = str(_field(record, "answerKey", where, (str, int)))
    if answer not in labels:
        raise BenchmarkError(f"{where}: answerKey {answer!r} is not one of the choice labels {labels}")
    return ChoiceItem(f"Question: {question}\nAnswer:", texts, labels.index(answer),
                      text=f"{question} {texts[labels.index(answer)]}")


def _piqa(record: dict, where: str) -> ChoiceItem:
    goal = _field(record, "goal", where)
    solutions = [_field(record, "sol1", where), _field(record, "sol2", where)]
    if not all(s.strip() for s in solutions):
        raise BenchmarkError(f"{where}: field '{'sol1' if not solutions[0].strip() else 'sol2'}' is empty")
    label = _index_label(record, where, 2)
    return ChoiceItem(f"Question: {goal}\nAnswer:", solutions, label, text=f"{goal} {solutions[label]}")


def _lambada(record: dict, where: str) -> ClozeItem:
    if "context" in record and "target" in record:
        context, target = _field(record, "context", where), _field(record, "target", where)
        if not target.strip():
            raise BenchmarkError(f"{where}: field 'target' is empty")
        if not context[-1:].isspace() and not target[:1].isspace():
            target = " " + target  # the target is the next word, not a suffix of the last one
        return ClozeItem(context, target)
    text = _field(record, "text", where)
    context, space, last = text.rstrip().rpartition(" ")  # lm-eval: text.split(' ')[:-1] / ' ' + last
    if not space or not last or not context:
        raise BenchmarkError(f"{where}: field 'text' needs at least two words (the last one is the target)")
    return ClozeItem(context, " " + last)


_PARSERS = {"hellaswag": _hellaswag, "mmlu": _mmlu, "arc": _arc, "piqa": _piqa, "lambada": _lambada}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# --------------------------------------------------------------- the benchmark made from our crawl

@dataclass
class ContinuationTaskConfig:
    items: int = 1000          # at most this many items (fewer if the documents do not have them)
    context_words: int = 24    # the start of a paragraph the model is given
    ending_words: int = 12     # each ending: the true next words, or the same span of another document
    choices: int = 4
    per_document: int = 1      # paragraphs (items) per document at most; 0: every long enough paragraph
    seed: int = 0


def continuation_items(documents: Iterable[tuple[str, str]], config: ContinuationTaskConfig) -> list[dict]:
    """HellaSwag-format items from (id, text) documents: "which continuation is the real one".

    Each document gives at most `per_document` items: paragraphs (lines of extracted text) long
    enough for a context and an ending, picked at random. The wrong endings are the true endings of other
    documents' items (the same word span after the same number of words), so they are fluent text
    of the same length; only the fit to the context tells them apart. Deterministic by seed."""
    rng = random.Random(config.seed)
    needed = config.context_words + config.ending_words
    candidates, seen_contexts = [], set()
    for doc_id, text in documents:
        paragraphs = [p.split() for p in re.split(r"\n+", text or "")]
        paragraphs = [w for w in paragraphs if len(w) >= needed]
        if config.per_document and len(paragraphs) > config.per_document:
            picked = sorted(rng.sample(range(len(paragraphs)), config.per_document))
            paragraphs = [paragraphs[i] for i in picked]
        for words in paragraphs:
            context = " ".join(words[:config.context_words])
            ending = " ".join(words[config.context_words:needed])
            if context in seen_contexts:  # boilerplate repeated across pages: one item is enough
                continue
            seen_contexts.add(context)
            candidates.append((doc_id, context, ending))
    if len(candidates) < config.choices:
        raise BenchmarkError(f"only {len(candidates)} paragraphs of {needed}+ words in the documents; "
                             f"need at least {config.choices} (fewer --context-words/--ending-words?)")
    rng.shuffle(candidates)
    chosen = candidates[:config.items]
    items = []
    for doc_id, context, ending in chosen:
        wrong = _other_endings(candidates, doc_id, ending, config.choices - 1, rng)
        if wrong is None:  # not enough different endings in other documents
            continue
        label = rng.randrange(config.choices)
        endings = wrong[:label] + [ending] + wrong[label:]
        items.append({"id": doc_id, "ctx": context, "endings": endings, "label": label,
                      "source": "scratchlm-continuation"})
    if not items:
        raise BenchmarkError(f"the documents' paragraphs do not give {config.choices} different endings")
    return items


def _other_endings(candidates, doc_id: str, ending: str, n: int, rng: random.Random) -> list[str] | None:
    """n different endings of other documents, none equal to `ending` (None if there are not n)."""
    wrong: list[str] = []
    for _ in range(20 * n):  # random draws first: cheap when (as usual) most endings differ
        other = candidates[rng.randrange(len(candidates))]
        if other[0] != doc_id and other[2] != ending and other[2] not in wrong:
            wrong.append(other[2])
            if len(wrong) == n:
                return wrong
    pool = sorted({c[2] for c in candidates if c[0] != doc_id and c[2] != ending} - set(wrong))
    if len(wrong) + len(pool) < n:
        return None
    return wrong + rng.sample(pool, n - len(wrong))


def read_held_out_documents(inputs: Sequence[str | Path], split: str | None = "val",
                            language: str | None = None) -> Iterator[tuple[str, str]]:
    """(id, text) of documents to make a benchmark from, in a fixed order.

    A token artifact (a folder with tokenizer.json and Parquet parts with `tokens` and `split`)
    gives its `split` documents (every document if split is None), decoded; JSONL/Parquet with a
    `text` column gives every row (hold them out of training yourself). `language` keeps rows
    whose `language` column matches."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(path.glob("part-*.parquet")) or sorted(
                p for p in path.rglob("*") if p.name.lower().endswith((".parquet", ".jsonl", ".jsonl.gz")))
            if not files:
                raise BenchmarkError(f"{path}: no Parquet or JSONL files in this folder")
            tokenizer_file = path / "tokenizer.json"
        elif path.is_file():
            files, tokenizer_file = [path], path.parent / "tokenizer.json"
        else:
            raise BenchmarkError(f"{path}: no such file or folder")
        for file in files:
            yield from _documents_of(file, tokenizer_file, split, language)


def _documents_of(path: Path, tokenizer_file: Path, split: str, language: str | None):
    if path.name.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001
            raise BenchmarkError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
        names = parquet.schema_arrow.names
        if "tokens" in names:
            if not tokenizer_file.is_file():
                raise BenchmarkError(f"{path}: token data, but no tokenizer.json beside it to decode it")
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(tokenizer_file))
            columns = [c for c in ("id", "tokens", "split", "language") if c in names]
            for batch in parquet.iter_batches(columns=columns, batch_size=1024):
                for row in batch.to_pylist():
                    if (split is not None and row.get("split", split) != split) or \
                            (language and row.get("language") != language):
                        continue
                    yield str(row.get("id")), tokenizer.decode(row["tokens"])
            return
        if "text" not in names:
            raise BenchmarkError(f"{path}: has neither a 'text' nor a 'tokens' column (columns: {', '.join(names)})")
        records = enumerate(parquet.read(columns=[c for c in ("id", "text", "language") if c in names]).to_pylist(), 1)
    else:
        records = read_records(path)
    for row, record in records:
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise BenchmarkError(f"{path}:{row}: no 'text' string")
        if language and record.get("language") != language:
            continue
        yield str(record.get("id", f"{path.stem}:{row}")), record["text"]


def write_jsonl(items: list[dict], output: Path) -> None:
    """Written to a temporary name and renamed, so a crash leaves no half file."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    tmp.replace(output)
