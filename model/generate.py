"""Text generation: sampling with temperature, top-k and top-p, a KV cache, streamed tokens.

`generate_tokens` yields token ids as they are produced. With the cache, the prompt is run once and
each new token costs one position; without it, every step re-runs the whole (cropped) sequence, as
nanoGPT's generate does. Greedy output is the same either way (tested). When the cache is full
(block_size positions), it is refilled from the last half block of tokens and generation goes on.
`chat_reply` is one assistant turn of a conversation rendered with model/chat.py's template; it
stops at <|assistant_end|> (finish_reason "stop") or after max_new_tokens ("length").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch

from model.special_tokens import EOT_TOKEN


def next_token(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
               generator: torch.Generator | None) -> int:
    """One token from the last position's logits (vocab,). temperature 0 → argmax."""
    logits = logits.float()
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if top_k and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens before it already reach top_p (the first one always stays)
        drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def generate_tokens(model, prompt: Sequence[int], max_new_tokens: int = 100, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_ids: Iterable[int] = (),
                    use_cache: bool = True) -> Iterator[int]:
    """Yield up to max_new_tokens ids after `prompt` (a stop id is yielded, then generation ends)."""
    model.eval()
    device = model.embed_tokens.weight.device
    block = model.config.block_size
    stop = set(stop_ids)
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = list(prompt)
    if not tokens:
        raise ValueError("an empty prompt: give at least one token (e.g. <|endoftext|>)")
    cache = None
    logits = None
    for _ in range(max_new_tokens):
        if not use_cache:
            logits, _ = model(torch.tensor([tokens[-block:]], device=device))
        elif cache is None or cache.length >= block:
            # start (or restart, when full) from the last tokens that leave room to continue
            keep = tokens[-block:] if cache is None and len(tokens) < block else tokens[-(block // 2):]
            cache = model.new_cache(1, block)
            logits, _ = model(torch.tensor([keep], device=device), cache=cache)
        token = next_token(logits[0, -1], temperature, top_k, top_p, generator)
        yield token
        if token in stop:
            return
        tokens.append(token)
        if use_cache and cache.length < block:
            logits, _ = model(torch.tensor([[token]], device=device), cache=cache)


class TextStream:
    """Turns token ids into text pieces as they come, holding back an incomplete UTF-8 character."""

    def __init__(self, tokenizer, skip_special: bool = True):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.ids: list[int] = []
        self.emitted = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special)
        if text.endswith("\ufffd"):  # a multi-byte character not complete yet
            return ""
        piece, self.emitted = text[self.emitted:], len(text)
        return piece

    def flush(self) -> str:
        """What is held back (an incomplete character at the very end), once generation is over."""
        text = self.text()
        piece, self.emitted = text[self.emitted:], len(text)
        return piece

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special)


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 100, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, seed: int = 0, use_cache: bool = True) -> str:
    """The continuation of `prompt` as text, stopping at <|endoftext|> (not included)."""
    eot = tokenizer.token_to_id(EOT_TOKEN)
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else [eot]
    stream = TextStream(tokenizer)
    for token in generate_tokens(model, ids, max_new_tokens, temperature, top_k, top_p, seed,
                                 stop_ids=[eot], use_cache=use_cache):
        if token != eot:
            stream.push(token)
    return stream.text()


# ------------------------------------------------------------------------------------------ chat

@dataclass
class ChatReply:
    text: str
    finish_reason: str  # "stop": the model ended its turn (<|assistant_end|> or <|endoftext|>); "length": cut off
    tokens: int  # tokens generated, the stop marker included


def chat_reply(model, tokenizer, messages: Sequence[dict], max_new_tokens: int = 256, temperature: float = 0.7,
               top_k: int = 50, top_p: float = 1.0, seed: int = 0, on_text: Callable[[str], None] | None = None,
               use_cache: bool = True) -> ChatReply:
    """The assistant's next turn after `messages` (model/chat.py's template, generation prompt added).
    Text pieces go to `on_text` as they are produced; generation stops at the end-of-turn marker."""
    from model.chat import render_chat, stop_ids

    stops = stop_ids(tokenizer)
    ids, _ = render_chat(tokenizer, messages, add_generation_prompt=True)
    stream = TextStream(tokenizer)
    finish, count = "length", 0
    for token in generate_tokens(model, ids, max_new_tokens, temperature, top_k, top_p, seed,
                                 stop_ids=stops, use_cache=use_cache):
        count += 1
        if token in stops:
            finish = "stop"
            break
        piece = stream.push(token)
        if piece and on_text is not None:
            on_text(piece)
    rest = stream.flush()
    if rest and on_text is not None:
        on_text(rest)
    return ChatReply(stream.text(), finish, count)
