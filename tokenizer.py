"""WordPiece tokenizer for Mini-BERT: BERT's reference tokenization, exactly, plus vocabulary training.

Text goes through the same steps as BERT's BasicTokenizer + WordpieceTokenizer (Devlin et al. 2019,
google-research/bert tokenization.py; Hugging Face BertTokenizer), one function per step below:

    clean      drop NUL, U+FFFD and control characters (Unicode C*), map whitespace (Zs, \\t \\n \\r) to ' '
    CJK        put spaces around every CJK ideograph, so each becomes its own word
    NFC        compose characters, then split on whitespace
    lowercase  character by character (as Hugging Face does: no Greek final-sigma context)
    accents    NFD, then drop the combining marks (category Mn): 'é' -> 'e'
    punct      every Unicode P* character, and BERT's ASCII symbols !"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~,
               becomes a word of its own
    WordPiece  greedy longest-match-first against the vocabulary; later pieces carry '##';
               a word of > 100 characters, or one with an unmatchable part, becomes [UNK]

The vocabulary file is BERT's vocab.txt: one token per line, id = line number, with
[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4. Training (WordPieceTokenizer.train) learns one from word
counts by BPE-style frequency merges; its docstring says why.

Speed: the steps above are written out character by character (basic_tokenize) for reading; encode()
gets the same ids faster by cutting the text at whitespace (str.split) and caching each chunk's ids, an
ASCII chunk going through one compiled regex and each word's WordPiece split being cached too; large
batches (encode_batch) can be spread over worker processes.

Usage:
    python tokenizer.py train --corpus ../shared/data/wiki_en_2015/wiki.train.txt.gz --vocab-size 8192 \
        --out data/vocab-8192.txt                                     # an existing --out needs --overwrite
    python tokenizer.py encode "Héllo, world! Tokenization"          # pieces and ids (default vocab above)
    python tokenizer.py bench --corpus ../shared/data/wiki_en_2015/wiki.train.small.txt --slow-lines 2000

Expect (2 cores shared with four other busy jobs, so timings are noisy): training the 8K vocabulary
on the 32M-word corpus took 40-92 s here (load average 5-8); it gives 1.55 tokens per whitespace word
on that corpus, [UNK] 1.4e-4 of tokens. bench on wiki.train.small.txt: ids identical to
BertTokenizerFast on 38032 of 38032 lines; 0.6-0.8M words/s in one process (cold cache) against
0.16-0.19M for BertTokenizerFast, 0.03-0.04M for the Python BertTokenizer.
"""
import gzip
import hashlib
import io
import heapq
import multiprocessing as mp
import os
import re
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from itertools import chain
from pathlib import Path

import numpy as np

from config import ArgumentParser, UserError, at_least, cli, existing_file

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]   # ids 0..4, fixed by the contract
MAX_INPUT_CHARS_PER_WORD = 100      # BERT: a longer word becomes [UNK]
DEFAULT_VOCAB = Path(__file__).resolve().parent / "data" / "vocab-8192.txt"
CACHE_LIMIT = 1_000_000             # entries per cache (text chunk -> ids); ~200 bytes each
_SPECIAL_SPLIT = re.compile("(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")")   # encode_keep_special


# ---- character classes (BERT tokenization.py: _is_whitespace, _is_control, _is_punctuation) ----

def is_whitespace(ch):
    """' ', \\t, \\n, \\r and the Unicode space separators (Zs)."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch):
    """Unicode 'other' categories (Cc, Cf, Cn, Co, Cs), except \\t \\n \\r, which count as whitespace."""
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_punctuation(ch):
    """Every Unicode P* character, plus the ASCII symbols BERT treats as punctuation ($ + < = > ^ ` | ~)."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_cjk(cp):
    """CJK Unified Ideographs and their extensions/compatibility blocks (not Hangul, Hiragana or Katakana)."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


# ---- basic tokenization: the reference, one character at a time ----

def clean_text(text):
    """Drop NUL, U+FFFD and control characters; every whitespace character becomes ' '."""
    out = []
    for ch in text:
        if ch == "\0" or ch == "\ufffd" or is_control(ch):
            continue
        out.append(" " if is_whitespace(ch) else ch)
    return "".join(out)


def space_cjk(text):
    """'ab中文' -> 'ab 中  文 ': each CJK ideograph becomes a word of its own."""
    return "".join(f" {ch} " if is_cjk(ord(ch)) else ch for ch in text)


def lowercase(word):
    """str.lower() one character at a time, as Hugging Face's BertTokenizer does (re.sub over '(.+?)'),
    so capital sigma always becomes 'σ' (Python's word-level lower() would give a final 'ς')."""
    return word.replace("\u03a3", "\u03c3").lower()


def strip_accents(word):
    """NFD, then drop combining marks (Mn): 'crème' -> 'creme', 'ñ' -> 'n'."""
    return "".join(ch for ch in unicodedata.normalize("NFD", word) if unicodedata.category(ch) != "Mn")


def split_punctuation(word):
    """'hi!?x' -> ['hi', '!', '?', 'x']: every punctuation character is a word of its own."""
    out, start_new = [], True
    for ch in word:
        if is_punctuation(ch):
            out.append(ch)
            start_new = True
        else:
            if start_new:
                out.append("")
            start_new = False
            out[-1] += ch
    return out


def basic_tokenize(text, do_lower_case=True):
    """BERT's BasicTokenizer: text -> list of words and punctuation marks (lowercased, accents stripped).
    Readable and slow; WordPieceTokenizer caches its result per whitespace chunk and takes a regex path
    for ASCII chunks, which gives the same words."""
    text = space_cjk(clean_text(text))
    words = []
    for word in unicodedata.normalize("NFC", text).split():
        if do_lower_case:
            word = strip_accents(lowercase(word))
        words.extend(split_punctuation(word))
    return [w for w in " ".join(words).split()]


# ---- basic tokenization: the fast path ----
# Python's str.split() splits on a few characters that BERT deletes as control characters instead
# (VT, FF, FS..US, NEL); removing them first makes str.split() cut the text exactly where BERT does, so
# each whitespace chunk can be tokenized (and cached) on its own.
_SPLIT_BUT_CONTROL = re.compile("[\x0b\x0c\x1c-\x1f\x85]")
_ASCII_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_WORDS = re.compile(r"[a-z0-9]+|[!-/:-@\[-`{-~]")    # letters/digits runs, or one ASCII punct


def basic_tokenize_chunk(chunk):
    """Same words as basic_tokenize(chunk) for a chunk without whitespace; compiled regex for ASCII."""
    if chunk.isascii():
        if not chunk.isprintable():
            chunk = _ASCII_CONTROL.sub("", chunk)
        return _ASCII_WORDS.findall(chunk.lower())
    return basic_tokenize(chunk)


def whitespace_chunks(text):
    """text -> the whitespace-separated chunks BERT's clean_text + split would give (before CJK/punct)."""
    if _SPLIT_BUT_CONTROL.search(text):
        text = _SPLIT_BUT_CONTROL.sub("", text)
    return text.split()


# ---- WordPiece (greedy longest-match-first) ----

def wordpiece(word, vocab, max_len=None, unk="[UNK]"):
    """'unaffable' -> ['un', '##aff', '##able']: at each position take the longest vocabulary entry
    ('##'-prefixed after the first piece). If some position matches nothing, the whole word is [unk];
    a word longer than 100 characters is [unk] too. max_len: longest token length (a speed-up only)."""
    n = len(word)
    if n > MAX_INPUT_CHARS_PER_WORD:
        return [unk]
    pieces, start = [], 0
    while start < n:
        end = n if max_len is None else min(n, start + max_len)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        else:
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


class _Cache(dict):
    """dict key -> ids tuple that computes missing entries with fn and keeps at most `limit` of them."""

    def __init__(self, fn, limit=CACHE_LIMIT):
        super().__init__()
        self.fn, self.limit = fn, limit

    def __missing__(self, key):
        value = self.fn(key)
        if len(self) < self.limit:
            self[key] = value
        return value


# ---- the tokenizer ----

class WordPieceTokenizer:
    """A BERT uncased WordPiece tokenizer: vocab.txt in, ids out (see the module docstring for the steps).

    tok.vocab: dict token -> id; tok.ids_to_tokens: list; tok.is_continuation: (V,) bool, token starts with '##'.
    """

    def __init__(self, tokens):
        tokens = list(tokens)
        if tokens[:len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"the vocabulary must start with {SPECIAL_TOKENS} (ids 0..4); "
                             f"it starts with {tokens[:len(SPECIAL_TOKENS)]}")
        self.ids_to_tokens = tokens
        self.vocab = {t: i for i, t in enumerate(tokens)}
        if len(self.vocab) != len(tokens):
            dup = [t for t, c in Counter(tokens).items() if c > 1][:5]
            raise ValueError(f"the vocabulary has duplicate tokens, e.g. {dup}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = range(len(SPECIAL_TOKENS))
        self.special_ids = list(range(len(SPECIAL_TOKENS)))
        self.is_continuation = np.array([t.startswith("##") for t in tokens], dtype=np.bool_)   # (V,)
        self._max_len = max(len(t) - 2 * t.startswith("##") for t in tokens)
        self._word_ids = _Cache(self._wordpiece_ids)      # basic word -> ids
        self._chunk_ids = _Cache(self._chunk_to_ids)      # whitespace chunk -> ids

    @property
    def vocab_size(self):
        return len(self.ids_to_tokens)

    # -- files --

    @classmethod
    def load(cls, vocab_file):
        """Read a BERT vocab.txt (one token per line, id = line number). A file that is not one (bad UTF-8,
        a missing or misplaced special token, a duplicate) raises UserError naming the file."""
        if not Path(vocab_file).is_file():
            raise FileNotFoundError(f"no vocabulary at {vocab_file}; train one with `python tokenizer.py "
                                    f"train --corpus FILE --vocab-size 8192 --out {vocab_file}`")
        try:
            with open(vocab_file, encoding="utf-8") as f:
                tokens = [line.rstrip("\n") for line in f]
        except UnicodeDecodeError:
            check_text_file(vocab_file)                     # names the line
            raise
        try:
            return cls(tokens)
        except ValueError as e:
            raise UserError(f"{vocab_file} is not a WordPiece vocab.txt: {e}; use one written by `python "
                            f"tokenizer.py train`.") from None

    def save(self, vocab_file):
        Path(vocab_file).parent.mkdir(parents=True, exist_ok=True)
        with open(vocab_file, "w", encoding="utf-8", newline="\n") as f:
            f.write(self._vocab_text())

    def _vocab_text(self):
        return "".join(t + "\n" for t in self.ids_to_tokens)

    def vocab_hash(self):
        """sha256 of the vocab.txt text: two tokenizers with the same hash give the same ids."""
        return hashlib.sha256(self._vocab_text().encode("utf-8")).hexdigest()

    # -- encoding --

    def _wordpiece_ids(self, word):
        return tuple(self.vocab[p] for p in wordpiece(word, self.vocab, self._max_len))

    def _chunk_to_ids(self, chunk):
        return tuple(chain.from_iterable(map(self._word_ids.__getitem__, basic_tokenize_chunk(chunk))))

    def _ids(self, text):
        """text -> ids without [CLS]/[SEP]: one cached lookup per whitespace chunk."""
        return list(chain.from_iterable(map(self._chunk_ids.__getitem__, whitespace_chunks(text))))

    def tokenize(self, text):
        """'Hello, world!' -> ['hello', ',', 'world', '!'] (no special tokens)."""
        return [self.ids_to_tokens[i] for i in self._ids(text)]

    def encode(self, text, add_special_tokens=True):
        """text -> [CLS] ids [SEP] (or just the ids)."""
        ids = self._ids(text)
        return [self.cls_id] + ids + [self.sep_id] if add_special_tokens else ids

    def encode_keep_special(self, text, add_special_tokens=True):
        """Like encode, but a special token written in the text ([MASK], [SEP], ...: exactly, upper case)
        stays one token, as in Hugging Face's BertTokenizer: 'is [MASK].' -> is [MASK] . where encode gives
        is [ mas ##k ] . (8K vocab). For typed input such as the fill-mask demo (mlm.py --checkpoint); the
        corpus path, encode, treats brackets as plain punctuation."""
        ids = []
        for i, part in enumerate(_SPECIAL_SPLIT.split(text)):
            ids.extend([self.vocab[part]] if i % 2 else self._ids(part))   # odd parts: the specials
        return [self.cls_id] + ids + [self.sep_id] if add_special_tokens else ids

    def encode_words(self, words, add_special_tokens=True):
        """Pre-split words (CoNLL-U, SST-2) -> (ids, word_ids): word_ids[j] = index of the word that piece j
        came from, None for [CLS]/[SEP]. Each word is tokenized on its own (it may give several pieces, or
        none if it holds only control characters), as Hugging Face does with is_split_into_words=True."""
        ids, word_ids = [], []
        for i, word in enumerate(words):
            pieces = self._ids(word)
            ids.extend(pieces)
            word_ids.extend([i] * len(pieces))
        if add_special_tokens:
            ids = [self.cls_id] + ids + [self.sep_id]
            word_ids = [None] + word_ids + [None]
        return ids, word_ids

    # Smaller batches stay in this process: starting workers and filling their caches costs ~1.3x the CPU
    # of one process (measured on the 32M-word corpus), so it pays only on big inputs and idle cores.
    PARALLEL_MIN_TEXTS = 100_000

    def encode_batch(self, texts, add_special_tokens=True, num_workers=None, chunk_size=2000):
        """list of texts -> list of id lists, in order. num_workers=None uses every core; batches under
        PARALLEL_MIN_TEXTS texts (or num_workers <= 1) stay in this process. Workers start with 'spawn'."""
        texts = list(texts)
        num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
        if num_workers <= 1 or len(texts) < self.PARALLEL_MIN_TEXTS:
            return [self.encode(t, add_special_tokens) for t in texts]
        batches = [texts[i:i + chunk_size] for i in range(0, len(texts), chunk_size)]
        ctx = mp.get_context("spawn")
        out = []
        with ctx.Pool(num_workers, initializer=_worker_init, initargs=(self.ids_to_tokens,)) as pool:
            for flat, lengths in pool.imap(_worker_encode, [(b, add_special_tokens) for b in batches]):
                flat, start = flat.tolist(), 0          # one int32 array per batch: cheap to send back
                for n in lengths.tolist():
                    out.append(flat[start:start + n])
                    start += n
        return out

    def decode(self, ids, skip_special_tokens=False):
        """ids -> text: pieces joined by spaces, '##' continuations glued back onto their word."""
        skip = set(self.special_ids) - {self.unk_id} if skip_special_tokens else set()
        tokens = [self.ids_to_tokens[int(i)] for i in ids if int(i) not in skip]
        return " ".join(tokens).replace(" ##", "").strip()

    # -- training --

    @classmethod
    def train(cls, texts, vocab_size=8192, limit_alphabet=None, min_char_count=None,
              min_word_count=1, progress=False):
        """Learn a WordPiece vocabulary of exactly vocab_size tokens (if the corpus has enough distinct
        pieces) from an iterable of strings (lines or larger blocks; only their words matter).

        Algorithm: BPE-style merges, by frequency (Sennrich et al. 2016), on WordPiece symbols.
          1. Count whitespace chunks, turn them into BERT words (basic tokenization) with their counts.
          2. Alphabet: every character that starts a word ('c') and every character inside one ('##c'),
             the most frequent first, at most limit_alphabet of them (default max(256, vocab_size // 8),
             1024 at 8K); by default the rarest ones, adding up to 1e-4 of the word occurrences, are left
             out too (or those seen fewer than min_char_count times). Their words become [UNK].
          3. Repeat: merge the most frequent adjacent pair (a, b) into one symbol a+b (the '##' of b is
             dropped), until the vocabulary holds vocab_size tokens. Ties go to the pair of smaller ids,
             so the result is deterministic for a given multiset of words.
        Why frequency and not the WordPiece likelihood score count(ab) / (count(a) count(b)): merging (a, b)
        changes count(a) and count(b), which changes the score of every pair that holds a or b, so a lazy
        priority queue no longer works and each merge must rescore everything: too slow for 32M words in
        pure Python. The frequency rule changes only the counts of pairs next to the merged ones, so a heap
        with lazy deletion gives all merges in seconds. Hugging Face's own WordPieceTrainer does the same
        (BPE training with '##' continuations). Inference is WordPiece either way: greedy longest match.
        min_word_count: words seen fewer times do not take part in merges (a speed knob; 1 = all words)."""
        t0 = time.time()
        chunks = Counter()
        for text in texts:
            chunks.update(whitespace_chunks(text))
        words = Counter()
        for chunk, n in chunks.items():
            for w in basic_tokenize_chunk(chunk):
                words[w] += n
        del chunks
        t1 = time.time()

        # 2. alphabet: character counts at word start ('c') and inside a word ('##c')
        char_counts = Counter()
        for w, n in words.items():
            char_counts[w[0]] += n
            for ch in w[1:]:
                char_counts["##" + ch] += n
        ranked = sorted(char_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if min_char_count is None:      # drop the rarest characters: at most 1e-4 of the word occurrences
            budget, min_char_count = 1e-4 * sum(words.values()), 1
            for tok, n in reversed(ranked):
                budget -= n
                if budget < 0:
                    min_char_count = n
                    break
        room = min(vocab_size - len(SPECIAL_TOKENS), limit_alphabet or max(256, vocab_size // 8))
        alphabet = [tok for tok, n in ranked if n >= min_char_count][:limit_alphabet or max(256, vocab_size // 8)]
        if len(alphabet) > room:                # the vocab cannot hold the specials and the alphabet
            raise UserError(f"vocab_size {vocab_size} cannot hold the {len(SPECIAL_TOKENS)} special tokens and the "
                            f"{len(alphabet)} characters of the corpus; use a vocab size of at least "
                            f"{len(SPECIAL_TOKENS) + len(alphabet)} (or a smaller limit_alphabet).")
        tokens = SPECIAL_TOKENS + sorted(alphabet, key=lambda t: (t.startswith("##"), t))
        sym_id = {t: i for i, t in enumerate(tokens)}

        # 3. words as symbol-id lists (words with a character outside the alphabet are skipped)
        seqs, freqs = [], []
        for w, n in sorted(words.items()):
            if n < min_word_count or len(w) > MAX_INPUT_CHARS_PER_WORD:
                continue
            ids = [sym_id.get(w[0])] + [sym_id.get("##" + ch) for ch in w[1:]]
            if None in ids:
                continue
            seqs.append(ids)
            freqs.append(n)
        del words
        pair_counts = defaultdict(int)
        where = defaultdict(set)            # pair -> indices of the words that held it (superset)
        for wi, (seq, n) in enumerate(zip(seqs, freqs)):
            for p in zip(seq, seq[1:]):
                pair_counts[p] += n
                where[p].add(wi)
        heap = [(-n, a, b) for (a, b), n in pair_counts.items()]
        heapq.heapify(heap)
        t2 = time.time()

        bar = _progress(None, progress, "merges", total=max(0, vocab_size - len(tokens)))
        while len(tokens) < vocab_size and heap:
            negn, a, b = heapq.heappop(heap)
            if pair_counts.get((a, b), 0) != -negn:
                continue                    # stale heap entry: the count changed since it was pushed
            merged = tokens[a] + tokens[b][2:]
            m = sym_id.get(merged)
            if m is None:                   # the same string can come from two different pairs
                m = sym_id[merged] = len(tokens)
                tokens.append(merged)
                if bar is not None:
                    bar.update(1)
            delta = defaultdict(int)
            for wi in where.pop((a, b)):
                seq = seqs[wi]
                out, i, L = [], 0, len(seq)
                while i < L:
                    if i + 1 < L and seq[i] == a and seq[i + 1] == b:
                        out.append(m)
                        i += 2
                    else:
                        out.append(seq[i])
                        i += 1
                if len(out) == L:
                    continue
                n = freqs[wi]
                for p in zip(seq, seq[1:]):
                    delta[p] -= n
                for p in zip(out, out[1:]):
                    delta[p] += n
                    if m in p:
                        where[p].add(wi)
                seqs[wi] = out
            for p, d in delta.items():
                if d:
                    n = pair_counts[p] + d
                    if n > 0:
                        pair_counts[p] = n
                        heapq.heappush(heap, (-n, p[0], p[1]))
                    else:
                        del pair_counts[p]
        if bar is not None:
            bar.close()
        if progress:
            print(f"count {t1 - t0:.1f}s | alphabet {len(alphabet)} (min count {min_char_count}) | "
                  f"words {len(seqs)} | pairs {t2 - t1:.1f}s | merges {time.time() - t2:.1f}s", file=sys.stderr)
        return cls(tokens)


# ---- multiprocessing workers (module level, so 'spawn' can find them) ----

_WORKER_TOK = None


def _worker_init(tokens):
    global _WORKER_TOK
    _WORKER_TOK = WordPieceTokenizer(tokens)


def _worker_encode(args):
    """A batch of texts -> (all ids, int32 (N,), lengths, int64 (texts,)): arrays pickle as raw bytes."""
    texts, add_special_tokens = args
    encoded = [_WORKER_TOK.encode(t, add_special_tokens) for t in texts]
    flat = np.fromiter(chain.from_iterable(encoded), dtype=np.int32)        # (N,)
    return flat, np.array([len(x) for x in encoded], dtype=np.int64)        # (texts,)


# ---- corpus reading ----

def _open_text(path):
    path = Path(path)
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_lines(path, limit=None):
    """Lines of a .txt or .gz corpus, without the newline (blank lines included)."""
    with _open_text(path) as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                return
            yield line.rstrip("\n")


def iter_blocks(path, block_chars=1 << 22, progress=False):
    """A .txt or .gz corpus in blocks of whole lines (about block_chars characters each): fast to count.
    progress: a tqdm bar over the bytes read from disk (compressed bytes for a .gz)."""
    path = Path(path)
    with open(path, "rb") as raw:
        f = io.TextIOWrapper(gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw, encoding="utf-8")
        bar = _progress(None, progress, f"read {path.name}", total=path.stat().st_size, unit="B",
                        unit_scale=True)
        while True:
            block = f.read(block_chars)
            if not block:
                break
            block += f.readline()
            if bar is not None:
                bar.update(raw.tell() - bar.n)
            yield block
        if bar is not None:
            bar.close()


def check_text_file(path):
    """Before any work on a .txt/.gz corpus: every byte must be UTF-8 and some of it not whitespace. Raises
    UserError naming `file:line` for the first bad byte, or the file when it holds no text. One pass over the
    file in 4 MB blocks cut at newlines (a newline byte never sits inside a UTF-8 character)."""
    path = Path(path)
    lines_before, has_text, rest = 0, False, b""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            while True:
                block = f.read(1 << 22)
                buf = rest + block
                cut = buf.rfind(b"\n") + 1 if block else len(buf)
                chunk, rest = buf[:cut], buf[cut:]
                try:
                    text = chunk.decode("utf-8")
                except UnicodeDecodeError as e:
                    line = lines_before + chunk.count(b"\n", 0, e.start) + 1
                    raise UserError(f"{path}:{line}: not valid UTF-8 ({e.reason}); save the file as UTF-8 "
                                    f"(e.g. iconv -f latin1 -t utf-8).") from None
                has_text = has_text or (len(text) > 0 and not text.isspace())
                lines_before += chunk.count(b"\n")
                if not block:
                    break
    except (OSError, EOFError) as e:                      # a truncated or corrupt .gz
        raise UserError(f"cannot read {path} ({e}); pass a plain-text or gzip file.") from None
    if not has_text:
        raise UserError(f"{path} holds no text (it is empty or whitespace only); pass a corpus with one paragraph "
                        f"per line.")


def _progress(iterable, enabled, desc, **kw):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, **kw)


# ---- command line ----

def _cmd_train(args):
    t0 = time.time()
    out = Path(args.out)
    if out.is_dir() or (out.exists() and not args.overwrite):
        raise UserError(f"{out} is a folder; pass --out the vocab file to write." if out.is_dir() else
                        f"{out} exists (the models and token files made with it need it unchanged); pass --overwrite "
                        f"to replace it, or another --out.")
    check_text_file(args.corpus)
    size = Path(args.corpus).stat().st_size
    tok = WordPieceTokenizer.train(iter_blocks(args.corpus, progress=True), vocab_size=args.vocab_size,
                                   limit_alphabet=args.limit_alphabet,
                                   min_word_count=args.min_word_count, progress=True)
    tok.save(args.out)
    if tok.vocab_size < args.vocab_size:
        print(f"note: the corpus has only {tok.vocab_size} distinct pieces, fewer than --vocab-size {args.vocab_size}")
    print(f"{size / 1e6:.0f} MB corpus -> {tok.vocab_size} tokens in {time.time() - t0:.1f} s "
          f"(sha256 {tok.vocab_hash()[:12]}), saved to {args.out}")


def _cmd_encode(args):
    tok = WordPieceTokenizer.load(args.vocab)
    text = " ".join(args.text)
    ids = tok.encode(text)
    print("pieces:", " ".join(tok.ids_to_tokens[i] for i in ids))
    print("ids:   ", ids)


def _cmd_bench(args):
    WordPieceTokenizer.load(args.vocab)                    # a bad vocab fails before any work
    check_text_file(args.corpus)
    lines = [l for l in iter_lines(args.corpus, args.lines) if l.strip()]
    n_words = sum(len(l.split()) for l in lines)
    if not lines:
        raise UserError(f"the first {args.lines} lines of {args.corpus} are blank; pass more --lines.")
    print(f"{len(lines)} lines, {n_words} words from {args.corpus}; vocab {args.vocab}")
    rows = []                                               # (name, words/s)
    for workers in sorted({1, args.workers}):
        tok = WordPieceTokenizer.load(args.vocab)          # fresh tokenizer: empty caches
        t = time.time()
        ours = tok.encode_batch(lines, num_workers=workers)
        rows.append((f"ours, {workers} process(es), cold cache", n_words / (time.time() - t)))
    n_tokens = sum(len(x) - 2 for x in ours)
    try:
        import transformers
    except ImportError:
        transformers = None
        print("transformers is not installed: no Hugging Face comparison")
    if transformers is not None and not args.no_hf:
        hf = transformers.BertTokenizerFast(str(args.vocab), do_lower_case=True)
        t = time.time()
        theirs = []
        for i in range(0, len(lines), 1000):
            theirs.extend(hf(lines[i:i + 1000], add_special_tokens=True)["input_ids"])
        rows.append(("HF BertTokenizerFast(texts)", n_words / (time.time() - t)))
        t = time.time()
        backend = [e.ids for e in hf.backend_tokenizer.encode_batch(lines)]    # Rust, all threads
        rows.append(("HF backend_tokenizer.encode_batch (Rust)", n_words / (time.time() - t)))
        same = sum(a == b for a, b in zip(ours, theirs))
        print(f"identical to BertTokenizerFast on {same} of {len(lines)} lines")
        if args.slow_lines:
            slow = transformers.BertTokenizer(str(args.vocab), do_lower_case=True)
            sub = lines[:args.slow_lines]
            t = time.time()
            theirs = [slow.encode(l) for l in sub]
            rows.append((f"HF BertTokenizer (Python), {len(sub)} lines",
                         sum(len(l.split()) for l in sub) / (time.time() - t)))
            same = sum(a == b for a, b in zip(ours, theirs))
            print(f"identical to BertTokenizer (Python) on {same} of {len(sub)} lines")
    best_hf = max([wps for name, wps in rows if name.startswith("HF") and "Python" not in name], default=None)
    for name, wps in rows:
        rel = f"  ({wps / best_hf:.2f}x the faster HF Rust figure)" if best_hf else ""
        print(f"{name:45s} {wps / 1e3:8.0f}k words/s{rel}")
    unk = sum(x.count(1) for x in ours) / max(1, n_tokens)
    print(f"tokens per whitespace word: {n_tokens / n_words:.3f} | [UNK]: {unk:.1e} of tokens")


@cli
def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="learn a vocabulary from a .txt/.gz corpus")
    t.add_argument("--corpus", required=True, type=existing_file)
    t.add_argument("--vocab-size", type=at_least(len(SPECIAL_TOKENS) + 1), default=8192,
                   help="tokens in the vocabulary, the 5 special ones included")
    t.add_argument("--out", default=str(DEFAULT_VOCAB))
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    t.add_argument("--limit-alphabet", type=at_least(1), default=None, help="most single-character tokens to keep")
    t.add_argument("--min-word-count", type=at_least(1), default=1, help="rarer words take no part in merges")
    e = sub.add_parser("encode", help="print the pieces and ids of a text")
    e.add_argument("text", nargs="+")
    e.add_argument("--vocab", default=str(DEFAULT_VOCAB))
    b = sub.add_parser("bench", help="words/s of this tokenizer next to HF BertTokenizerFast")
    b.add_argument("--corpus", required=True, type=existing_file)
    b.add_argument("--vocab", default=str(DEFAULT_VOCAB))
    b.add_argument("--lines", type=at_least(1), default=None, help="only the first N lines")
    b.add_argument("--workers", type=at_least(1), default=os.cpu_count() or 1)
    b.add_argument("--slow-lines", type=at_least(0), default=0, help="also time HF's Python BertTokenizer on N lines")
    b.add_argument("--no-hf", action="store_true", help="time this tokenizer only")
    args = p.parse_args(argv)
    {"train": _cmd_train, "encode": _cmd_encode, "bench": _cmd_bench}[args.cmd](args)


if __name__ == "__main__":
    main()
