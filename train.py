"""MLM pretraining of Mini-BERT: data -> masked batches -> forward -> backward -> AdamW, with checkpoints,
metrics and plots; and `--benchmark`, the speed of that same training step.

One step (logical batch = batch_size x accum rows of T tokens; default 128 rows = 8,192 tokens, in 4 micro-batches
of 32 rows, each split across the threads: 2 x 16 on 2 cores):
    for each micro-batch:   ids = PackedBatches.next_batch();  (input, labels) = mask_tokens(ids)   (BERT §3.1)
        its rows are split into `threads` shards that run forward + backward at the same time on worker threads
        (data parallelism in miniature: each shard's dlogits is weighted by its share of the masked tokens, so
        the sum of the shard gradients is the gradient of the mean loss over the whole logical batch)
    grad_norm = clip_grad_norm(grads, clip);  lr = lr_at(step);  AdamW.step(grads, lr)

The default recipe (`python train.py`; chosen by the study in `study.py`, curves in the README's "recipe"):
mini, WordPiece 8K, T=64, no dropout;
  - logical batch 128 rows, AdamW lr 2e-3, betas (0.9, 0.98), weight decay 0.01, clip 1.0;
  - warmup over the first 6% of the schedule, then linear decay to 0 at the end of the time budget (90 minutes);
  - 30% of tokens selected for prediction (80/10/10 as in BERT); the held-out set is masked at 15%;
  - init: BERT's N(0, 0.02^2), except the decoder bias, which starts at the log unigram prior of the corpus
    (mlm.log_prior), and the learned position embeddings, which start at scaled sinusoids (sinusoidal_positions).
At 32 rows per step, 2e-3 collapses the attention heads onto [CLS]/[SEP] (entropy 0.1-1 nats of ln 64 = 4.2);
at 128 rows with beta2 0.98 it does not (watch attention entropy in the eval lines).
The schedule's length is estimated from the measured speed as the run goes, so the decay ends with the
budget on any machine (a fixed --steps count would be too short on a fast laptop and never end on a slow one).

Usage:
    python train.py                                   # the default recipe on wiki_en_2015 (or --corpus FILE)
    python train.py --time-budget 60 --out runs/mini60
    python train.py --out runs/mini60 --resume        # continue a stopped run exactly where it stopped
    python train.py --benchmark --batch-size 32       # ms/step (fwd/bwd/opt), GFLOP/s vs matmul floor, vs torch
    python train.py --benchmark --batch-size 32 --profile   # where the time goes (cProfile, one thread)
    python train.py --plot runs/mini60                # redraw the PNGs from metrics.jsonl

Writes to --out: run.json (corpus, vocab file and hash, config), metrics.jsonl (one JSON object per logged
step), loss.png, heldout.png, attention.png, lr.png, grad_norm.png (redrawn at each eval by a child process),
last.npz and best.npz (models: MiniBERT.load reads them), resume.npz (model + optimizer + RNG + data position
+ step: what --resume reads). Checkpoints are written atomically (temp file, then os.replace). Ctrl-C saves
and exits; a NaN/inf loss stops with a message and keeps the last checkpoint.

Expect (this 2-core machine, shared with other jobs): 0.2-0.5 s per step of 2048 tokens; held-out MLM loss
6.83 / 6.64 after 500 / 1000 steps at lr 5e-4; peak RSS about 210 MB. The 60-minute run: see the README.
"""
import argparse
import ctypes
import json
import math
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import gradients
import metrics
import mlm
from config import PRESETS, get_config
from model import MiniBERT
from optimizer import AdamW, clip_grad_norm, lr_at, row_blocks

REPO = Path(__file__).resolve().parent


class UserError(Exception):
    """A mistake in the command line or the files it names: printed as one line, no traceback."""


# ---- threads ----

def set_blas_threads(n):
    """Set OpenBLAS's thread count at run time (NumPy wheels bundle scipy-openblas). We run shards on our
    own threads, so each matmul should use one. Returns True if the library was found."""
    import glob
    libdir = Path(np.__file__).resolve().parent.parent
    for f in glob.glob(str(libdir / "numpy.libs" / "*openblas*")) + glob.glob(str(libdir / "numpy" / ".dylibs" / "*openblas*")):
        try:
            lib = ctypes.CDLL(f)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            if hasattr(lib, name):
                getattr(lib, name)(int(n))
                return True
    return False


def tune_malloc():
    """Two glibc malloc settings for a loop that allocates the same large temporaries at every step:
    - one arena: otherwise every worker thread gets its own, each keeping its own freed memory
      (about 20 MB less peak RSS);
    - keep freed memory in the process instead of returning it to the kernel and faulting it back in,
      4 KB page by page, at the next step (measured here: ~4,000 page faults and ~10 ms of kernel time per
      B=32 step before, ~100 and ~1 ms after; peak RSS unchanged, since the next step reuses the memory)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-8, 1)                                     # M_ARENA_MAX = 1
            libc.mallopt(-3, 64 << 20)                              # M_MMAP_THRESHOLD: heap, not mmap, below 64 MB
            libc.mallopt(-1, 256 << 20)                             # M_TRIM_THRESHOLD: keep up to 256 MB free
        except (OSError, AttributeError):
            pass


class Workers:
    """`n` threads that run one function over shards of a batch (inline when n == 1). Each matmul runs on
    `blas_threads` threads inside its worker (default: 1 when n > 1, else all cores)."""

    def __init__(self, n, blas_threads=None):
        self.n = max(1, int(n))
        self.pool = ThreadPoolExecutor(self.n) if self.n > 1 else None
        set_blas_threads(blas_threads or (1 if self.n > 1 else (os.cpu_count() or 1)))

    def map(self, fn, items):
        if self.pool is None or len(items) == 1:
            return [fn(x) for x in items]
        return list(self.pool.map(fn, items))

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()
            set_blas_threads(os.cpu_count() or 1)                   # back to NumPy's default


# ---- one training step ----

def make_micro_batch(ids, rng, tok_info, args, n_shards):
    """Mask one (B, T) batch (BERT §3.1) and split it into row shards, each with its own dropout seed."""
    word_ids = None
    if args.whole_word_mask:
        word_ids = mlm.word_ids_from_ids(ids, tok_info["is_continuation"], tok_info["special_ids"])
    input_ids, labels = mlm.mask_tokens(ids, rng, tok_info["vocab_size"], tok_info["special_ids"],
                                        mask_prob=args.mask_prob, whole_word=args.whole_word_mask,
                                        word_ids=word_ids, mask_id=tok_info["mask_id"])
    seeds = rng.integers(0, 2 ** 63, size=n_shards)
    parts = np.array_split(np.arange(ids.shape[0]), n_shards)
    return [(input_ids[p], labels[p], int(s)) for p, s in zip(parts, seeds) if len(p)]


def sum_grads(grad_dicts, workers):
    """grad_dicts[0] += the others, in list order (deterministic), row blocks spread over the threads."""
    grads = grad_dicts[0]
    if len(grad_dicts) > 1:
        def add(key_rows):
            k, rows = key_rows
            for g in grad_dicts[1:]:
                grads[k][rows] += g[k][rows]
        workers.map(add, [(k, rows) for k in grads for rows in row_blocks(grads[k].shape)])
    return grads


def train_step(model, opt, micro_batches, lr, clip, workers, timer=None):
    """Forward + backward over every shard of every micro-batch, then clip and AdamW.
    micro_batches: list of lists of shards (input_ids, labels, seed). The loss is the mean over all masked
    tokens of the logical batch: shard s with n_s of the N masked tokens gets dlogits * n_s / N, so the sum
    of the shards' gradients is the gradient of that mean. The shards of one micro-batch run at once on the
    worker threads; their gradients are added to the running sum in a fixed order (a resumed run repeats
    the same floating-point results). Returns a dict (loss, n_masked, grad_norm, grads, ok); the update is
    skipped (ok False) if the loss or the gradient norm is not finite."""
    N = sum(int((lab != mlm.IGNORE_INDEX).sum()) for shards in micro_batches for _, lab, _ in shards)

    def work(shard):                                                # on one worker thread
        input_ids, labels, seed = shard
        t0 = time.perf_counter()
        mlm_mask = labels != mlm.IGNORE_INDEX                       # (b, T)
        logits, cache = model.forward(input_ids, mlm_mask=mlm_mask, training=True,
                                      rng=np.random.default_rng(seed))   # (n_s, V)
        loss, dlogits = mlm.mlm_loss(logits, labels[mlm_mask])
        n_s = int(mlm_mask.sum())
        dlogits *= n_s / max(N, 1)                                  # weight of this shard in the mean
        t_fwd = time.perf_counter() - t0
        return gradients.backward(model, cache, dlogits), loss * n_s, t_fwd

    grads, total_loss = None, 0.0
    t = time.perf_counter()
    for shards in micro_batches:
        outs = workers.map(work, shards)
        # data parallel + accumulation: running sum += this micro-batch's shard gradients
        grads = sum_grads(([] if grads is None else [grads]) + [o[0] for o in outs], workers)
        total_loss += sum(o[1] for o in outs)
        t_end = time.perf_counter()
        if timer is not None:                                       # forward: the shards' mean; backward: the rest
            t_fwd = sum(o[2] for o in outs) / len(outs)
            timer["forward"] += t_fwd
            timer["backward"] += t_end - t - t_fwd
        del outs
        t = t_end
    loss = total_loss / max(N, 1)
    norm = clip_grad_norm(grads, clip)
    ok = math.isfinite(loss) and math.isfinite(norm)
    if ok:
        opt.step(grads, lr=lr, map_fn=workers.map)                  # row blocks of the update on the threads
    if timer is not None:
        timer["optimizer"] += time.perf_counter() - t
    return {"loss": loss, "n_masked": N, "grad_norm": norm, "grads": grads, "ok": ok}


def evaluate_mlm(model, eval_set, workers):
    """Held-out MLM loss, accuracy and perplexity over a fixed masked set (no dropout), and the mean entropy
    of each layer's attention rows (nats; ln T = uniform). Entropy falling towards 0 means the heads all
    look at one token (usually [CLS] or [SEP]) and ignore the context: the sign of a learning rate that is
    too high (attention entropy collapse, Zhai et al. 2023).
    eval_set: list of (input_ids (B, T), labels (B, T)); each batch is split across the worker threads."""
    def one(shard):
        input_ids, labels = shard
        mlm_mask = labels != mlm.IGNORE_INDEX
        logits, cache = model.forward(input_ids, mlm_mask=mlm_mask)     # (n, V)
        y = labels[mlm_mask]
        loss, _ = mlm.mlm_loss(logits, y)
        ent = [float(-(p * np.log(p + 1e-12)).sum(-1).mean()) for p in cache["attn_probs"]]   # per layer
        return loss * len(y), int((logits.argmax(-1) == y).sum()), len(y), ent, len(input_ids)
    res = []
    for input_ids, labels in eval_set:
        parts = [p for p in np.array_split(np.arange(len(input_ids)), workers.n) if len(p)]
        res += workers.map(one, [(input_ids[p], labels[p]) for p in parts])
    n, rows = sum(r[2] for r in res), sum(r[4] for r in res)
    loss = sum(r[0] for r in res) / max(n, 1)
    ent = [sum(r[3][i] * r[4] for r in res) / rows for i in range(len(res[0][3]))]
    return {"val_loss": loss, "val_acc": sum(r[1] for r in res) / max(n, 1),
            "val_ppl": math.exp(min(loss, 50.0)), "val_tokens": n,
            **{f"attn_entropy/layer{i}": e for i, e in enumerate(ent)}}


def sinusoidal_positions(T, H, std):  # -> (T, H)
    """PE[p, 2i] = sin(p / 10000^(2i/H)), PE[p, 2i+1] = cos(p / 10000^(2i/H))   (Vaswani et al. 2017, §3.5),
    scaled to the init's std. A starting value for BERT's *learned* position embeddings (they still train):
    PE[p+k] is a rotation of PE[p], so "attend to the word before" is one linear map of q and k from step 0,
    where N(0, 0.02^2) positions must first learn an order. MLM needs that early: the masked position's own
    input is [MASK], so all it knows comes through attention to its neighbours."""
    pos = np.arange(T)[:, None]                                     # (T, 1)
    freq = 10000.0 ** (-np.arange(0, H, 2) / H)                    # (H/2,)
    pe = np.zeros((T, H))
    pe[:, 0::2], pe[:, 1::2] = np.sin(pos * freq), np.cos(pos * freq)
    return (pe * (std / pe.std())).astype(np.float32)


def init_recipe(model, args, tokens, special_ids):
    """The recipe's changes to BERT's N(0, 0.02^2) init (the architecture is unchanged; all still train)."""
    c, P = model.config, model.params
    if args.bias_init == "unigram":                                 # decoder bias = log prior of the labels
        P["mlm.bias"][...] = mlm.log_prior(tokens, c.vocab_size, special_ids)
    if args.pos_init == "sinusoidal":                               # learned positions, started from sinusoids
        P["emb.pos"][...] = sinusoidal_positions(c.max_position_embeddings, c.hidden_size, c.initializer_range)
    if args.qk_std is not None:                                     # wider Wq, Wk: attention logits of O(1) at step 0
        for i in range(c.num_hidden_layers):
            for name in ("Wq", "Wk"):
                P[f"layer{i}.attn.{name}"] *= args.qk_std / c.initializer_range


# ---- checkpoints ----

def atomic_savez(path, **arrays):
    """np.savez into path.tmp-<pid>, fsync, then os.replace: a reader sees the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def model_arrays(model):
    """The arrays of MiniBERT.save's format: every param by name plus '__config__'."""
    return {"__config__": np.array(model.config.to_json()), **model.params}


def save_checkpoint(out, model, opt, state, best=False):
    """resume.npz: model + optimizer moments + run state (JSON: step, RNG, data position, args);
    last.npz (and best.npz if best): the model alone, in MiniBERT.save's format."""
    meta = {k: v for k, v in opt.state_dict(moments=False).items()}
    arrays = model_arrays(model)
    arrays.update({f"opt.m/{k}": a for k, a in opt.m.items()})     # the live moments: written, not copied
    arrays.update({f"opt.v/{k}": a for k, a in opt.v.items()})
    arrays["__state__"] = np.array(json.dumps({**state, "optimizer": meta}))
    atomic_savez(out / "resume.npz", **arrays)
    atomic_savez(out / "last.npz", **model_arrays(model))
    if best:
        atomic_savez(out / "best.npz", **model_arrays(model))


def load_checkpoint(path):
    """-> (model, optimizer state dict, run state dict) from a resume.npz."""
    from config import BertConfig
    with np.load(path, allow_pickle=False) as f:
        config = BertConfig.from_dict(json.loads(str(f["__config__"])))
        state = json.loads(str(f["__state__"]))
        model = MiniBERT(config)
        model.params = {k: f[k] for k in model.params}
        opt_state = dict(state.pop("optimizer"))
        opt_state["m"] = {k: f[f"opt.m/{k}"] for k in model.params}
        opt_state["v"] = {k: f[f"opt.v/{k}"] for k in model.params}
    return model, opt_state, state


# ---- data ----

def drop_resident_pages(tokens):
    """Tell the kernel this process is done with the token file's pages read so far: they stay in the page
    cache, but leave our RSS (random rows from a 100 MB memmap would otherwise all end up resident)."""
    mm = getattr(tokens, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def load_data(args, T, log):
    """Resolve the corpus, get the vocab (train it if missing), prepare the token files (cached).
    -> (tokenizer, train tokens (memmap), validation tokens or None, info: the files used)."""
    import data
    from tokenizer import WordPieceTokenizer
    try:
        train_path, valid_path, desc = data.resolve_corpus(args.corpus, args.data_dir)
    except FileNotFoundError:
        if args.corpus is not None:
            raise
        log("no default corpus found: downloading wikitext-103 into data/")
        data.download("wikitext-103", REPO / "data")
        train_path, valid_path, desc = data.resolve_corpus(None, REPO / "data")
    if args.valid is not None:
        valid_path = Path(args.valid)
        if not valid_path.is_file():
            raise UserError(f"validation file {valid_path} does not exist.")
    log(desc)
    cache = Path(args.cache_dir) if args.cache_dir else REPO / "data"
    vocab_file = Path(args.vocab) if args.vocab else cache / "vocab-8192.txt"
    if vocab_file.is_file():
        tok = WordPieceTokenizer.load(vocab_file)
        log(f"vocab {vocab_file} ({tok.vocab_size} tokens)")
    else:
        log(f"training an 8192-piece WordPiece vocab on {train_path} -> {vocab_file}")
        paragraphs = (p for doc in data.read_documents(train_path) for p in doc)
        tok = WordPieceTokenizer.train(paragraphs, vocab_size=8192)
        vocab_file.parent.mkdir(parents=True, exist_ok=True)
        tok.save(vocab_file)
    out_dir = cache
    meta = data.prepare(train_path, vocab_file, out_dir)
    tokens, _ = data.load_tokens(meta["bin"])
    valid = None
    if valid_path is not None:
        vmeta = data.prepare(valid_path, vocab_file, out_dir)
        valid, _ = data.load_tokens(vmeta["bin"])
    info = {"corpus": str(Path(train_path).resolve()), "valid": str(Path(valid_path).resolve()) if valid_path else None,
            "vocab_file": str(vocab_file.resolve()), "vocab_hash": tok.vocab_hash()}
    return tok, tokens, valid, info


# ---- metrics and plots ----

def read_metrics(path, upto=None):
    """The records of metrics.jsonl (those with step <= upto if given)."""
    if not path.is_file():
        return []
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in recs if upto is None or r["step"] <= upto]


def plot_metrics(out, recs):
    """loss.png (train + held-out), heldout.png (accuracy, perplexity), lr.png, grad_norm.png (per layer)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    train = [r for r in recs if "loss" in r]
    val = [r for r in recs if "val_loss" in r]
    if not train:
        return
    steps = [r["step"] for r in train]

    def save(fig, name):
        fig.tight_layout()
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        os.replace(tmp, out / name)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [r["loss"] for r in train], lw=0.6, label="train (masked tokens)")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="held-out")
    ax.set(xlabel="step", ylabel="MLM loss (nats)", title="MLM loss")
    ax.legend()
    save(fig, "loss.png")
    if val:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
        a1.plot([r["step"] for r in val], [r["val_acc"] for r in val], "o-")
        a1.set(xlabel="step", ylabel="accuracy", title="held-out MLM accuracy")
        a2.plot([r["step"] for r in val], [r["val_ppl"] for r in val], "o-", color="C1")
        a2.set(xlabel="step", ylabel="perplexity", title="held-out MLM perplexity", yscale="log")
        save(fig, "heldout.png")
    ents = [k for k in (val[-1] if val else {}) if k.startswith("attn_entropy/")]
    if ents:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k in ents:
            ax.plot([r["step"] for r in val], [r.get(k, float("nan")) for r in val], "o-", label=k.split("/", 1)[1])
        ax.set(xlabel="step", ylabel="nats", ylim=(0, None),
               title="held-out attention entropy (near 0: heads ignore the context)")
        ax.legend(fontsize=7)
        save(fig, "attention.png")
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(steps, [r["lr"] for r in train])
    ax.set(xlabel="step", ylabel="lr", title="learning rate")
    save(fig, "lr.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = [k for k in train[-1] if k.startswith("grad_norm/")]
    for k in groups:
        ax.plot(steps, [r.get(k, float("nan")) for r in train], lw=0.6, label=k.split("/", 1)[1])
    ax.set(xlabel="step", ylabel="L2 norm (before clipping)", title="gradient norm per layer", yscale="log")
    ax.legend(fontsize=7)
    save(fig, "grad_norm.png")


def plot_in_background(out, proc=None):
    """Redraw the PNGs in a child process (`python train.py --plot DIR`), so that matplotlib (about 45 MB)
    stays out of the training process and training never waits for a plot. Skipped while the previous
    child is still drawing. Its errors go to DIR/plot.log."""
    if proc is not None and proc.poll() is None:
        return proc
    with open(out / "plot.log", "w", encoding="utf-8") as log:
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--plot", str(out)],
                                stdout=log, stderr=log)


def peak_rss_mb():
    try:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024 if sys.platform != "darwin" else kb / 2 ** 20
    except ImportError:                                             # Windows
        return float("nan")


# ---- training ----

CLI_ONLY = {"out", "resume", "stop_at", "threads", "quiet", "benchmark", "no_torch", "bench_steps", "no_plots", "plot", "profile"}
EVAL_ROWS = 32         # rows per held-out batch: the held-out set is --eval-batches x 32 rows for every recipe
EVAL_MASK_PROB = 0.15   # the held-out set is masked at BERT's 15% whatever --mask-prob trains with: comparable runs
RESUME_OVERRIDES = {"steps", "time_budget", "eval_every", "save_every", "log_every"}
# --resume: CLI_ONLY flags come from this command line, RESUME_OVERRIDES from it when given (else from the
# run), and everything else (the recipe) from the run itself.


def run(args, given):
    from tqdm import tqdm
    out = Path(args.out)
    log = print
    state = None
    if args.resume:
        ckpt = out / "resume.npz"
        if not ckpt.is_file():
            raise UserError(f"--resume: no checkpoint {ckpt}; start the run without --resume.")
        model, opt_state, state = load_checkpoint(ckpt)
        saved = state["args"]
        keep = CLI_ONLY | (RESUME_OVERRIDES & given)
        ignored = sorted(k for k in given - keep if saved.get(k) != getattr(args, k))
        if ignored:
            log(f"note: --resume keeps the run's own {', '.join('--' + k.replace('_', '-') for k in ignored)}")
        for k, v in saved.items():
            if k not in keep:
                setattr(args, k, v)
        log(f"resuming {ckpt} at step {state['step']}")
    if args.steps is None and args.time_budget is None:
        args.time_budget = 90.0
    import data
    tok, tokens, valid, files = load_data(args, None, log)
    config = get_config(args.preset, vocab_size=tok.vocab_size, hidden_dropout_prob=args.dropout,
                        attention_probs_dropout_prob=args.dropout)
    T = config.max_position_embeddings
    if valid is None:                                               # hold out the end of the training stream
        tokens, valid = data.holdout_split(tokens, max(len(tokens) // 200, 40 * T))
    tok_info = {"vocab_size": tok.vocab_size, "special_ids": list(tok.special_ids), "mask_id": tok.mask_id,
                "is_continuation": tok.is_continuation}
    n_eval = min(args.eval_batches, (len(valid) // (T - 2)) // EVAL_ROWS)     # the same rows whatever --batch-size
    if n_eval < 1:
        raise UserError(f"the validation stream ({len(valid)} tokens) is too short for one batch of "
                        f"{EVAL_ROWS} x {T}; pass a larger --valid file.")
    eval_rng = np.random.default_rng(1234)                          # the same masks at every evaluation
    eval_set = [mlm.mask_tokens(b, eval_rng, tok.vocab_size, tok_info["special_ids"], EVAL_MASK_PROB,
                                mask_id=tok.mask_id)
                for b in data.heldout_batches(valid, T, EVAL_ROWS, n_eval)]
    batches = data.PackedBatches(tokens, T, args.batch_size, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    if state is None:
        model = MiniBERT(config, seed=args.seed)
        init_recipe(model, args, tokens, tok_info["special_ids"])
        state = {"step": 0, "tokens": 0, "elapsed_s": 0.0, "train_s": 0.0, "best_val_loss": None,
                 "total_steps": args.steps, "files": files}
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("", encoding="utf-8")
        (out / "run.json").write_text(json.dumps({**files, "config": config.to_dict(), "args": vars(args)}, indent=1),
                                      encoding="utf-8")                 # what evaluation needs to find the vocab
    else:
        if state.get("files", {}).get("vocab_hash", files["vocab_hash"]) != files["vocab_hash"]:
            raise UserError(f"{files['vocab_file']} is not the vocab this run started with "
                            f"({state['files']['vocab_file']}); resume with the run's own --vocab.")
        config = model.config
        batches.load_state_dict(state["data"])
        rng.bit_generator.state = state["rng"]
        recs = read_metrics(out / "metrics.jsonl", upto=state["step"])     # drop lines after the checkpoint
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
        if args.steps is not None:
            state["total_steps"] = args.steps
    opt = AdamW(model.params, lr=args.lr, betas=(0.9, args.beta2), eps=1e-6, weight_decay=args.weight_decay)
    if args.resume:
        opt.load_state_dict(opt_state)
    workers = Workers(min(args.threads, args.batch_size), max(1, args.threads // min(args.threads, args.batch_size)))
    print(f"config: {config.to_json()}")
    print(f"recipe: {json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in ('benchmark',)})}")
    print(f"{model.num_params():,} params | {len(tokens):,} training tokens | held-out {n_eval} x "
          f"{EVAL_ROWS} x {T} rows, {sum(int((l != -100).sum()) for _, l in eval_set):,} masked tokens | "
          f"{workers.n} threads")

    budget_s = None if args.time_budget is None else 60.0 * args.time_budget
    tokens_per_step = args.batch_size * args.accum * T
    stop = {"flag": False}

    def on_sigint(signum, frame):
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        tqdm.write("Ctrl-C: finishing this step, saving a checkpoint and exiting (Ctrl-C again to abort)")
    old_handler = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None

    def checkpoint(best=False):
        st = {**state, "rng": rng.bit_generator.state, "data": batches.state_dict(), "args": vars(args)}
        save_checkpoint(out, model, opt, st, best=best)

    def total_steps():
        """--steps, or the estimate from the measured speed so that the schedule ends with the time budget."""
        if state["total_steps"] is not None:
            return state["total_steps"]
        if state["step"] < 5:
            return 10 ** 9
        return max((args.warmup or 0) + 1, int(budget_s * state["step"] / max(state["elapsed_s"], 1e-9)))

    def done():
        if state["total_steps"] is not None and state["step"] >= state["total_steps"]:
            return True
        return budget_s is not None and state["elapsed_s"] >= budget_s

    last_eval = {"step": None}

    def do_eval():
        ev = evaluate_mlm(model, eval_set, workers)
        last_eval["step"] = state["step"]
        best = state["best_val_loss"] is None or ev["val_loss"] < state["best_val_loss"]
        if best:
            state["best_val_loss"] = ev["val_loss"]
        return ev, best

    metrics_f = open(out / "metrics.jsonl", "a", encoding="utf-8")
    bar = tqdm(total=state["total_steps"], initial=state["step"], unit="step", dynamic_ncols=True,
               disable=args.quiet)
    loss_acc, n_acc = 0.0, 0
    t_prev = time.perf_counter()
    plotter = None
    try:
        while not done() and not stop["flag"]:
            if args.stop_at is not None and state["step"] >= args.stop_at:
                break
            step = state["step"]
            warmup = args.warmup if args.warmup is not None else max(1, int(args.warmup_frac * total_steps()))
            lr = lr_at(step, args.lr, warmup, total_steps(), args.schedule, args.min_lr)
            n_shards = workers.n
            micro = [make_micro_batch(batches.next_batch(), rng, tok_info, args, n_shards)
                     for _ in range(args.accum)]
            res = train_step(model, opt, micro, lr, args.clip, workers)
            if not res["ok"]:
                bar.close()
                raise UserError(
                    f"loss {res['loss']:.4g}, grad norm {res['grad_norm']:.4g} at step {step + 1} (lr {lr:.2e}): "
                    f"training diverged, stopped without saving. The last good checkpoint is {out / 'resume.npz'} "
                    f"(see metrics.jsonl for its step). Try a lower --lr (e.g. --lr {args.lr / 2:.1e}) "
                    f"or --clip 1.0, and start again.")
            now = time.perf_counter()
            state["train_s"] += now - t_prev                        # step time alone (for ms/step, tokens/s)
            state["step"] += 1
            state["tokens"] += tokens_per_step
            loss_acc += res["loss"]
            n_acc += 1
            step = state["step"]
            is_eval = step % args.eval_every == 0 or done() or (args.stop_at is not None and step >= args.stop_at)
            if step % args.log_every == 0 or is_eval:
                rec = {"step": step, "loss": loss_acc / n_acc, "lr": lr, "grad_norm": res["grad_norm"],
                       **{f"grad_norm/{k}": v for k, v in metrics.grad_norms(res["grads"])[1].items()},
                       "tokens": state["tokens"], "elapsed_s": round(state["elapsed_s"], 3)}
                loss_acc, n_acc = 0.0, 0
                drop_resident_pages(tokens)
                if is_eval:
                    ev, best = do_eval()
                    rec.update(ev)
                    rec["peak_rss_mb"] = round(peak_rss_mb(), 1)
                metrics_f.write(json.dumps(rec) + "\n")
                metrics_f.flush()
                if state["total_steps"] is None and budget_s is not None:
                    bar.total = total_steps()
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.1e}",
                                tok_s=f"{state['tokens'] / max(state['train_s'], 1e-9):.0f}")
                if is_eval:
                    ents = " ".join(f"{v:.2f}" for k, v in ev.items() if k.startswith("attn_entropy/"))
                    bar.write(f"step {step:5d} | loss {rec['loss']:.4f} | lr {lr:.1e} | "
                              f"{1e3 * state['train_s'] / max(step, 1):.0f} ms/step | held-out loss "
                              f"{ev['val_loss']:.4f} acc {ev['val_acc']:.4f} ppl {ev['val_ppl']:.1f} | "
                              f"attention entropy {ents}")
                    checkpoint(best=best)
                    if not args.no_plots:
                        plotter = plot_in_background(out, plotter)
            if step % args.save_every == 0 and not is_eval:
                checkpoint()
            bar.update(1)
            now = time.perf_counter()                               # the time budget counts evals and saves too
            state["elapsed_s"] += now - t_prev
            t_prev = now
    finally:
        bar.close()
        metrics_f.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    if stop["flag"] or (args.stop_at is not None and not done()):
        checkpoint()
        workers.close()
        if plotter is not None:
            plotter.wait()
        print(f"stopped at step {state['step']}: saved {out / 'resume.npz'}; continue with "
              f"`python train.py --out {out} --resume`")
        return state
    if last_eval["step"] != state["step"]:                           # the final evaluation
        ev, best = do_eval()
        rec = {"step": state["step"], **ev, "peak_rss_mb": round(peak_rss_mb(), 1)}
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        checkpoint(best=best)
    workers.close()
    if not args.no_plots:
        if plotter is not None:
            plotter.wait()
        plot_in_background(out).wait()                              # the final plots, complete
    print(f"done: {state['step']} steps, {state['tokens']:,} tokens in {state['elapsed_s'] / 60:.1f} min | "
          f"held-out MLM loss {ev['val_loss']:.4f} | accuracy {ev['val_acc']:.4f} | perplexity {ev['val_ppl']:.1f} | "
          f"peak RSS {peak_rss_mb():.0f} MB | best model {out / 'best.npz'}")
    return state


# ---- benchmark ----

def gemm_shapes(config, B, T, n_masked):
    """Every matmul of one training step as (batch, M, K, N, transpose_a), in the model's own shapes: the
    encoder on B*T rows, except the last layer's FFN and the MLM head, which run on the n masked rows."""
    H, I, V, A, L = (config.hidden_size, config.intermediate_size, config.vocab_size,
                     config.num_attention_heads, config.num_hidden_layers)
    D, R = H // A, B * T
    shapes = []

    def linear(rows, k, n):                                         # forward, dx = dout W^T, dW = x^T dout
        shapes.extend([(1, rows, k, n, False), (1, rows, n, k, False), (1, k, rows, n, True)])
    for i in range(L):
        for _ in range(4):
            linear(R, H, H)                                         # Wq, Wk, Wv, Wo
        shapes.extend([(B * A, T, D, T, False), (B * A, T, T, D, False)])   # scores, ctx
        shapes.extend([(B * A, T, D, T, False), (B * A, T, T, D, True),     # dpd, dv
                       (B * A, T, T, D, False), (B * A, T, T, D, True)])    # dq, dk
        rows = n_masked if i == L - 1 else R
        linear(rows, H, I)                                          # W1
        linear(rows, I, H)                                          # W2
    linear(n_masked, H, H)                                          # mlm.Wt
    shapes.extend([(1, n_masked, H, V, False), (1, n_masked, V, H, False), (1, V, n_masked, H, True)])  # decoder
    return shapes


def matmul_floor(shapes, threads, repeats=10):
    """(seconds, flops): every GEMM shape timed alone on one core (the fastest of `repeats`, float32, CPU
    time), summed, divided by `threads`: the step's matmuls perfectly split over the cores. Stricter than
    multi-threaded BLAS (which never scales perfectly), and it stays meaningful on a machine shared with
    other jobs, where BLAS threads that spin-wait for each other measure the load, not the matmuls."""
    set_blas_threads(1)
    rng = np.random.default_rng(0)
    total_s, flops = 0.0, 0
    for (b, m, k, n, ta) in shapes:
        a = rng.standard_normal((b, k, m) if ta else (b, m, k), dtype=np.float32)
        a = a.transpose(0, 2, 1) if ta else a
        w = rng.standard_normal((b, k, n), dtype=np.float32)
        if b == 1:
            a, w = a[0], w[0]
        best = float("inf")
        for _ in range(repeats):
            t = time.thread_time()
            a @ w
            best = min(best, time.thread_time() - t)
        total_s += best
        flops += 2 * b * m * k * n
    return total_s / threads, flops


def torch_stepper(config, params, threads, lr=1e-3, clip=1.0):
    """The same training step in plain PyTorch (tests/torch_bert.py): eager, float32, clip + torch.optim.AdamW
    with the same parameter groups. Returns step(input_ids, labels) -> (fwd_s, bwd_s, opt_s), or None."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")            # idle OpenMP threads sleep: on a shared
    try:                                                            # machine spinning ones slow torch ~5x
        import torch
    except ImportError:
        return None
    sys.path.insert(0, str(REPO / "tests"))
    import torch_bert
    torch.set_num_threads(threads)
    tm = torch_bert.make_torch_model(config, params)
    topt = torch_bert.make_optimizer(tm, lr=lr)
    tm.train()

    def step(input_ids, labels):
        mask = labels != mlm.IGNORE_INDEX
        ids_t, mask_t, y_t = torch.from_numpy(input_ids), torch.from_numpy(mask), torch.from_numpy(labels[mask])
        t0 = time.perf_counter()
        loss = torch_bert.mlm_loss_torch(tm(ids_t, mlm_mask=mask_t), y_t)
        t1 = time.perf_counter()
        topt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(tm.parameters(), clip)
        topt.step()
        return t1 - t0, t2 - t1, time.perf_counter() - t2
    return step


def profile_step(model, opt, inputs, args, workers):
    """cProfile of the step on one thread with thread CPU time (robust to other processes): the functions
    with the most own time, in ms per step."""
    import cProfile
    import pstats
    set_blas_threads(1)                                             # all the work on this one thread
    pr = cProfile.Profile(time.thread_time)
    pr.enable()
    for micro in inputs:
        train_step(model, opt, micro, args.lr, args.clip, workers)
    pr.disable()
    st = pstats.Stats(pr)
    rows = sorted(((v[2], k) for k, v in st.stats.items()), reverse=True)[:15]
    total = sum(v[2] for v in st.stats.values())
    print(f"profile (1 thread, CPU time): {1e3 * total / len(inputs):.1f} ms/step")
    for own, (file, line, fn) in rows:
        print(f"  {1e3 * own / len(inputs):7.1f} ms  {Path(file).name}:{line}({fn})" if file != "~" else
              f"  {1e3 * own / len(inputs):7.1f} ms  {fn}")


def benchmark(args, given=()):
    """Time train_step (the training code path) on synthetic ids, and the same step in PyTorch, in
    alternating rounds (both see the same machine load); report medians over the timed steps.
    One micro-batch of --batch-size rows per step unless --accum is given (torch then takes all rows at once)."""
    if "accum" not in given:
        args.accum = 1
    config = get_config(args.preset, hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    B, T, V = args.batch_size, config.max_position_embeddings, config.vocab_size
    model = MiniBERT(config, seed=args.seed)
    opt = AdamW(model.params, lr=args.lr, weight_decay=args.weight_decay)
    threads = 1 if args.profile else min(args.threads, B)
    workers = Workers(threads, 1 if args.profile else max(1, args.threads // threads))
    rng = np.random.default_rng(args.seed)
    tok_info = {"vocab_size": V, "special_ids": [0, 1, 2, 3, 4], "mask_id": 4, "is_continuation": None}
    warm, n, rounds = 3, args.bench_steps, 2
    inputs = []
    for i in range(warm + n):
        ids = rng.integers(5, V, size=(B * args.accum, T))
        ids[:, 0], ids[:, -1] = 2, 3                                # [CLS] ... [SEP], as PackedBatches makes them
        inputs.append([make_micro_batch(ids[j * B:(j + 1) * B], rng, tok_info, args, workers.n)
                       for j in range(args.accum)])
    if args.profile:
        train_step(model, opt, inputs[0], args.lr, args.clip, workers)
        return profile_step(model, opt, inputs[warm:], args, workers)
    flat = [(np.concatenate([s[0] for m in micro for s in m]), np.concatenate([s[1] for m in micro for s in m]))
            for micro in inputs]
    n_masked = float(np.mean([(lab != mlm.IGNORE_INDEX).sum() for _, lab in flat])) / args.accum
    tstep, rss = None, None
    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    for r in range(rounds):
        for i, micro in enumerate(inputs):
            timer = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
            c0 = time.process_time()
            train_step(model, opt, micro, args.lr, args.clip, workers, timer=timer)
            if i >= warm:
                ours.append(list(timer.values()))
                ours_cpu.append(time.process_time() - c0)
        if r == 0:
            rss = peak_rss_mb()                                     # ours alone: torch then runs in this process
            tstep = None if args.no_torch else torch_stepper(config, model.params, threads, lr=args.lr, clip=args.clip)
        if tstep is not None:
            for i, (input_ids, labels) in enumerate(flat):
                c0 = time.process_time()
                t = tstep(input_ids, labels)
                if i >= warm:
                    theirs.append(t)
                    theirs_cpu.append(time.process_time() - c0)
    workers.close()
    floor_s, flops = matmul_floor(gemm_shapes(config, B, T, int(round(n_masked))), threads)
    floor_ms, flops = 1e3 * floor_s * args.accum, flops * args.accum
    med = lambda rows: [1e3 * float(np.median(c)) for c in zip(*rows)] + [1e3 * float(np.median([sum(r) for r in rows]))]
    f, b, o, ms_step = med(ours)
    tok_s = B * args.accum * T / (ms_step / 1e3)
    gf = lambda ms: flops / (ms / 1e3) / 1e9
    print(f"benchmark: {args.preset}, float32, B={B} x accum {args.accum}, T={T}, mask {args.mask_prob:.0%} "
          f"(~{n_masked:.0f} masked rows per micro-batch), {threads} threads, median of {rounds} x {n} steps")
    cpu = lambda xs: 1e3 * float(np.median(xs))
    print(f"{'':12s} | {'ms/step':>8s} | {'forward':>8s} | {'backward':>8s} | {'optimizer':>9s} | {'tokens/s':>8s} | "
          f"GFLOP/s | CPU ms/step (all threads)")
    print(f"{'numpy':12s} | {ms_step:8.1f} | {f:8.1f} | {b:8.1f} | {o:9.1f} | {tok_s:8.0f} | {gf(ms_step):7.1f} | "
          f"{cpu(ours_cpu):8.1f}")
    result = {"preset": args.preset, "batch_size": B, "accum": args.accum, "seq_len": T, "threads": threads,
              "ms_per_step": round(ms_step, 2), "forward_ms": round(f, 2), "backward_ms": round(b, 2),
              "optimizer_ms": round(o, 2), "tokens_per_s": round(tok_s, 1), "gflops": round(gf(ms_step), 2),
              "floor_ms": round(floor_ms, 2), "floor_ratio": round(ms_step / floor_ms, 3), "peak_rss_mb": round(rss, 1),
              "cpu_ms_per_step": round(cpu(ours_cpu), 2), "load_avg_1min": round(os.getloadavg()[0], 2)}
    if theirs:
        tf, tb, to, t_step = med(theirs)
        print(f"{'torch eager':12s} | {t_step:8.1f} | {tf:8.1f} | {tb:8.1f} | {to:9.1f} | "
              f"{B * args.accum * T / (t_step / 1e3):8.0f} | {gf(t_step):7.1f} | {cpu(theirs_cpu):8.1f}")
        result.update({"torch_ms_per_step": round(t_step, 2), "torch_ratio": round(ms_step / t_step, 3),
                       "torch_cpu_ms_per_step": round(cpu(theirs_cpu), 2)})
    print(f"{'matmul floor':12s} | {floor_ms:8.1f} | {'':8s} | {'':8s} | {'':9s} | {'':8s} | {gf(floor_ms):7.1f}")
    print(f"numpy / matmul floor: {result['floor_ratio']:.2f}x" +
          (f" | numpy / torch: {result['torch_ratio']:.2f}x" if "torch_ratio" in result else "") +
          f" | peak RSS {rss:.0f} MB | load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(json.dumps(result))
    return result


# ---- command line ----

def build_parser(suppress=False):
    """suppress=True: no defaults, so parse_args returns only the flags actually given (for --resume)."""
    p = argparse.ArgumentParser(description="Pretrain Mini-BERT with masked language modelling.",
                                argument_default=argparse.SUPPRESS if suppress else None)

    def add(*flags, **kw):
        if suppress:
            kw.pop("default", None)
        p.add_argument(*flags, **kw)
    add("--preset", default="mini", choices=sorted(PRESETS), help="model size (config.py)")
    add("--corpus", default=None, help="training text (default: data.py's resolver, wiki_en_2015 here)")
    add("--valid", default=None, help="held-out text (default: the validation file next to the corpus)")
    add("--data-dir", default=None, help="where to look for the default corpus (default: data.default_data_dir())")
    add("--vocab", default=None, help="WordPiece vocab file (default data/vocab-8192.txt; trained if missing)")
    add("--cache-dir", default=None, help="where the vocab and the prepared token files live (default data/)")
    add("--out", default=None, help="run directory (default runs/<preset>)")
    add("--steps", type=int, default=None, help="optimizer steps (overrides --time-budget)")
    add("--time-budget", type=float, default=None,
        help="minutes of training, evaluations included (default 120); the LR schedule's length is estimated "
             "from the measured speed so that its decay ends with the budget")
    add("--batch-size", type=int, default=None,
        help="rows of T tokens per micro-batch (default 32, split across the threads)")
    add("--accum", type=int, default=None,
        help="micro-batches per optimizer step (default: 128 rows per step in all; 4 for 32-row micro-batches)")
    add("--threads", type=int, default=os.cpu_count() or 1, help="worker threads (each micro-batch is split across them)")
    add("--lr", type=float, default=2e-3,
        help="peak learning rate (for the logical batch of 128 rows; at 32 rows 2e-3 collapses the attention of "
             "this post-LN model onto [CLS]/[SEP]; watch attn_entropy in metrics.jsonl)")
    add("--min-lr", type=float, default=0.0, help="floor of the decay")
    add("--warmup", type=int, default=None, help="linear warmup steps (default: --warmup-frac of the schedule)")
    add("--warmup-frac", type=float, default=0.06, help="warmup as a fraction of the schedule (RoBERTa's 6%%)")
    add("--beta2", type=float, default=0.98, help="AdamW's second-moment decay (RoBERTa's 0.98: steadier at a high lr)")
    add("--schedule", default="linear", choices=["linear", "cosine", "constant"])
    add("--weight-decay", type=float, default=0.01)
    add("--clip", type=float, default=1.0, help="global gradient-norm clip (0 = off)")
    add("--mask-prob", type=float, default=0.3,
        help="share of tokens selected for prediction (BERT 0.15; 0.3 learns more per minute here, Wettig et al. "
             "2023); the held-out set is always masked at 0.15")
    add("--whole-word-mask", action="store_true", default=False)
    add("--pos-init", default="sinusoidal", choices=["normal", "sinusoidal"],
        help="start the learned position embeddings at N(0, 0.02^2) (BERT) or at scaled sinusoids")
    add("--qk-std", type=float, default=None, help="init std of Wq and Wk (default: the config's 0.02)")
    add("--bias-init", default="unigram", choices=["unigram", "zero"],
        help="start the MLM decoder bias at the log unigram prior of the corpus (mlm.log_prior) or at 0")
    add("--dropout", type=float, default=0.0,
        help="hidden and attention dropout during pretraining (default 0: nothing overfits in a run this short, "
             "as in Cramming BERT, and the masks cost time and memory); the saved config records it")
    add("--eval-every", type=int, default=500)
    add("--eval-batches", type=int, default=64, help="held-out batches of 32 rows (64: 2,048 rows, ~19K masked tokens)")
    add("--save-every", type=int, default=1000)
    add("--log-every", type=int, default=10, help="steps per metrics.jsonl line (loss averaged over them)")
    add("--seed", type=int, default=0)
    add("--resume", action="store_true", default=False, help="continue the run in --out")
    add("--benchmark", action="store_true", default=False, help="time the training step on synthetic ids")
    add("--bench-steps", type=int, default=20)
    add("--no-torch", action="store_true", default=False, help="benchmark: skip the PyTorch side")
    add("--profile", action="store_true", default=False, help="benchmark: cProfile the step on one thread instead")
    add("--quiet", action="store_true", default=False, help="no progress bar")
    add("--no-plots", action="store_true", default=False, help="do not draw the PNGs")
    add("--plot", default=None, metavar="DIR", help="only redraw the PNGs of the run in DIR from its metrics.jsonl")
    add("--stop-at", type=int, default=None, help=argparse.SUPPRESS)   # stop (and save) after this step
    return p


def data_errors():
    """data.py's own user-facing errors (a failed download, a malformed file): printed as one line."""
    import data
    return (data.DownloadError, data.DataFormatError)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    given = set(vars(build_parser(suppress=True).parse_args(argv)))
    if args.out is None:
        args.out = str(Path("runs") / args.preset)
    if args.batch_size is None:                                     # 32-row micro-batches: bigger GEMMs than 8
        args.batch_size = 32                                        # (about 20% faster per token), RSS ~250 MB
    if args.accum is None:
        args.accum = max(1, 128 // args.batch_size)                 # logical batch 128 rows = 8,192 tokens
    if args.plot is not None:
        plot_metrics(Path(args.plot), read_metrics(Path(args.plot) / "metrics.jsonl"))
        return None
    try:
        for name in ("batch_size", "accum", "threads", "eval_every", "save_every", "log_every", "eval_batches"):
            if getattr(args, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
        if not 0.0 < args.mask_prob < 1.0:
            raise UserError(f"--mask-prob must be in (0, 1), got {args.mask_prob}.")
        tune_malloc()
        if args.benchmark:
            return benchmark(args, given)
        return run(args, given)
    except (UserError, FileNotFoundError, *data_errors()) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)


if __name__ == "__main__":
    main()
