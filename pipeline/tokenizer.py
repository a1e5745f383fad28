"""Byte-level BPE: trained by rustbpe, written in Hugging Face `tokenizers` format.

Why two libraries: rustbpe (nanochat's trainer) splits and counts pre-tokens in parallel and
merges with an incremental heap, which trains several times faster than `tokenizers`'
BpeTrainer on the same text; but the artifact people load everywhere is `tokenizer.json`. The
trainer returns mergeable ranks (token bytes → id, in merge order, tiktoken-style); we rebuild the
merge list from them and write a `tokenizers` BPE model over the GPT-2 byte alphabet, so token ids
are the same in both libraries (tested) and the file loads with `Tokenizer.from_file` and
transformers' `PreTrainedTokenizerFast` with no code of ours.

Every one of the 256 bytes is a token, so any string, valid UTF-8 or not in its pieces, encodes and
decodes back exactly ("byte fallback" by construction). Special tokens take the last ids.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable

# Named once for the data and the model side (torch-free module).
from model.special_tokens import END_OF_TEXT, SPECIAL_TOKENS  # noqa: F401 (END_OF_TEXT re-exported)

# GPT-4's split (cl100k): contractions, letter runs with one leading non-letter, numbers of 1-3
# digits, punctuation runs, newlines, other whitespace. Possessive quantifiers work in both
# rustbpe's fancy-regex and tokenizers' Oniguruma.
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                 r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)


def train_bpe(texts: Iterable[str], vocab_size: int, pattern: str = SPLIT_PATTERN):
    """Train on an iterator of texts; returns a `tokenizers.Tokenizer` of at most `vocab_size`
    tokens (fewer when the text has no more pairs to merge), special tokens included."""
    import rustbpe

    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), vocab_size - len(SPECIAL_TOKENS), pattern=pattern)
    return tokenizer_from_ranks(trainer.get_mergeable_ranks(), pattern)


def tokenizer_from_ranks(ranks: list[tuple[bytes, int]], pattern: str = SPLIT_PATTERN):
    """A `tokenizers` byte-level BPE equal to the rank-based (tiktoken-style) tokenizer `ranks`."""
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    rank_of = dict(ranks)
    if sorted(rank_of.values()) != list(range(len(rank_of))) or any(rank_of.get(bytes([b])) != b for b in range(256)):
        raise ValueError("ranks must number tokens 0..n-1 with byte b at rank b")
    to_alphabet = {b: char for b, char in enumerate(byte_alphabet())}

    def spelled(token: bytes) -> str:
        return token.decode("latin-1").translate(to_alphabet)

    merges = []
    for token, rank in sorted(ranks, key=lambda item: item[1])[256:]:
        # The pair this token was merged from is what BPE makes of its bytes using only the
        # merges learned before it (as transformers' tiktoken converter does).
        left, right = _merge_with_ranks_below(rank_of, token, rank)
        merges.append((spelled(left), spelled(right)))
    vocab = {spelled(token): rank for token, rank in ranks}
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def _merge_with_ranks_below(rank_of: dict[bytes, int], token: bytes, max_rank: int) -> tuple[bytes, bytes]:
    # Fast path: when only one split of the token has both halves learned before it, that split is
    # the merge (it must be one of them). Ties fall back to replaying BPE over the token's bytes.
    found = None
    for i in range(1, len(token)):
        if rank_of.get(token[:i], max_rank) < max_rank and rank_of.get(token[i:], max_rank) < max_rank:
            if found is not None:
                break
            found = i
    else:
        if found is not None:
            return token[:found], token[found:]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, best_rank = None, max_rank
        for i in range(len(parts) - 1):
            rank = rank_of.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {max_rank}) is not one merge of two earlier tokens")
    return parts[0], parts[1]


@lru_cache(maxsize=1)
def byte_alphabet() -> tuple[str, ...]:
    """GPT-2's map of the 256 bytes to printable characters (what tokenizers' ByteLevel uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


def end_of_text_id(tokenizer) -> int:
    token_id = tokenizer.token_to_id(END_OF_TEXT)
    if token_id is None:
        raise ValueError(f"tokenizer has no {END_OF_TEXT} token")
    return token_id
