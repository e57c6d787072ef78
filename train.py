"""MLM pretraining of Mini-BERT: data -> masked batches -> forward -> backward -> AdamW, with checkpoints
(checkpoint.py), metrics and plots (metrics.py). The speed of this same step: benchmark.py.

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
    python train.py --out runs/mini60 --resume --time-budget 90   # extend it (a larger --steps works the same way)
    python train.py --benchmark --batch-size 32       # runs `python benchmark.py --batch-size 32` (the step's speed)
    python train.py --plot runs/mini60                # redraw the PNGs from metrics.jsonl

Writes to --out: run.json (corpus, vocab file and hash, config), metrics.jsonl (one JSON object per logged
step), loss.png, heldout.png, attention.png, lr.png, grad_norm.png (redrawn at each eval by a child process),
last.npz and best.npz (models: MiniBERT.load reads them), resume.npz (model + optimizer + RNG + data position
+ step: what --resume reads). Checkpoints are written atomically (temp file, then os.replace). Ctrl-C saves
and exits; a NaN/inf loss stops with a message and keeps the last checkpoint. An --out that holds another
run's checkpoints is refused (--resume continues it, --overwrite starts over), and every flag and input file
is checked before any work: a bad one is one `error:` line. --resume continues the run with its own recipe:
only --steps, --time-budget, --eval-every, --save-every, --log-every and --threads may change; any other flag
given with another value than the run's is refused, and resuming a finished run (at its --steps, or past its
--time-budget) says so in one line and changes no file.

Expect (`python train.py` on this 2-core machine): about 0.6-0.8 s per step of 8,192 tokens (10,300 tokens/s over
the run, shared with other jobs part of the time); held-out MLM loss / accuracy 6.12 / 0.163 at step 500, 4.68 / 0.268
at 1,000 (attention leaves the bag-of-words plateau between the two), and at the end of the 90 minutes (6,722 steps,
55M tokens) 3.23 / 0.427, perplexity 25.3; peak RSS about 400 MB. The README has the curves and the evaluation.
"""
import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import data
import download
import gradients
import metrics
import mlm
from checkpoint import check_out_dir, load_resume, save_checkpoint
from config import (PRESETS, ArgumentParser, UserError, at_least, cli, existing_dir, existing_file, fraction,
                    get_config, positive)
from model import MiniBERT
from optimizer import AdamW, clip_grad_norm, lr_at, row_blocks
from workers import Workers, blas_kernel, blas_override_note, peak_rss_mb, tune_malloc

REPO = Path(__file__).resolve().parent


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
        loss, dlogits = mlm.mlm_loss(logits, labels[mlm_mask], overwrite=True)   # dlogits in the logits' array
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
    too high (attention entropy collapse, Zhai et al. 2023). The last layer computes attention for the masked
    positions only (model.py), so its entropy is theirs.
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
        data.drop_resident_pages(tokens)                            # the count read all 100 MB: off the RSS
    if args.pos_init == "sinusoidal":                               # learned positions, started from sinusoids
        P["emb.pos"][...] = sinusoidal_positions(c.max_position_embeddings, c.hidden_size, c.initializer_range)
    if args.qk_std is not None:                                     # wider Wq, Wk: attention logits of O(1) at step 0
        for i in range(c.num_hidden_layers):
            for name in ("Wq", "Wk"):
                P[f"layer{i}.attn.{name}"] *= args.qk_std / c.initializer_range


# ---- plots ----

def plot_in_background(out, proc=None):
    """Redraw the PNGs in a child process (`python train.py --plot DIR`), so that matplotlib (about 45 MB)
    stays out of the training process and training never waits for a plot. Skipped while the previous
    child is still drawing. Its errors go to DIR/plot.log."""
    if proc is not None and proc.poll() is None:
        return proc
    with open(out / "plot.log", "w", encoding="utf-8") as log:
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--plot", str(out)],
                                stdout=log, stderr=log)


# ---- training ----

def heldout_set(valid, T, tok, n_batches):
    """The fixed held-out set: n_batches x EVAL_ROWS rows of the validation stream, masked at EVAL_MASK_PROB with
    seed 1234 (the same masks at every evaluation, for every recipe). -> list of (input_ids, labels), (32, T) each"""
    eval_rng = np.random.default_rng(1234)
    return [mlm.mask_tokens(b, eval_rng, tok.vocab_size, list(tok.special_ids), EVAL_MASK_PROB, mask_id=tok.mask_id)
            for b in data.heldout_batches(valid, T, EVAL_ROWS, n_batches)]


CLI_ONLY = {"out", "resume", "overwrite", "stop_at", "threads", "quiet", "no_plots", "plot"}
EVAL_ROWS = 32         # rows per held-out batch: the held-out set is --eval-batches x 32 rows for every recipe
EVAL_MASK_PROB = 0.15   # the held-out set is masked at BERT's 15% whatever --mask-prob trains with: comparable runs
RESUME_OVERRIDES = {"steps", "time_budget", "eval_every", "save_every", "log_every"}
# --resume: CLI_ONLY flags come from this command line (--threads is the machine's, not the recipe's),
# RESUME_OVERRIDES from it when given (else from the run), and everything else (the recipe) from the run itself:
# giving one of those with another value than the run's is refused (check_resume_flags).
PATH_FLAGS = {"corpus", "valid", "vocab", "data_dir", "cache_dir"}     # compared as resolved paths
DEFAULT_BUDGET_MIN = 90.0   # --time-budget when neither it nor --steps is given


def _flag(k, v):
    """'--lr 0.002', '--whole-word-mask', 'no --warmup' (a flag left unset, or a store_true flag left off)."""
    name = "--" + k.replace("_", "-")
    if v is None or v is False:
        return f"no {name}"
    return name if v is True else f"{name} {v}"


def run_value(k, state):
    """The value the run used for flag k: its saved argument; for one it left unset (None: a default chosen at
    start), the value that default chose where there is one (the corpus, validation and vocab files it recorded,
    the default cache and data folders, the preset's init std for --qk-std); else None (--warmup: the run's
    warmup came from --warmup-frac)."""
    saved, files = state["args"], state.get("files", {})
    if saved[k] is not None:
        return saved[k]
    chosen = {"corpus": files.get("corpus"), "valid": files.get("valid"), "vocab": files.get("vocab_file"),
              "cache_dir": REPO / "data", "data_dir": download.default_data_dir(),
              "qk_std": PRESETS[saved.get("preset", "mini")].initializer_range}
    return chosen.get(k)


def same_value(k, a, b):
    """Paths equal when they resolve to the same file; numbers by value (0.002 == 2e-3); else ==."""
    if a is None or b is None:
        return a is b
    if k in PATH_FLAGS:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def check_resume_flags(args, given, state, ckpt):
    """--resume continues a run with its own recipe: a flag given on this command line that is neither CLI_ONLY
    nor a RESUME_OVERRIDE and differs from the run's value (run_value) would be ignored, so it is refused
    (UserError, one line naming each such flag and the run's value) before any file is touched.
    Flags the run did not record (a checkpoint older than the flag) take this command line's value."""
    saved = state["args"]
    diff = [k for k in sorted(given - CLI_ONLY - RESUME_OVERRIDES)
            if k in saved and not same_value(k, getattr(args, k), run_value(k, state))]
    if diff:
        def theirs(k):                                              # "--qk-std 0.02 by default": left unset
            v = run_value(k, state)
            return _flag(k, v) + (" by default" if saved[k] is None and v is not None else "")
        changes = ", ".join(f"{_flag(k, getattr(args, k))} (this run: {theirs(k)})" for k in diff)
        may = ", ".join("--" + k.replace("_", "-") for k in sorted(RESUME_OVERRIDES | {"threads"}))
        raise UserError(f"--resume continues {ckpt} with its own recipe, and this command changes it: {changes}. "
                        f"Drop {'it' if len(diff) == 1 else 'them'} to continue the run as it was, or train with "
                        f"{'it' if len(diff) == 1 else 'them'} as a new run: another --out, or --overwrite to replace "
                        f"this one (a resumed run may change only {may}).")


def finished(args, state):
    """Why a run at state['step'] is complete under --steps / --time-budget (the run's, or this command's
    overrides), or None. -> (reason, how to extend it)"""
    total = args.steps if args.steps is not None else state["total_steps"]
    why, extend = [], []
    if total is not None and state["step"] >= total:
        why.append(f"it reached step {state['step']} (--steps {total})")
        extend.append(f"--steps (e.g. --steps {2 * max(total, state['step'])})")
    minutes = state["elapsed_s"] / 60
    if args.time_budget is not None and state["elapsed_s"] >= 60.0 * args.time_budget:     # as done() in run()
        why.append(f"it trained {minutes:.1f} minutes (--time-budget {args.time_budget:g})")
        extend.append(f"--time-budget (e.g. --time-budget {math.ceil(2 * max(args.time_budget, minutes))})")
    return (" and ".join(why), " and a larger ".join(extend)) if why else None


def run(args, given):
    from tqdm import tqdm
    out = Path(args.out)
    log = print
    state = None
    if args.resume:
        ckpt = out / "resume.npz"
        model, opt_state, state = load_resume(ckpt)
        check_resume_flags(args, given, state, ckpt)                # before any file is touched or any data read
        keep = CLI_ONLY | (RESUME_OVERRIDES & given)
        for k, v in state["args"].items():
            if k not in keep:
                setattr(args, k, v)
    if args.steps is None and args.time_budget is None:
        args.time_budget = DEFAULT_BUDGET_MIN
    if args.resume:
        complete = finished(args, state)
        if complete:                                                # nothing to train: change no file
            print(f"{out} is complete: {complete[0]}; nothing to do, no file changed. To train it further, "
                  f"resume with a larger {complete[1]}.")
            return state
    log(f"BLAS: {blas_kernel()} (NumPy {np.__version__})")          # the matmul kernel: half the step's time
    note = blas_override_note()
    if note:
        log(note)
    if args.resume:
        log(f"resuming {ckpt} at step {state['step']}")
    T = PRESETS[args.preset].max_position_embeddings
    started = (state or {}).get("files", {})                       # resuming: the vocab must be the run's own
    tok, tokens, valid, files = data.load_corpus(args.corpus, args.valid, args.vocab, args.cache_dir, args.data_dir,
                                                 log, expect_vocab=(started.get("vocab_file"), started.get("vocab_hash")),
                                                 seq_len=T)        # no validation file: the end of the stream
    config = get_config(args.preset, vocab_size=tok.vocab_size, hidden_dropout_prob=args.dropout,
                        attention_probs_dropout_prob=args.dropout)
    tok_info = {"vocab_size": tok.vocab_size, "special_ids": list(tok.special_ids), "mask_id": tok.mask_id,
                "is_continuation": tok.is_continuation}
    n_eval = min(args.eval_batches, (len(valid) // (T - 2)) // EVAL_ROWS)     # the same rows whatever --batch-size
    if n_eval < 1:
        raise UserError(f"the validation stream ({len(valid)} tokens) is too short for one batch of "
                        f"{EVAL_ROWS} x {T}; pass a larger --valid file.")
    eval_set = heldout_set(valid, T, tok, n_eval)
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
        config = model.config
        batches.load_state_dict(state["data"])
        rng.bit_generator.state = state["rng"]
        recs = metrics.read_metrics(out / "metrics.jsonl", upto=state["step"])     # drop lines after the checkpoint
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
        if args.steps is not None:
            state["total_steps"] = args.steps
    opt = AdamW(model.params, lr=args.lr, betas=(0.9, args.beta2), eps=1e-6, weight_decay=args.weight_decay)
    if args.resume:
        opt.load_state_dict(opt_state)
    workers = Workers(min(args.threads, args.batch_size), max(1, args.threads // min(args.threads, args.batch_size)))
    print(f"config: {config.to_json()}")
    print(f"recipe: {json.dumps(dict(sorted(vars(args).items())))}")
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
            total = total_steps()
            warmup = args.warmup if args.warmup is not None else max(1, int(args.warmup_frac * total))
            lr = lr_at(step, args.lr, warmup, total, args.schedule, args.min_lr)
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
            data.drop_resident_pages(tokens)                        # this step's rows of the token file: off the RSS
            is_eval = step % args.eval_every == 0 or done() or (args.stop_at is not None and step >= args.stop_at)
            if step % args.log_every == 0 or is_eval:
                rec = {"step": step, "loss": loss_acc / n_acc, "lr": lr, "grad_norm": res["grad_norm"],
                       **{f"grad_norm/{k}": v for k, v in metrics.grad_norms(res["grads"])[1].items()},
                       "tokens": state["tokens"], "elapsed_s": round(state["elapsed_s"], 3)}
                loss_acc, n_acc = 0.0, 0
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


# ---- command line ----

_count, _fraction = at_least(1), fraction()
CHECKS = {  # what each flag's value must be (config.py's argparse types): a bad one is a one-line error at once
    "corpus": existing_file, "valid": existing_file, "vocab": existing_file, "data_dir": existing_dir,
    "plot": existing_dir, "steps": _count, "batch_size": _count, "accum": _count, "threads": _count,
    "eval_every": _count, "eval_batches": _count, "save_every": _count, "log_every": _count, "stop_at": _count,
    "warmup": at_least(0), "seed": at_least(0), "time_budget": positive, "lr": positive, "qk_std": positive,
    "min_lr": at_least(0.0, float), "weight_decay": at_least(0.0, float), "clip": at_least(0.0, float),
    "warmup_frac": _fraction, "beta2": _fraction, "dropout": _fraction, "mask_prob": fraction(low_open=True),
}


def build_parser(suppress=False):
    """suppress=True: no defaults, so parse_args returns only the flags actually given (for --resume).
    Each flag named in CHECKS gets its check as its argparse type."""
    p = ArgumentParser(description="Pretrain Mini-BERT with masked language modelling.",
                       argument_default=argparse.SUPPRESS if suppress else None)

    def add(*flags, **kw):
        if suppress:
            kw.pop("default", None)
        check = CHECKS.get(flags[0][2:].replace("-", "_"))
        if check is not None:
            kw["type"] = check
        p.add_argument(*flags, **kw)
    add("--preset", default="mini", choices=sorted(PRESETS), help="model size (config.py)")
    add("--corpus", default=None, help="training text (default: download.py's resolver, wiki_en_2015 here)")
    add("--valid", default=None, help="held-out text (default: the validation file next to the corpus)")
    add("--data-dir", default=None, help="where to look for the default corpus (default: download.default_data_dir())")
    add("--vocab", default=None, help="WordPiece vocab file (default data/vocab-8192.txt, trained if missing)")
    add("--cache-dir", default=None, help="where the vocab and the prepared token files live (default data/)")
    add("--out", default=None, help="run directory (default runs/<preset>)")
    add("--steps", type=int, default=None,
        help="optimizer steps (overrides the default --time-budget; with --resume, a larger one extends the run)")
    add("--time-budget", type=float, default=None,
        help=f"minutes of training, evaluations included (default {DEFAULT_BUDGET_MIN:g}); the LR schedule's length "
             "is estimated from the measured speed so that its decay ends with the budget; with --resume, a larger one "
             "extends the run")
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
    add("--resume", action="store_true", default=False,
        help="continue the run in --out with its own recipe: only --steps, --time-budget (larger ones extend a "
             "finished run), --eval-every, --save-every, --log-every and --threads may differ from the run's; any "
             "other flag is refused unless it equals the run's value (paths compared resolved, numbers by value; "
             "a flag the run left unset counts as what its default chose: the files in run.json, the default "
             "folders). A finished run is left unchanged")
    add("--overwrite", action="store_true", default=False, help="start a new run in an --out that holds another")
    add("--quiet", action="store_true", default=False, help="no progress bar")
    add("--no-plots", action="store_true", default=False, help="do not draw the PNGs")
    add("--plot", default=None, metavar="DIR", help="only redraw the PNGs of the run in DIR from its metrics.jsonl")
    add("--stop-at", type=int, default=None, help=argparse.SUPPRESS)   # stop (and save) after this step
    return p


@cli
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--benchmark" in argv:                                       # the old spelling of `python benchmark.py`
        cmd = [sys.executable, str(REPO / "benchmark.py")] + [a for a in argv if a != "--benchmark"]
        raise SystemExit(subprocess.call(cmd))
    args = build_parser().parse_args(argv)
    given = set(vars(build_parser(suppress=True).parse_args(argv)))
    if args.out is None:
        args.out = str(Path("runs") / args.preset)
    if args.batch_size is None:                                     # 32-row micro-batches: bigger GEMMs than 8
        args.batch_size = 32                                        # (about 20% faster per token), RSS ~250 MB
    if args.accum is None:
        args.accum = max(1, 128 // args.batch_size)                 # logical batch 128 rows = 8,192 tokens
    if args.plot is not None:
        metrics.plot_training(Path(args.plot), metrics.read_metrics(Path(args.plot) / "metrics.jsonl"))
        return None
    if args.min_lr > args.lr:
        raise UserError(f"--min-lr {args.min_lr} is above the peak --lr {args.lr}; the decay goes down to it.")
    check_out_dir(args.out, args.resume, args.overwrite)
    tune_malloc()
    try:
        return run(args, given)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)


if __name__ == "__main__":
    main()
