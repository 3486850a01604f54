"""A CLIP-style byte-level BPE tokenizer built locally.

The real CLIP vocabulary (49,408 tokens) comes from the Hugging Face Hub, which this project cannot reach
when it builds its own models. `build_tokenizer` learns a small BPE vocabulary from a word list instead, in the
exact file format of `CLIPTokenizer` (vocab.json + merges.txt), so a model made here is an ordinary Hugging Face
folder that `CLIPSegProcessor.from_pretrained` reads.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from transformers import CLIPTokenizer

# Words a drywall inspector types, plus common English glue: the BPE learns whole-word merges for these,
# and anything else still tokenizes (character by character) because every byte is in the base vocabulary.
DOMAIN_TEXT = """
segment crack cracks cracked wall walls taping tape taped area areas joint joints drywall seam seams
plaster gypsum board boards screw screws nail hole holes dent dents stain stains water damage mold mould
paint peeling corner bead mud compound sanding ceiling floor tile brick concrete stucco line lines
a an the of in on and or with without find show mark detect highlight all any every this that
"""

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_alphabet() -> list[str]:
    """The 256 printable characters that stand for the bytes 0..255 in byte-level BPE (GPT-2's scheme).

    Printable Latin-1 bytes stand for themselves; the others are shifted to code points from 256 up, so
    every byte has a visible, non-whitespace character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, shift = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + shift)
            shift += 1
    return [chars[b] for b in range(256)]


def learn_merges(words: Iterable[str], n_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties broken alphabetically).

    Words are lower-case ASCII here, so their characters are their byte-level characters. The last symbol of
    each word carries CLIP's end-of-word marker `</w>`.
    """
    counts = collections.Counter(words)
    vocab = {tuple(w[:-1]) + (w[-1] + "</w>",): c for w, c in counts.items() if w}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: collections.Counter = collections.Counter()
        for symbols, c in vocab.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = {}
        for symbols, c in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = c
        vocab = merged
    return merges


def build_tokenizer(text: str = DOMAIN_TEXT, n_merges: int = 400):
    """A `CLIPTokenizer` with a vocabulary learned from `text`.

    Returns the tokenizer; `len(tokenizer)` is its vocabulary size (the text config's `vocab_size` must be at
    least that), `tokenizer.eos_token_id` is the id the CLIPSeg text model pools at.
    """
    merges = learn_merges(text.lower().split(), n_merges)
    alphabet = byte_alphabet()
    vocab: dict[str, int] = {}
    for token in [*alphabet, *(c + "</w>" for c in alphabet), *(a + b for a, b in merges), BOS, EOS]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=list(merges))
