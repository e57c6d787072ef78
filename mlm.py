"""Masked language modelling: the loss (and its gradient), BERT's 80/10/10 token masking, and fill-mask.

Usage:
    python mlm.py            # a tiny demo: masks a random batch and prints the loss of uniform logits
    python mlm.py --checkpoint runs/mini "the capital of france is [MASK] ."    # the top 5 pieces per [MASK]
    python mlm.py --checkpoint runs/mini --top-k 10 "he [MASK] to the store ." "she was [MASK] in 1950 ."

Expect: the loss of uniform logits equals ln(V) exactly. With --checkpoint: the pieces of the input (a
literal [MASK] stays one token), then for each [MASK] its top-k pieces with their probabilities, highest
first; LEARNING.md (phase 5) shows the output of the default run.
"""
import json
from pathlib import Path

import numpy as np

from config import ArgumentParser, UserError, at_least, cli, existing_file

IGNORE_INDEX = -100   # labels equal to this are not scored (PyTorch's ignore_index)
BLOCK_ELEMENTS = 1 << 17   # mlm_loss works on blocks of rows of about this many logits (512 KB: in the L2 cache)


# ---- loss ----

def mlm_loss(logits, labels, overwrite=False):
    """loss = -1/N sum_{i: y_i != -100} log softmax(logits_i)[y_i]   (N = number of scored rows)
    logits: (B, T, V) or (N, V); labels: (B, T) or (N,) ints, -100 = not scored.
    Returns (loss, dlogits) with dlogits = (probs - onehot(y)) / N on scored rows and 0 elsewhere.
    overwrite=True (the training step, which needs the logits no more): when every row is scored, dlogits is
    computed in the logits array itself: no second (N, V) array, and two passes over it fewer.
    Derivation: DERIVATIONS.md#softmax-cross-entropy"""
    V = logits.shape[-1]
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels have shape {labels.shape} but logits have {logits.shape}; "
                         f"labels must match logits without the last (vocab) axis.")
    z = logits.reshape(-1, V)                                       # (M, V)
    y = labels.reshape(-1)                                          # (M,)
    scored = y != IGNORE_INDEX
    n = int(scored.sum())
    if n == 0:
        return 0.0, np.zeros_like(logits)
    if np.any((y[scored] < 0) | (y[scored] >= V)):
        raise ValueError(f"labels must be in [0, {V}) or {IGNORE_INDEX}; got values outside that range.")
    all_scored = n == y.size                                        # the (N, V) training path: no gather
    rows = slice(None) if all_scored else np.flatnonzero(scored)    # (n,)
    zs, ys = z[rows], y[rows]                                       # (n, V), (n,)  (a view when all_scored)
    probs = zs if (overwrite and all_scored) else np.empty_like(zs)  # (n, V)
    logp_y = np.empty(n, np.float64)                                # (n,)
    ones = np.ones(V, zs.dtype)
    step = max(1, BLOCK_ELEMENTS // V)                              # rows per block: the 5 passes stay in L2
    for i in range(0, n, step):
        zb, pb, yb, r = zs[i:i + step], probs[i:i + step], ys[i:i + step], np.arange(min(step, n - i))
        zmax = zb.max(axis=-1)                                      # (b,)  log-sum-exp shift
        z_y = zb[r, yb] - zmax                                      # (b,)  the label's logit, shifted
        np.subtract(zb, zmax[:, None], out=pb)
        np.exp(pb, out=pb)
        sumexp = pb @ ones                                          # (b,)  row sums as a BLAS GEMV
        logp_y[i:i + step] = z_y - np.log(sumexp)                   # log p(y) = z_y - max - log sum exp
        pb *= (1.0 / (n * sumexp))[:, None]                         # probs / n
        pb[r, yb] -= 1.0 / n                                        # (probs - onehot(y)) / n
    loss = -logp_y.mean()
    if all_scored:
        return float(loss), probs.reshape(logits.shape)
    dz = np.zeros_like(z)                                           # (M, V): unscored rows get 0
    dz[rows] = probs
    return float(loss), dz.reshape(logits.shape)


def log_prior(tokens, vocab_size, special_ids, chunk=1 << 20):
    """log p(y) of the MLM labels, the unigram frequencies of the non-special tokens of a corpus, centred:
        bias[v] = log((count[v] + 0.5) / sum_u (count[u] + 0.5)) - mean_v(...)   (specials count 0: never labels)
    The starting value of the decoder bias `mlm.bias` ("init the output bias to the log prior", Karpathy 2019,
    "A Recipe for Training Neural Networks"): at step 0 the model predicts the unigram distribution instead of
    the uniform one (loss ~6.7 instead of ln 8192 = 9.0 nats), so the first thousand steps are not spent moving
    8,192 biases by at most lr per step, and the gradient goes to using the context from the start.
    tokens: (N,) ints (np.memmap of a .bin) -> (V,) float32"""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for i in range(0, len(tokens), chunk):     # 1M-token chunks: bincount's int64 copy is 8 MB, not 8 bytes a token
        counts += np.bincount(np.asarray(tokens[i:i + chunk]), minlength=vocab_size)[:vocab_size]
    counts[[s for s in special_ids if 0 <= s < vocab_size]] = 0
    logp = np.log(counts + 0.5) - np.log(counts.sum() + 0.5 * vocab_size)
    return (logp - logp.mean()).astype(np.float32)


# ---- masking ----

def word_ids_from_ids(ids, is_continuation, special_ids):  # (B, T) -> (B, T)
    """word_ids[b, t] = index (within row b) of the word that token t belongs to; -1 for special tokens.
    A word is a piece that does not start with '##' followed by its '##' continuations (tok.is_continuation).
    A continuation right after a special token (a word cut by packing, or [CLS] ##ing) starts a new word.
    ids: (B, T) or (T,) ints; is_continuation: (V,) bool -> word_ids: same shape, int64"""
    ids = np.asarray(ids)
    special = np.isin(ids, special_ids)
    cont = np.asarray(is_continuation, dtype=bool)[ids] & ~special
    prev_special = np.ones_like(special)
    prev_special[..., 1:] = special[..., :-1]
    starts = ~special & (~cont | prev_special)                      # first piece of each word
    wid = np.cumsum(starts, axis=-1) - 1                            # (B, T)
    return np.where(special, -1, wid).astype(np.int64)


def mask_tokens(ids, rng, vocab_size, special_ids, mask_prob=0.15, whole_word=False, word_ids=None,
                mask_id=4):
    """BERT's dynamic masking (Devlin et al. 2019, §3.1): select each non-special token with probability
    mask_prob; a selected token becomes [MASK] 80% of the time, a random non-special token 10%, and stays
    unchanged 10%. labels = original id where selected, -100 elsewhere (so only selected tokens are scored).
    whole_word: select words instead of tokens (all pieces of a word together; word_ids from
    word_ids_from_ids); the 80/10/10 choice is still made per piece, as in BERT's whole-word-masking code.
    Special ids (which must include [PAD]) are never selected. Call once per batch: a fresh mask each time.
    ids: (B, T) or (T,) ints; word_ids: same shape, -1 = not a word -> (input_ids, labels), both int64"""
    ids = np.asarray(ids)
    shape = ids.shape
    x = ids.reshape(-1, shape[-1]).astype(np.int64)                 # (B, T)
    candidate = ~np.isin(x, special_ids)
    if whole_word:
        if word_ids is None:
            raise ValueError("whole_word=True needs word_ids (see word_ids_from_ids).")
        w = np.asarray(word_ids).reshape(x.shape)                   # (B, T)
        n_words = int(w.max()) + 1 if w.size else 0
        u = rng.random((x.shape[0], max(n_words, 1)))               # (B, W) one draw per word
        selected = candidate & (w >= 0) & (u[np.arange(x.shape[0])[:, None], np.maximum(w, 0)] < mask_prob)
    else:
        selected = candidate & (rng.random(x.shape) < mask_prob)
    r = rng.random(x.shape)
    to_mask = selected & (r < 0.8)                                  # 80%: [MASK]
    to_random = selected & (r >= 0.8) & (r < 0.9)                   # 10%: random token; 10%: unchanged
    input_ids = x.copy()
    input_ids[to_mask] = mask_id
    specials = sorted({int(s) for s in special_ids if 0 <= s < vocab_size})
    k = rng.integers(0, vocab_size - len(specials), size=int(to_random.sum()))  # k-th non-special id:
    for s in specials:                                              # step over each special id below it
        k += k >= s
    input_ids[to_random] = k
    labels = np.where(selected, x, IGNORE_INDEX)
    return input_ids.reshape(shape), labels.reshape(shape)


# ---- fill-mask ----

def fill_mask(model, tok, text, top_k=5):
    """p = softmax(logits at each [MASK] of text); its top_k pieces. All the [MASK]s are predicted in one
    forward (eval mode), each one seeing the others as [MASK].
    -> (ids of the input with [CLS]/[SEP], [(position, [(piece, probability)] * top_k)] per [MASK])"""
    ids = tok.encode_keep_special(text)
    T = model.config.max_position_embeddings
    if tok.mask_id not in ids:
        hint = " (write it in capitals, with its brackets)" if "[mask]" in text.lower() else ""
        raise ValueError(f"no [MASK] in {text!r}{hint}; put [MASK] where a piece should be predicted, "
                         f"e.g. \"the capital of france is [MASK] .\"")
    if len(ids) > T:
        raise ValueError(f"the text is {len(ids)} pieces with [CLS]/[SEP] but the model reads at most T={T}; "
                         f"shorten it.")
    ids = np.array([ids])                                           # (1, T')
    mlm_mask = ids == tok.mask_id                                   # (1, T')
    logits, _ = model.forward(ids, mlm_mask=mlm_mask)               # (N, V): the [MASK] rows only
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)                              # (N, V) softmax over the vocabulary
    results = []
    for pos, row in zip(np.flatnonzero(mlm_mask[0]), p):
        top = np.argsort(-row, kind="stable")[:top_k]               # (top_k,) highest first
        results.append((int(pos), [(tok.ids_to_tokens[i], float(row[i])) for i in top]))
    return ids[0].tolist(), results


# ---- pseudo-log-likelihood ----

def pll_batches(lengths, max_tokens):
    """Cut rows of the given lengths, already sorted ascending, into consecutive batches of at most max_tokens
    padded tokens (rows x the longest row; a row longer than max_tokens gets a batch of its own).
    lengths: (M,) ints, non-decreasing -> list of (start, stop) row ranges covering [0, M)"""
    out, j, M = [], 0, len(lengths)
    while j < M:
        k = min(M, j + max(1, max_tokens // int(lengths[j])))        # as many rows as if all were this short
        k = min(k, j + max(1, max_tokens // int(lengths[k - 1])))     # fewer, so that the longest fits too
        out.append((j, k))
        j = k
    return out


def pseudo_log_likelihood(model, seqs, mask_id, pad_id=0, max_tokens=2048, map_fn=None, progress=False):
    """Pseudo-log-likelihood of each sequence (Salazar et al. 2020, "Masked Language Model Scoring", §2.1):
        PLL(w) = sum_{i=1..n} log p(w_i | w with w_i replaced by [MASK])
    where w_1..w_n are the pieces between [CLS] and [SEP] (those two are not scored). A sequence of n pieces
    becomes n copies, copy i with piece i masked; the model reads each copy once, and with mlm_mask the MLM
    head runs on the masked position only. log p = z_y - max(z) - log sum_v exp(z_v - max(z)) (log-sum-exp).
    Copies of all sequences are sorted by length and cut into batches of about max_tokens padded tokens
    (pll_batches), padding masked out by attention_mask, so a score does not depend on its batch.
    Identical sequences are scored once, so they get exactly the same number (a tie stays a tie).
    map_fn(f, batches) -> [f(batch)]: runs the batches, e.g. workers.Workers(n).map (default: in turn).
    seqs: list of S id sequences, each [CLS] w_1 .. w_n [SEP] (n >= 1, length <= T)
    -> (S,) float64 PLLs (<= 0; the per-piece terms are summed in float64)"""
    from tqdm import tqdm
    first = {}                                                      # sequence -> its row among the unique ones
    row_of = np.array([first.setdefault(tuple(int(i) for i in s), len(first)) for s in seqs], dtype=np.int64)  # (S,)
    seqs = list(first)                                              # the unique sequences, in order of first use
    lens = np.array([len(s) for s in seqs], dtype=np.int64)         # (U,)
    if len(seqs) and lens.min() < 3:
        raise ValueError("every sequence needs [CLS], at least one piece, and [SEP].")
    seq_of = np.repeat(np.arange(len(seqs)), lens - 2)              # (M,) copy -> its sequence
    pos_of = np.concatenate([np.arange(1, n - 1) for n in lens]) if len(seqs) else seq_of   # (M,) masked position
    order = np.argsort(lens[seq_of], kind="stable")                 # copies by length: little padding
    seq_of, pos_of = seq_of[order], pos_of[order]
    padded = np.full((len(seqs), int(lens.max(initial=0))), pad_id, dtype=np.int64)   # (U, Tmax)
    for k, seq in enumerate(seqs):
        padded[k, :lens[k]] = seq

    def score(batch):  # rows [a, b) of the sorted copies -> (R,) log p of each masked piece
        a, b = batch
        s, pos = seq_of[a:b], pos_of[a:b]                           # (R,)
        R, T = b - a, int(lens[s].max())
        rows = np.arange(R)
        ids = padded[s, :T]                                         # (R, T) a copy (fancy index)
        attention_mask = np.arange(T)[None, :] < lens[s][:, None]   # (R, T) 1 = real token
        y = ids[rows, pos]                                          # (R,) the pieces to predict
        ids[rows, pos] = mask_id
        mlm_mask = np.zeros((R, T), dtype=bool)
        mlm_mask[rows, pos] = True                                  # one row of logits per copy, in row order
        z, _ = model.forward(ids, attention_mask=attention_mask, mlm_mask=mlm_mask)   # (R, V)
        zmax = z.max(axis=-1, keepdims=True)                        # (R, 1) log-sum-exp shift
        lse = np.log(np.exp(z - zmax).sum(axis=-1))                 # (R,)
        return z[rows, y] - zmax[:, 0] - lse                        # (R,) log p(w_i | copy i)

    map_fn = map_fn or (lambda f, xs: [f(x) for x in xs])
    batches = pll_batches(lens[seq_of], max_tokens)
    pll = np.zeros(len(seqs), dtype=np.float64)                     # (U,)
    with tqdm(total=len(seq_of), desc="pseudo-log-likelihood", unit="copy", disable=not progress,
              leave=False) as bar:
        for i in range(0, len(batches), 8):                         # 8 batches at a time over map_fn's workers
            for (a, b), logp in zip(batches[i:i + 8], map_fn(score, batches[i:i + 8])):
                np.add.at(pll, seq_of[a:b], logp.astype(np.float64))
                bar.update(b - a)
    return pll[row_of]


def demo(V):
    """The tiny demo of `python mlm.py`: 80/10/10 masking of a random row, and the loss of uniform logits."""
    rng = np.random.default_rng(0)
    ids = rng.integers(5, V, size=(2, 12))                      # (B, T) a packed-like batch
    ids[:, 0], ids[:, -1] = 2, 3                                # [CLS] ... [SEP]
    input_ids, labels = mask_tokens(ids, rng, V, special_ids=[0, 1, 2, 3, 4], mask_prob=0.3)
    print(f"ids       {ids[0].tolist()}\nmasked    {input_ids[0].tolist()}   ([MASK] = 4)\n"
          f"labels    {labels[0].tolist()}")
    loss, dlogits = mlm_loss(np.zeros((2, 12, V)), labels)
    print(f"uniform logits over V={V}: loss {loss:.6f} | ln(V) {np.log(V):.6f} | dlogits {dlogits.shape}")


@cli
def main(argv=None):
    p = ArgumentParser(description="Tiny demo of the MLM loss; with --checkpoint, fill in the [MASK]s "
                                   "of a sentence with a trained model.")
    p.add_argument("text", nargs="*", help='with --checkpoint: sentences holding [MASK], '
                                           'e.g. "the capital of france is [MASK] ."')
    p.add_argument("--checkpoint", default=None, help="run folder written by train.py (e.g. runs/mini) or a .npz")
    p.add_argument("--vocab", default=None, type=existing_file,
                   help="vocab.txt (default: the one found for the checkpoint)")
    p.add_argument("--top-k", type=at_least(1), default=5, help="pieces to show per [MASK]")
    p.add_argument("--vocab-size", type=at_least(6), default=13,
                   help="the demo without --checkpoint: V of its batch (5 special tokens + at least one word)")
    args = p.parse_args(argv)
    if args.checkpoint is None:
        if args.text:
            raise UserError("a text needs a model: add --checkpoint runs/mini (the folder train.py wrote) before it.")
        demo(args.vocab_size)
        return None
    if not args.text:
        raise UserError('--checkpoint needs a text with [MASK], e.g. "the capital of france is [MASK] ."')
    from checkpoint import load_checkpoint                          # finds the checkpoint and its vocab
    ckpt = Path(args.checkpoint)
    run_json = (ckpt if ckpt.is_dir() else ckpt.parent) / "run.json"    # train.py records its vocab there
    try:
        run = json.loads(run_json.read_text(encoding="utf-8")) if run_json.is_file() else {}
    except (OSError, ValueError):                                   # unreadable: find the vocab as evaluate does
        run = {}
    vocab = args.vocab
    if vocab is None and Path(run.get("vocab_file") or "").is_file():
        vocab = run["vocab_file"]
    model, tok, info = load_checkpoint(args.checkpoint, vocab)
    if run.get("vocab_hash") and run["vocab_hash"] != tok.vocab_hash():
        raise UserError(f"vocab {info['vocab']} is not the one {info['checkpoint']} was trained with (run.json "
                        f"records another hash); pass --vocab the vocab.txt used for training.")
    try:
        out = [(text,) + fill_mask(model, tok, text, args.top_k) for text in args.text]
    except ValueError as e:
        raise UserError(str(e)) from None
    c = model.config
    print(f"checkpoint {info['checkpoint']} | {c.num_hidden_layers} layers, H={c.hidden_size}, V={c.vocab_size}")
    for text, ids, results in out:
        print("input: " + " ".join(tok.ids_to_tokens[i] for i in ids))
        for k, (pos, top) in enumerate(results, 1):
            print(f"[MASK] {k} of {len(results)} (position {pos}):")
            for rank, (piece, prob) in enumerate(top, 1):
                print(f"  {rank}. {piece:<16} {prob:.4f}")
    return [results for _, _, results in out]


if __name__ == "__main__":
    main()
