"""The one chat template, and the instruction data formats that become chats.

A conversation is rendered with the tokenizer's chat markers (pipeline/tokenizer.py SPECIAL_TOKENS):

    <|endoftext|><|user_start|>question<|user_end|><|assistant_start|>answer<|assistant_end|>...

- It starts with <|endoftext|>: pretraining put that token before every document, so it is where the
  model is used to beginning (and the exported tokenizer's bos_token).
- There is no system marker: a system message is put in front of the first user message, followed
  by a blank line (nanochat does the same).
- The loss mask is True on exactly the assistant's content tokens and its <|assistant_end|>: the
  model learns to answer and to *stop*. A mask that left the end-of-turn marker out would train a
  model that never emits it (a known failure in TRL and levanter); <|assistant_start|> stays out
  because the prompt, not the model, puts it there.
- `add_generation_prompt=True` ends the ids with <|assistant_start|> for the model to continue.

`CHAT_TEMPLATE` is the same rendering as a Jinja template, the string `export` writes into
`chat_template.jinja` and `tokenizer_config.json`, so transformers' `apply_chat_template` (and
every server built on it) gives the same ids as training (tests/test_chat.py). Text segments are
encoded one by one between the markers; the tokenizer splits at special tokens before its
pre-tokenizer runs, so encoding the whole rendered string gives the same ids.

Data files (`read_chat_examples`): JSONL, or JSON holding an array (or an object with one array),
each record in one of three shapes:
- Alpaca: {"instruction", "input" (optional), "output"} → user: instruction (blank line, input), assistant: output;
- chat: {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]};
- prompt/completion: {"prompt", "completion"}, each a string or a list of messages (TRL's
  conversational form).
Anything else is a ChatDataError with one line naming the file and the line (or array item).

Torch-free: only `tokenizers` objects are used here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from model.special_tokens import (ASSISTANT_END, ASSISTANT_START, BOS_TOKEN, END_OF_TEXT, PAD_TOKEN, RESERVED_TOKEN,
                                  USER_END, USER_START)

CHAT_MARKERS = (END_OF_TEXT, USER_START, USER_END, ASSISTANT_START, ASSISTANT_END)
# Text that would be read as a marker if it appeared inside a message (the tokenizer matches special
# tokens anywhere in a string); training data holding them is refused.
RESERVED_TEXT = CHAT_MARKERS + (PAD_TOKEN, BOS_TOKEN, RESERVED_TOKEN)
ROLES = ("system", "user", "assistant")
SYSTEM_SEPARATOR = "\n\n"

# The same rendering for transformers (Jinja). Kept byte-for-byte in step with render_chat by
# tests/test_chat.py; `content` may also be a list of {"type": "text", "text": ...} parts, the form
# OpenAI-compatible servers pass along.
CHAT_TEMPLATE = (
    "{%- macro text(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for part in content -%}{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{{- '<|endoftext|>' -}}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- set ns.system = ns.system + text(message['content']) + '\\n\\n' -%}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- '<|user_start|>' + ns.system + text(message['content']) + '<|user_end|>' -}}"
    "{%- set ns.system = '' -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<|assistant_start|>' + text(message['content']) + '<|assistant_end|>' -}}"
    "{%- else -%}"
    "{{- raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant_start|>' -}}{%- endif -%}"
)


class ChatError(ValueError):
    """A conversation or tokenizer the template cannot render (one line)."""


class ChatDataError(ValueError):
    """A data file that is not instruction data; the message names the file and line."""


def marker_ids(tokenizer) -> dict[str, int]:
    """The id of every chat marker; ChatError when the tokenizer lacks one (trained before them)."""
    ids = {}
    for marker in CHAT_MARKERS:
        token_id = tokenizer.token_to_id(marker)
        if token_id is None:
            raise ChatError(f"the tokenizer has no {marker} token (it was not trained by this project's "
                            f"train-tokenizer stage, or before chat markers existed)")
        ids[marker] = token_id
    return ids


def stop_ids(tokenizer) -> list[int]:
    """Tokens that end an answer: <|assistant_end|> (end of turn), then <|endoftext|>."""
    ids = marker_ids(tokenizer)
    return [ids[ASSISTANT_END], ids[END_OF_TEXT]]


def content_text(content) -> str:
    """A message's content as text: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    raise ChatError(f"message content must be a string, not {type(content).__name__}")


def render_chat(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation and its loss mask (True on assistant content + <|assistant_end|>)."""
    ids_of = marker_ids(tokenizer)
    ids: list[int] = [ids_of[END_OF_TEXT]]
    mask: list[bool] = [False]

    def add(tokens: Iterable[int], trained: bool) -> None:
        tokens = list(tokens)
        ids.extend(tokens)
        mask.extend([trained] * len(tokens))

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids if text else []

    system = ""
    for message in messages:
        role = message.get("role")
        text = content_text(message.get("content", ""))
        if role == "system":
            system += text + SYSTEM_SEPARATOR
        elif role == "user":
            add([ids_of[USER_START]], False)
            add(encode(system + text), False)
            add([ids_of[USER_END]], False)
            system = ""
        elif role == "assistant":
            add([ids_of[ASSISTANT_START]], False)
            add(encode(text), True)
            add([ids_of[ASSISTANT_END]], True)
        else:
            raise ChatError(f"unknown role {role!r}: use system, user or assistant")
    if add_generation_prompt:
        add([ids_of[ASSISTANT_START]], False)
    return ids, mask


def render_text(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The rendered conversation as one string (what CHAT_TEMPLATE produces); for reading, not training."""
    out, system = [END_OF_TEXT], ""
    for message in messages:
        role, text = message.get("role"), content_text(message.get("content", ""))
        if role == "system":
            system += text + SYSTEM_SEPARATOR
        elif role == "user":
            out += [USER_START, system, text, USER_END]
            system = ""
        elif role == "assistant":
            out += [ASSISTANT_START, text, ASSISTANT_END]
        else:
            raise ChatError(f"unknown role {role!r}: use system, user or assistant")
    if add_generation_prompt:
        out.append(ASSISTANT_START)
    return "".join(out)


# ------------------------------------------------------------------------------------------ data

def _messages(value, where: str, field: str, default_role: str) -> list[dict]:
    """A string (one message of `default_role`) or a list of {role, content} messages, checked."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if not isinstance(value, list) or not value:
        raise ChatDataError(f"{where}: '{field}' must be a string or a non-empty list of messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise ChatDataError(f"{where}: {field}[{i}] is not a message (an object with 'role' and 'content')")
        if message["role"] not in ROLES:
            raise ChatDataError(f"{where}: {field}[{i}] has role {message['role']!r}; roles are system, user, assistant")
        if not isinstance(message["content"], str):
            raise ChatDataError(f"{where}: {field}[{i}] content is {type(message['content']).__name__}, not a string")
        out.append({"role": message["role"], "content": message["content"]})
    return out


def check_conversation(messages: list[dict], where: str) -> list[dict]:
    """Optional system messages first, then user and assistant turns alternating, ending with the
    assistant (the turn that is trained); no chat marker inside any text."""
    first_turn = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
    if any(m["role"] == "system" for m in messages[first_turn:]):
        raise ChatDataError(f"{where}: a system message may only come first")
    turns = messages[first_turn:]
    if not turns or turns[0]["role"] != "user":
        raise ChatDataError(f"{where}: the conversation must start with a user message")
    for a, b in zip(turns, turns[1:]):
        if a["role"] == b["role"]:
            raise ChatDataError(f"{where}: two {a['role']} messages in a row (user and assistant must alternate)")
    if turns[-1]["role"] != "assistant":
        raise ChatDataError(f"{where}: the conversation ends with a user message; it needs the assistant's answer")
    for m in messages:
        for marker in RESERVED_TEXT:
            if marker in m["content"]:
                raise ChatDataError(f"{where}: a {m['role']} message contains the special token {marker} as text")
    if not any(m["content"] for m in turns if m["role"] == "assistant"):
        raise ChatDataError(f"{where}: every assistant message is empty")
    return messages


def example_messages(record, where: str) -> list[dict]:
    """One record in any of the three shapes → its messages (checked). `where` prefixes errors."""
    if not isinstance(record, dict):
        raise ChatDataError(f"{where}: expected an object, got {type(record).__name__}")
    if "messages" in record:
        messages = _messages(record["messages"], where, "messages", "user")
    elif "instruction" in record or "output" in record:
        for field in ("instruction", "output"):
            if not isinstance(record.get(field), str):
                raise ChatDataError(f"{where}: Alpaca record needs a string '{field}'")
        extra = record.get("input") or ""
        if not isinstance(extra, str):
            raise ChatDataError(f"{where}: Alpaca 'input' must be a string")
        question = record["instruction"] + (SYSTEM_SEPARATOR + extra if extra else "")
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": record["output"]}]
    elif "prompt" in record or "completion" in record:
        if "prompt" not in record or "completion" not in record:
            raise ChatDataError(f"{where}: a prompt/completion record needs both 'prompt' and 'completion'")
        messages = (_messages(record["prompt"], where, "prompt", "user")
                    + _messages(record["completion"], where, "completion", "assistant"))
    else:
        keys = ", ".join(sorted(map(str, record))[:6]) or "none"
        raise ChatDataError(f"{where}: not instruction data (fields: {keys}); expected 'messages', "
                            "'instruction'/'output' (Alpaca) or 'prompt'/'completion'")
    return check_conversation(messages, where)


def read_records(path: str | Path) -> list[tuple[str, object]]:
    """(where, record) of a JSONL file, a JSON array, or a JSON object holding one array. JSON Lines
    under a .json name are read as JSON Lines. Raises ChatDataError (one line) on unreadable files."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ChatDataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ChatDataError(f"{path}: a folder, not a data file") from None
    except UnicodeDecodeError as exc:
        raise ChatDataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ChatDataError(f"{path}: unreadable ({exc.strerror})") from None
    stripped = text.lstrip()
    if path.suffix == ".json" and stripped[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if stripped[:1] != "{" or exc.msg != "Extra data":  # one object per line under a .json name
                raise ChatDataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        else:
            if isinstance(data, dict):
                arrays = [v for v in data.values() if isinstance(v, list)]
                if len(arrays) != 1:
                    raise ChatDataError(f"{path}: a JSON object must hold exactly one array of records")
                data = arrays[0]
            if not isinstance(data, list):
                raise ChatDataError(f"{path}: JSON must be an array of records")
            return [(f"{path}: item {i}", record) for i, record in enumerate(data)]
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ChatDataError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
    return records


def read_chat_examples(path: str | Path) -> list[list[dict]]:
    """Every record of a data file as a list of messages. One line ChatDataError for anything else."""
    records = read_records(path)
    if not records:
        raise ChatDataError(f"{path}: no records")
    return [example_messages(record, where) for where, record in records]
