"""Data for Mini-BERT: read corpora, tokenize a corpus into a uint16 .bin, and cut it into training batches
(packed MLM rows; padded rows for SST-2 and POS). Finding and downloading the files: download.py.

    text --(read_*)--> documents --(tokenizer, all cores)--> uint16 stream, [SEP] between documents
         --(PackedBatches)--> (B, T) rows [CLS] ... [SEP], no padding --(mlm.mask_tokens)--> MLM batch

Usage:
    python data.py resolve                          # which corpus / validation file train.py uses by default
    python data.py prepare --corpus ../shared/data/wiki_en_2015/wiki.train.txt.gz \\
                           --vocab data/vocab-8192.txt --out data
    python data.py stats --bin data/wiki.train.bin --vocab data/vocab-8192.txt [--whole-word]  # figures
    python data.py inspect ../shared/data/sst2/dev.tsv                            # read any supported file
    python data.py download sst2 --data-dir data    # also wikitext-103, wikitext-2, ud-ewt, blimp (needs internet)

Expect (2 cores shared with other jobs, so timings are noisy): prepare turns the 32.5M-word wiki corpus
into data/wiki.train.bin, 50.2M tokens (1.55 tokens/word with the 8K vocab), in 86 s; a second run prints
"cached" at once. stats prints "padding fraction of MLM batches: 0.0000" and masked fractions
0.150 / 0.800 / 0.100 / 0.100 (selected; [MASK] / random / unchanged, also with --whole-word);
per 32x64 batch next_batch ~0.1 ms and mask_tokens ~0.15 ms (~0.4 ms whole-word).
"""
import collections
import gzip
import hashlib
import json
import mmap
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

import download
from config import ArgumentParser, UserError, at_least, existing_dir, existing_file
from tokenizer import check_text_file

REPO = Path(__file__).resolve().parent
CLS_ID, SEP_ID, PAD_ID = 2, 3, 0     # as in config.py / tokenizer.py
FORMAT_VERSION = 1                   # bump when the .bin layout changes (invalidates caches)


class DataFormatError(UserError):
    """A malformed row in a data file; the message starts with 'file:line:' (a UserError: one line, no traceback)."""


# ---- readers ----

def _open_lines(path):
    """(line_number, text) for each line of a .txt or .gz file, newline stripped; bad UTF-8 raises
    DataFormatError with the line number."""
    path = Path(path)
    f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    with f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataFormatError(f"{path}:{n}: not valid UTF-8 ({e.reason})") from None


def read_text_documents(path):
    """Documents of a plain-text corpus (.txt or .gz): one paragraph per line, a blank line between
    documents (../shared/data/wiki_en_2015). Yields each document as a list of paragraph strings."""
    doc = []
    for _, line in _open_lines(path):
        line = line.strip()
        if line:
            doc.append(line)
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


_WIKITEXT_HEADING = re.compile(r"^((?:= )+)(.*?)((?: =)+)$")   # '= = Title = =' -> ('= = ', 'Title', ' = =')
_WIKITEXT_UNDO = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")]


def read_wikitext(path):
    """Documents of WikiText raw: ' = Title = ' starts an article (the title is its first paragraph),
    ' = = Section = = ' lines stay as short paragraphs, ' @-@ ' ' @,@ ' ' @.@ ' become '-' ',' '.'.
    Yields each article as a list of paragraph strings."""
    doc = []
    for n, line in _open_lines(path):
        line = line.strip()
        if not line:
            continue
        for a, b in _WIKITEXT_UNDO:
            line = line.replace(a, b)
        if line.startswith("=") and line.endswith("="):
            m = _WIKITEXT_HEADING.match(line)
            if m is None or m.group(1).count("=") != m.group(3).count("=") or not m.group(2).strip():
                raise DataFormatError(f"{path}:{n}: malformed heading {line[:60]!r} (expected ' = Title = ')")
            if m.group(1) == "= " and doc:                # level 1: a new article
                yield doc
                doc = []
            line = m.group(2).strip()
        doc.append(line)
    if doc:
        yield doc


def read_documents(path):
    """read_wikitext for WikiText files (.raw / .tokens), read_text_documents for everything else."""
    p = Path(path)
    raw = p.name[:-3] if p.name.endswith(".gz") else p.name
    return read_wikitext(p) if raw.endswith((".raw", ".tokens")) else read_text_documents(p)


def read_sst2(path):
    """GLUE SST-2 TSV: a header 'sentence<TAB>label', then one 'sentence<TAB>0|1' row per example.
    Returns (sentences: list[str] (stripped), labels: (N,) int64)."""
    sentences, labels = [], []
    for n, line in _open_lines(path):
        if n == 1:
            if line.split("\t") != ["sentence", "label"]:
                raise DataFormatError(f"{path}:1: header must be 'sentence<TAB>label', got {line[:60]!r}")
            continue
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or fields[1].strip() not in ("0", "1"):
            raise DataFormatError(f"{path}:{n}: expected 'sentence<TAB>0|1', got {line[:60]!r}")
        sentences.append(fields[0].strip())
        labels.append(int(fields[1]))
    return sentences, np.array(labels, dtype=np.int64)


def read_conllu(path):
    """CoNLL-U sentences as dicts {"words", "upos", "xpos", "text"}. Multiword-token ranges (3-4) and empty
    nodes (8.1) are skipped, so words are the syntactic words that carry the tags. text = the '# text ='
    comment, or the words joined by spaces."""
    sents, words, upos, xpos, text = [], [], [], [], None

    def flush():
        if words:
            sents.append({"words": list(words), "upos": list(upos), "xpos": list(xpos),
                          "text": text if text is not None else " ".join(words)})
        words.clear(); upos.clear(); xpos.clear()

    for n, line in _open_lines(path):
        if not line.strip():
            flush()
            text = None
            continue
        if line.startswith("#"):
            if line.startswith("# text ="):
                text = line[len("# text ="):].strip()
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise DataFormatError(f"{path}:{n}: expected 10 tab-separated columns, got {len(cols)}")
        if "-" in cols[0] or "." in cols[0]:
            continue                                   # multiword range or empty node: no POS of its own
        if not cols[0].isdigit() or int(cols[0]) != len(words) + 1:
            raise DataFormatError(f"{path}:{n}: word id {cols[0]!r} out of sequence (expected {len(words) + 1})")
        words.append(cols[1]); upos.append(cols[3]); xpos.append(cols[4])
    flush()
    return sents


BLIMP_KEYS = ("sentence_good", "sentence_bad", "field", "UID")


def read_blimp(path, max_pairs=None):
    """One BLiMP paradigm (Warstadt et al. 2020): a JSON object per line with at least sentence_good,
    sentence_bad, field and UID, the same field and UID on every line. Returns the first max_pairs (default
    all) as dicts with those keys plus linguistics_term ("" if absent)."""
    rows = []
    for n, line in _open_lines(path):
        if max_pairs is not None and len(rows) == max_pairs:
            break
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError as e:
            raise DataFormatError(f"{path}:{n}: not a JSON object ({e})") from None
        if not isinstance(r, dict) or any(not isinstance(r.get(k), str) or not r[k].strip() for k in BLIMP_KEYS):
            raise DataFormatError(f"{path}:{n}: a BLiMP pair needs the text fields {', '.join(BLIMP_KEYS)}")
        if rows and (r["field"], r["UID"]) != (rows[0]["field"], rows[0]["UID"]):
            raise DataFormatError(f"{path}:{n}: field/UID {r['field']}/{r['UID']} differ from line 1's "
                                  f"{rows[0]['field']}/{rows[0]['UID']} (one paradigm per file)")
        rows.append({**{k: r[k] for k in BLIMP_KEYS}, "linguistics_term": str(r.get("linguistics_term", ""))})
    return rows


# ---- prepare: corpus -> uint16 token stream ----

_TOK = None    # the worker process's tokenizer (set by _init_worker)


def _init_worker(vocab_file):
    global _TOK
    from tokenizer import WordPieceTokenizer
    _TOK = WordPieceTokenizer.load(vocab_file)


def _encode_docs(docs):
    """Worker: documents (lists of paragraphs) -> (uint16 stream with [SEP] after each document, words)."""
    paras = [p for d in docs for p in d]
    enc = _TOK.encode_batch(paras, add_special_tokens=False, num_workers=1)
    out, i = [], 0
    for d in docs:
        for _ in d:
            out.extend(enc[i])
            i += 1
        out.append(_TOK.sep_id)
    n_words = sum(len(p.split()) for p in paras)
    return np.array(out, dtype=np.uint16), n_words


def prepared_paths(corpus, out_dir):
    """Where prepare() writes a corpus: <out_dir>/<name>.bin and .json, name = file name without
    .gz/.txt/.raw (wiki.train.txt.gz -> wiki.train)."""
    name = Path(corpus).name
    for ext in (".gz", ".txt", ".raw", ".tokens"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return Path(out_dir) / f"{name}.bin", Path(out_dir) / f"{name}.json"


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _text_size(path):
    """Uncompressed size in bytes (for .gz from the gzip trailer, exact below 4 GiB)."""
    path = Path(path)
    if path.suffix == ".gz":
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return int.from_bytes(f.read(4), "little")
    return path.stat().st_size


def _cached_meta(corpus, json_path, bin_path, vocab_hash):
    """The stored meta if it describes this corpus and vocab and the .bin is complete, else None."""
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    st = corpus.stat()
    src = meta.get("source", {})
    if (meta.get("format_version") != FORMAT_VERSION or meta.get("vocab_hash") != vocab_hash
            or src.get("size") != st.st_size or not bin_path.is_file()
            or bin_path.stat().st_size != 2 * meta.get("n_tokens", -1)):
        return None
    if src.get("mtime_ns") != st.st_mtime_ns and src.get("sha256") != _file_sha256(corpus):
        return None                                    # same size, new content
    return meta


def prepare(corpus, vocab_file, out_dir, num_workers=None, docs_per_task=32, verbose=True):
    """Tokenize a corpus into <out_dir>/<name>.bin (uint16 ids; each document's pieces then [SEP]) and
    <name>.json (vocab hash, token / document / word counts, corpus size, mtime and sha256).
    Cached: returns the stored meta at once when corpus and vocab are unchanged. Both files are written
    to .part first and renamed, the .json last, so an interrupted run never looks complete.
    num_workers: processes (default: all cores). Returns the meta dict (plus "bin": path)."""
    from tqdm import tqdm
    from tokenizer import WordPieceTokenizer
    corpus, out_dir = Path(corpus), Path(out_dir)
    for what, path in (("corpus", corpus), ("vocab", Path(vocab_file))):
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {path} does not exist.")
    tok = WordPieceTokenizer.load(vocab_file)
    if tok.vocab_size > 65536:
        raise ValueError(f"vocab_size {tok.vocab_size} does not fit in uint16.")
    bin_path, json_path = prepared_paths(corpus, out_dir)
    vocab_hash = tok.vocab_hash()
    meta = _cached_meta(corpus, json_path, bin_path, vocab_hash)
    if meta is not None:
        if verbose:
            print(f"cached: {bin_path} ({meta['n_tokens']:,} tokens) matches {corpus} and {vocab_file}")
        return {**meta, "bin": str(bin_path)}
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file; pass a folder for the token files.")
    check_text_file(corpus)                             # bad UTF-8 (file:line) or no text: before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    num_workers = num_workers or os.cpu_count() or 1
    t0 = time.time()
    st = corpus.stat()
    n_tokens = n_docs = n_words = n_unk = 0
    part = bin_path.with_name(f"{bin_path.name}.{os.getpid()}.part")   # private: two runs never mix
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(num_workers, initializer=_init_worker, initargs=(str(vocab_file),))
    try:
        with open(part, "wb") as f, tqdm(total=_text_size(corpus), unit="B", unit_scale=True,
                                         desc=f"prepare {corpus.name}", disable=not verbose) as bar:
            pending = collections.deque()              # ordered, at most 4 tasks per worker in flight

            def drain_one():
                nonlocal n_tokens, n_words, n_unk
                res, nbytes = pending.popleft()
                arr, words = res.get()
                f.write(arr.tobytes())
                n_tokens += len(arr); n_words += words; n_unk += int(np.count_nonzero(arr == tok.unk_id))
                bar.update(nbytes)

            batch, nbytes = [], 0
            for doc in read_documents(corpus):
                batch.append(doc)
                nbytes += sum(len(p) + 1 for p in doc) + 1
                n_docs += 1
                if len(batch) == docs_per_task:
                    pending.append((pool.apply_async(_encode_docs, (batch,)), nbytes))
                    batch, nbytes = [], 0
                    if len(pending) >= 4 * num_workers:
                        drain_one()
            if batch:
                pending.append((pool.apply_async(_encode_docs, (batch,)), nbytes))
            while pending:
                drain_one()
        if n_words == 0:
            raise DataFormatError(f"{corpus}: no word survives BERT's text cleaning (only control characters?); "
                                  f"pass a corpus with text.")
    except BaseException:
        part.unlink(missing_ok=True)                   # a broken run leaves nothing behind
        raise
    finally:
        pool.terminate()
        pool.join()
    os.replace(part, bin_path)
    meta = {
        "format_version": FORMAT_VERSION, "dtype": "uint16", "vocab_file": str(vocab_file),
        "vocab_hash": vocab_hash, "vocab_size": tok.vocab_size, "sep_id": tok.sep_id,
        "n_tokens": n_tokens, "n_documents": n_docs, "n_words": n_words, "n_unk": n_unk,
        "tokens_per_word": round((n_tokens - n_docs) / max(n_words, 1), 4),
        "source": {"path": str(corpus.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                   "sha256": _file_sha256(corpus)},
        "seconds": round(time.time() - t0, 1), "num_workers": num_workers,
    }
    tmp = json_path.with_name(f"{json_path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    os.replace(tmp, json_path)
    if verbose:
        print(f"wrote {bin_path}: {n_tokens:,} tokens, {n_docs:,} documents, {n_words:,} words "
              f"({meta['tokens_per_word']} tokens/word, {n_unk:,} [UNK]) in {meta['seconds']} s "
              f"with {num_workers} workers")
    return {**meta, "bin": str(bin_path)}


def load_corpus(corpus=None, valid=None, vocab=None, cache_dir=None, data_dir=None, log=print, num_workers=None,
                expect_vocab=(None, None), seq_len=None):
    """What train.py calls. Resolve the corpus (download.resolve_corpus; with no corpus given and none found,
    download WikiText-103 into <repo>/data), get the vocab (vocab, default <cache_dir>/vocab-8192.txt; an
    8192-piece one is trained on the corpus if the file is missing), and prepare the token files (cached in
    cache_dir, default <repo>/data). -> (tokenizer, train tokens (memmap), validation tokens or None, info:
    the files used).
    seq_len: the rows' length T. Then a corpus too short for two rows is refused (before any work when its
    size in bytes, a bound on its token count, already says so), and with no validation file the end of the
    stream is held out as one (holdout_split: 1/200 of it, at least 40 T tokens).
    expect_vocab: (file, sha256) of the vocab a resumed run started with; another one is refused at once."""
    from tokenizer import WordPieceTokenizer
    try:
        train_path, valid_path, desc = download.resolve_corpus(corpus, data_dir)
    except FileNotFoundError:
        if corpus is not None:
            raise
        log("no default corpus found: downloading wikitext-103 into data/")
        download.download("wikitext-103", REPO / "data")
        train_path, valid_path, desc = download.resolve_corpus(None, REPO / "data")
    if valid is not None:
        valid_path = Path(valid)
        if not valid_path.is_file():
            raise UserError(f"validation file {valid_path} does not exist.")
    log(desc)
    need = 0 if seq_len is None else 2 * (seq_len - 2) + (40 * seq_len if valid_path is None else 0)

    def refuse(n_tokens, what):
        raise UserError(f"{train_path} has {n_tokens:,} {what}, fewer than the {need:,} tokens that two rows of "
                        f"T={seq_len}{' and a held-out stream' if valid_path is None else ''} need; pass a larger "
                        f"--corpus{' or a --valid file' if valid_path is None else ''}.")
    if Path(train_path).suffix != ".gz" and Path(train_path).stat().st_size < need:
        check_text_file(train_path)                     # empty or not UTF-8: say that first
        refuse(Path(train_path).stat().st_size, "bytes")     # a token covers at least one byte of text
    cache = Path(cache_dir) if cache_dir else REPO / "data"
    vocab_file = Path(vocab) if vocab else cache / "vocab-8192.txt"
    started_with, want_hash = expect_vocab
    if want_hash is not None and (not vocab_file.is_file() or WordPieceTokenizer.load(vocab_file).vocab_hash() != want_hash):
        raise UserError(f"{vocab_file} is {'missing' if not vocab_file.is_file() else 'not the vocab this run started with'}"
                        f" ({started_with}); resume with the run's own --vocab, unchanged.")
    if vocab_file.is_file():
        tok = WordPieceTokenizer.load(vocab_file)
        log(f"vocab {vocab_file} ({tok.vocab_size} tokens)")
    else:
        check_text_file(train_path)                     # before a minute of vocab training
        log(f"training an 8192-piece WordPiece vocab on {train_path} -> {vocab_file}")
        paragraphs = (p for doc in read_documents(train_path) for p in doc)
        tok = WordPieceTokenizer.train(paragraphs, vocab_size=8192)
        vocab_file.parent.mkdir(parents=True, exist_ok=True)
        tok.save(vocab_file)
    meta = prepare(train_path, vocab_file, cache, num_workers)
    tokens, _ = load_tokens(meta["bin"])
    if len(tokens) < need:
        refuse(len(tokens), "tokens")
    valid_tokens = None
    if valid_path is not None:
        vmeta = prepare(valid_path, vocab_file, cache, num_workers)
        valid_tokens, _ = load_tokens(vmeta["bin"])
    elif seq_len is not None:                           # hold out the end of the training stream
        tokens, valid_tokens = holdout_split(tokens, max(len(tokens) // 200, 40 * seq_len))
    info = {"corpus": str(Path(train_path).resolve()), "valid": str(Path(valid_path).resolve()) if valid_path else None,
            "vocab_file": str(vocab_file.resolve()), "vocab_hash": tok.vocab_hash()}
    return tok, tokens, valid_tokens, info


def holdout_split(tokens, n_heldout):
    """(tokens[:-n], tokens[-n:]): a validation stream cut from the end of the training stream, for a
    corpus without a validation file (views of the memmap, no copy)."""
    if not 0 < n_heldout < len(tokens):
        raise ValueError(f"n_heldout={n_heldout} must be in (0, {len(tokens)}).")
    return tokens[:-n_heldout], tokens[-n_heldout:]


def load_tokens(bin_path, tok=None):
    """(tokens: np.memmap uint16 (N,), meta dict) for a file written by prepare(). A .bin without its .json,
    of another format version or size, or (with tok) made with another vocab raises UserError."""
    bin_path = Path(bin_path)
    json_path = bin_path.with_suffix(".json")
    if not bin_path.is_file() or not json_path.is_file():
        raise FileNotFoundError(f"{bin_path if not bin_path.is_file() else json_path} does not exist; make the token "
                                f"files with `python data.py prepare`.")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        n_tokens = int(meta["n_tokens"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{json_path} is not the meta file of a prepared .bin ({e}); prepare the corpus again.") from None
    if meta.get("format_version") != FORMAT_VERSION or bin_path.stat().st_size != 2 * n_tokens:
        raise UserError(f"{bin_path} does not match {json_path.name} (format {meta.get('format_version')}, "
                        f"{bin_path.stat().st_size} bytes for {n_tokens} tokens); prepare the corpus again.")
    if tok is not None and meta.get("vocab_hash") != tok.vocab_hash():
        raise UserError(f"{bin_path} was made with {meta.get('vocab_file')} ({meta.get('vocab_size')} tokens), not "
                        f"this vocab ({tok.vocab_size} tokens); pass its own --vocab or prepare it again.")
    return np.memmap(bin_path, dtype=np.uint16, mode="r"), meta


def advise_random(tokens):
    """Tell the kernel the token file is read at random rows: no readahead. Without it, each row's page fault
    also reads the next 32-128 KB in, and 40 micro-batches of 32 random rows add 60 MB to the RSS
    (measured) before drop_resident_pages gives them back."""
    mm = getattr(tokens, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)


def drop_resident_pages(tokens):
    """Tell the kernel this process is done with the token file's pages read so far: they stay in the page
    cache, but leave our RSS (random rows from a 100 MB memmap would otherwise all end up resident)."""
    mm = getattr(tokens, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


# ---- MLM batches: full-sentences packing ----

class PackedBatches:
    """Rows of exactly T tokens, [CLS] + T-2 consecutive stream tokens + [SEP], as in RoBERTa's
    FULL-SENTENCES packing (Liu et al. 2019, §4.2): rows cross document boundaries (the stream has a
    [SEP] between documents) and no slot is padding. Each epoch cuts the stream at a random offset
    in [0, T-2) into n_rows = (N - offset) // (T-2) rows and visits them in a random order; both come
    from default_rng([seed, epoch]), so the batches are a function of (seed, rows served) and
    state_dict() / load_state_dict() resume exactly. tokens: (N,) ints (np.memmap from load_tokens)."""

    def __init__(self, tokens, seq_len, batch_size, cls_id=CLS_ID, sep_id=SEP_ID, seed=0):
        self.tokens, self.T, self.B = tokens, int(seq_len), int(batch_size)
        self.cls_id, self.sep_id, self.seed = cls_id, sep_id, int(seed)
        self.span = self.T - 2                                   # stream tokens per row
        if self.span < 1 or len(tokens) < 2 * self.span:
            raise ValueError(f"need seq_len >= 3 and at least {2 * self.span} tokens; got seq_len={seq_len}, "
                             f"{len(tokens)} tokens.")
        self.epoch, self.pos = 0, 0                              # rows served in the current epoch
        self._set_epoch(0)
        advise_random(tokens)                                    # random rows: no readahead into the RSS

    def _set_epoch(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(0, self.span))
        n_rows = (len(self.tokens) - offset) // self.span
        self._starts = offset + self.span * rng.permutation(n_rows)   # (n_rows,) start of each row
        self.epoch = epoch

    @property
    def rows_per_epoch(self):
        return len(self._starts)

    def next_batch(self):  # -> (B, T) int64
        """The next B rows; an epoch boundary inside a batch continues into the next epoch."""
        starts = []
        need = self.B
        while need:
            take = self._starts[self.pos:self.pos + need]
            starts.append(take)
            self.pos += len(take)
            need -= len(take)
            if self.pos == len(self._starts):
                self._set_epoch(self.epoch + 1)
                self.pos = 0
        starts = np.concatenate(starts)                           # (B,)
        out = np.empty((self.B, self.T), dtype=np.int64)          # (B, T)
        out[:, 0] = self.cls_id
        out[:, -1] = self.sep_id
        out[:, 1:-1] = self.tokens[starts[:, None] + np.arange(self.span)]   # (B, T-2) gathered slices
        return out

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch, "pos": self.pos, "seq_len": self.T,
                "batch_size": self.B, "n_tokens": len(self.tokens)}

    def load_state_dict(self, d):
        if (d["seq_len"], d["n_tokens"]) != (self.T, len(self.tokens)):
            raise ValueError(f"state is for seq_len={d['seq_len']} over {d['n_tokens']} tokens; this loader has "
                             f"seq_len={self.T} over {len(self.tokens)} tokens.")
        self.seed = int(d["seed"])
        self._set_epoch(int(d["epoch"]))
        self.pos = int(d["pos"])


def heldout_batches(tokens, seq_len, batch_size, n_batches, cls_id=CLS_ID, sep_id=SEP_ID):
    """A fixed list of n_batches (B, T) int64 arrays packed like PackedBatches, from rows spread evenly
    over the stream (offset 0, no randomness), so every evaluation sees the same tokens."""
    span = seq_len - 2
    n_avail, n_need = len(tokens) // span, batch_size * n_batches
    if n_avail < n_need:
        raise ValueError(f"{len(tokens)} tokens give {n_avail} rows of {seq_len}; {n_batches} batches of "
                         f"{batch_size} need {n_need}. Ask for fewer batches.")
    starts = span * (np.arange(n_need) * (n_avail // n_need))   # (n_need,)
    rows = np.empty((n_need, seq_len), dtype=np.int64)          # (n_need, T)
    rows[:, 0], rows[:, -1] = cls_id, sep_id
    rows[:, 1:-1] = tokens[starts[:, None] + np.arange(span)]
    return [rows[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]


# ---- padded batches (SST-2, POS) ----

def pad_batch(seqs, pad_id=PAD_ID):
    """Pad sequences to the longest: ids[b, :len_b] = seqs[b], the rest pad_id (use pad_id=-100 for labels).
    seqs: list of B int sequences -> (ids (B, Tmax) int64, attention_mask (B, Tmax) int64, 1 = real token)"""
    lens = np.array([len(s) for s in seqs], dtype=np.int64)     # (B,)
    Tmax = int(lens.max()) if len(seqs) else 0
    ids = np.full((len(seqs), Tmax), pad_id, dtype=np.int64)    # (B, Tmax)
    mask = (np.arange(Tmax)[None, :] < lens[:, None]).astype(np.int64)   # (B, Tmax)
    if len(seqs):
        ids[mask.astype(bool)] = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
    return ids, mask


def bucket_batches(lengths, batch_size, rng=None, pool_batches=50):
    """Index arrays of batches with similar lengths, so padding stays small. With rng: shuffle, sort by
    length inside pools of pool_batches * batch_size examples, cut into batches, shuffle the batches
    (training). Without rng: the examples in order of length (evaluation; deterministic)."""
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    perm = rng.permutation(len(lengths))
    pool = pool_batches * batch_size
    batches = []
    for i in range(0, len(perm), pool):
        chunk = perm[i:i + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]


# ---- command line ----

def _cmd_inspect(args):
    p = Path(args.file)
    name = p.name[:-3] if p.name.endswith(".gz") else p.name
    if name.endswith(".tsv"):
        s, y = read_sst2(p)
        print(f"{p}: {len(s):,} sentences, labels 0/1 = {int((y == 0).sum()):,}/{int((y == 1).sum()):,}")
    elif name.endswith(".jsonl"):
        rows = read_blimp(p)
        print(f"{p}: {len(rows):,} BLiMP pairs, paradigm {rows[0]['UID'] if rows else '-'} "
              f"({rows[0]['field'] if rows else '-'})")
    elif name.endswith(".conllu"):
        sents = read_conllu(p)
        print(f"{p}: {len(sents):,} sentences, {sum(len(s['words']) for s in sents):,} words")
    else:
        n_docs = n_par = n_words = 0
        for d in read_documents(p):
            n_docs += 1; n_par += len(d); n_words += sum(len(x.split()) for x in d)
        print(f"{p}: {n_docs:,} documents, {n_par:,} paragraphs, {n_words:,} words")


def _cmd_stats(args):
    import mlm
    from tokenizer import WordPieceTokenizer
    tok = WordPieceTokenizer.load(args.vocab)
    tokens, meta = load_tokens(args.bin, tok)
    print(f"{args.bin}: {meta['n_tokens']:,} tokens, {meta['n_documents']:,} documents, "
          f"{meta['tokens_per_word']} tokens/word")
    loader = PackedBatches(tokens, args.seq_len, args.batch_size, tok.cls_id, tok.sep_id, seed=0)
    rng = np.random.default_rng(0)
    n_pad = n_all = 0
    sel = msk = rnd = keep = cand = 0
    t_batch = t_mask = 0.0
    for _ in range(args.batches):
        t0 = time.perf_counter()
        x = loader.next_batch()
        t1 = time.perf_counter()
        w = mlm.word_ids_from_ids(x, tok.is_continuation, tok.special_ids) if args.whole_word else None
        inp, labels = mlm.mask_tokens(x, rng, tok.vocab_size, tok.special_ids, whole_word=args.whole_word,
                                      word_ids=w, mask_id=tok.mask_id)
        t2 = time.perf_counter()
        t_batch += t1 - t0; t_mask += t2 - t1
        n_pad += int((x == tok.pad_id).sum()); n_all += x.size
        s = labels != -100
        cand += int((~np.isin(x, tok.special_ids)).sum()); sel += int(s.sum())
        msk += int((inp[s] == tok.mask_id).sum()); keep += int((inp[s] == x[s]).sum())
        rnd += int(((inp[s] != x[s]) & (inp[s] != tok.mask_id)).sum())
    print("first row:", tok.decode(loader.next_batch()[0].tolist())[:200])
    print(f"{args.batches} batches of {args.batch_size}x{args.seq_len}: next_batch {1e3 * t_batch / args.batches:.3f} ms, "
          f"mask_tokens {1e3 * t_mask / args.batches:.3f} ms")
    print(f"masking: selected {sel / cand:.4f} of non-special tokens; of those [MASK] {msk / sel:.4f}, "
          f"random {rnd / sel:.4f}, unchanged {keep / sel:.4f}")
    print(f"padding fraction of MLM batches: {n_pad / n_all:.4f}")


def main(argv=None):
    p = ArgumentParser(description="Mini-BERT data: download, prepare, inspect, stats, resolve.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="download a dataset (needs internet)")
    d.add_argument("name", choices=sorted(download.DATASETS))
    d.add_argument("--data-dir", default="data")
    d.add_argument("--base-url", default=None, help="mirror to fetch the files from instead")
    q = sub.add_parser("prepare", help="tokenize a corpus into a uint16 .bin + .json (cached)")
    q.add_argument("--corpus", required=True, type=existing_file)
    q.add_argument("--vocab", required=True, type=existing_file)
    q.add_argument("--out", default="data")
    q.add_argument("--num-workers", type=at_least(1), default=None)
    i = sub.add_parser("inspect", help="read a corpus / .tsv / .conllu / BLiMP .jsonl file and print counts")
    i.add_argument("file", type=existing_file)
    s = sub.add_parser("stats", help="packing and masking figures for a prepared .bin")
    s.add_argument("--bin", required=True, type=existing_file)
    s.add_argument("--vocab", required=True, type=existing_file)
    s.add_argument("--seq-len", type=at_least(3), default=64, help="row length T ([CLS] + T-2 tokens + [SEP])")
    s.add_argument("--batch-size", type=at_least(1), default=32)
    s.add_argument("--batches", type=at_least(1), default=200)
    s.add_argument("--whole-word", action="store_true", help="whole-word masking")
    r = sub.add_parser("resolve", help="print the corpus and validation file train.py would use")
    r.add_argument("--corpus", default=None, type=existing_file)
    r.add_argument("--data-dir", default=None, type=existing_dir)
    args = p.parse_args(argv)
    try:
        if args.cmd == "download":
            download.download(args.name, args.data_dir, args.base_url)
        elif args.cmd == "prepare":
            prepare(args.corpus, args.vocab, args.out, args.num_workers)
        elif args.cmd == "inspect":
            _cmd_inspect(args)
        elif args.cmd == "stats":
            _cmd_stats(args)
        elif args.cmd == "resolve":
            print(download.resolve_corpus(args.corpus, args.data_dir)[2])
    except (ValueError, FileNotFoundError) as e:        # UserError, DataFormatError, DownloadError among them
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
