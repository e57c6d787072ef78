"""SST-2 sentiment: fine-tune Mini-BERT end to end with a [CLS] classifier, next to two controls.

    pooled = tanh(h[:, 0] Wp + bp)            (B, H)   the [CLS] state through a fresh dense + tanh pooler
    logits = dropout(pooled) Wc + bc          (B, C)   C = 2; loss = cross-entropy
The gradient flows back through the head (below) and the whole encoder. Only h[:, 0] is read, so the last
layer's FFN sublayer runs on the [CLS] rows alone: exact (it is per position, as in the MLM path's masked
rows) and about 15% less CPU. AdamW, linear warmup (10%) then linear decay, dropout 0.1, clipping at 1.0,
dynamic padding with length buckets. Dev accuracy after every epoch; the best epoch's state is kept (and
used for --predict). Controls: the same recipe from a random init (--random-init, or --with-random-init for
both in one pool), and a bag-of-words logistic regression (NumPy, sparse) on all of train: the floor a
sentence encoder has to beat.

The default recipe uses all 67,349 train phrases: batch 128, peak lr 1e-3, at most 2 epochs, chosen on dev
with --sweep (README, "SST-2 fine-tuning recipe"). Runs (seeds, inits, sweep settings) go to --jobs worker
processes, one per core by default, one BLAS thread each; a run gives the same numbers in a worker as here.

Usage:
    python finetune_sst2.py --checkpoint runs/mini --seeds 3
    python finetune_sst2.py --checkpoint runs/mini --seeds 3 --with-random-init   # + the control (what evaluate.py runs)
    python finetune_sst2.py --checkpoint runs/mini --random-init --seeds 3
    python finetune_sst2.py --checkpoint runs/mini --sweep 32:1e-4,32:3e-4,128:3e-4,128:1e-3 --epochs 3
    python finetune_sst2.py --checkpoint runs/mini --predict my.tsv      # sentence<TAB>label (label optional)

Expect (the 10-minute study checkpoint runs/study/b32_lr5e-4_prior, all phrases, batch 128, lr 1e-3, seed 0, a
3-epoch schedule): dev accuracy 0.798, 0.804, 0.788 after epochs 1, 2, 3 (0.804 kept); the BoW floor 0.815.
One run of the default recipe: about 250-300 s of CPU (2 x 527 steps, about 0.25 s each, one BLAS thread);
3 seeds with --jobs 2: about 10 minutes on 2 quiet cores.
The last line gives dev accuracy, mean +- sd over seeds (with --sweep: the best setting).
"""
# B batch, T sequence, H hidden, C classes, N examples, F bag-of-words features
import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from checkpoint import load_checkpoint, random_init_like
from config import ArgumentParser, UserError, at_least, cli, existing_file, fraction, positive
from download import dataset_path
from tokenizer import check_text_file

BATCH, LR, EPOCHS = 128, 1e-3, 2     # the default recipe, chosen on dev with --sweep (README: SST-2 recipe)


# ---- classifier head: forward and backward side by side ----

def head_init(H, C, rng, std=0.02):
    """Fresh pooler and classifier, BERT init: N(0, std^2) weights, zero biases."""
    return {"cls.Wp": (std * rng.standard_normal((H, H))).astype(np.float32), "cls.bp": np.zeros(H, np.float32),
            "cls.Wc": (std * rng.standard_normal((H, C))).astype(np.float32), "cls.bc": np.zeros(C, np.float32)}


def head_forward(x, head, p_drop=0.1, training=False, rng=None):
    """logits = dropout(tanh(x Wp + bp)) Wc + bc.   x: (B, H) the [CLS] states h[:, 0] -> logits (B, C)"""
    from model import dropout_forward, linear_forward
    a, c_p = linear_forward(x, head["cls.Wp"], head["cls.bp"])              # (B, H)
    pooled = np.tanh(a)
    dropped, c_d = dropout_forward(pooled, p_drop, rng if training else None)
    logits, c_c = linear_forward(dropped, head["cls.Wc"], head["cls.bc"])   # (B, C)
    return logits, (c_p, pooled, c_d, c_c)


def head_backward(dlogits, cache):
    """Reverse of head_forward. dpooled = dlogits Wc^T (* dropout mask);  da = dpooled * (1 - tanh(a)^2);
    dx = da Wp^T.  -> (dx (B, H), grads of the head)"""
    from gradients import dropout_backward, linear_backward
    c_p, pooled, c_d, c_c = cache
    g = {}
    ddropped, g["cls.Wc"], g["cls.bc"] = linear_backward(dlogits, c_c)      # (B, H)
    dpooled = dropout_backward(ddropped, c_d)
    da = dpooled * (1.0 - pooled * pooled)                                # forward: pooled = tanh(a)
    dx, g["cls.Wp"], g["cls.bp"] = linear_backward(da, c_p)                # (B, H)
    return dx, g


# ---- the encoder, read at [CLS] only ----

def cls_forward(model, ids, attention_mask=None, training=False, rng=None):
    """h[:, 0] of model.encode(ids), computed with the last layer's queries and FFN sublayer on the B [CLS] rows
    only: row b of the last layer's output depends on the rest only through its keys and values, so this is
    exact (the trick of the MLM path, with rows = [CLS]).
    ids: (B, T) -> (cls (B, H), cache for cls_backward)"""
    ids = model._check_inputs(ids, attention_mask, None, training, rng)
    B, T = ids.shape
    return model._encode(ids, attention_mask, np.arange(B) * T, training, rng)   # row b*T = (b, 0)


def cls_backward(model, cache, dcls):
    """dcls: (B, H), gradient w.r.t. cls_forward's output -> grads for every emb.* and layer*.* key."""
    from gradients import _encoder_backward
    return _encoder_backward(model, cache, dcls)


# ---- data ----

def encode(tok, sentences, T):
    """[CLS] pieces [SEP], cut to T. -> (list of id lists, number of sentences that were truncated)"""
    seqs = tok.encode_batch(sentences, add_special_tokens=True, num_workers=1)
    n_trunc = sum(len(s) > T for s in seqs)
    return [s if len(s) <= T else s[:T - 1] + [tok.sep_id] for s in seqs], n_trunc


def predict(model, head, seqs, batch_size=128):
    """Class probabilities (N, C) with dropout off."""
    from data import pad_batch
    order = np.argsort([len(s) for s in seqs], kind="stable")
    probs = np.zeros((len(seqs), head["cls.bc"].shape[0]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        ids, mask = pad_batch([seqs[i] for i in idx], pad_id=0)
        x, _ = cls_forward(model, ids, mask)                              # (B, H)
        logits, _ = head_forward(x, head)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probs[idx] = e / e.sum(-1, keepdims=True)
    return probs


def read_tsv(path):
    """Any 'sentence<TAB>label' file (header optional, label optional) -> (sentences, labels or None)."""
    check_text_file(path)                                   # UTF-8 (else file:line) and not empty
    rows = [line.rstrip("\n").split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if rows and rows[0][0].strip().lower() == "sentence":
        rows = rows[1:]
    sents = [r[0].strip() for r in rows]
    has = all(len(r) > 1 and r[1].strip() in ("0", "1") for r in rows)
    return sents, (np.array([int(r[1]) for r in rows]) if has and rows else None)


# ---- one fine-tuning run ----

def finetune(model, tok, train, dev, seed, epochs, lr, batch_size, p_drop=0.1, desc="finetune", position=None):
    """AdamW (wd 0.01), warmup 10% then linear decay, clipping at 1.0; dev accuracy after every epoch and
    the best epoch's state restored into model.params and the head.
    -> (hist: dev accuracy per epoch, the best one, the train loss per step, timings; the head)"""
    from data import bucket_batches, pad_batch
    from mlm import mlm_loss
    from optimizer import AdamW, clip_grad_norm, lr_at
    rng = np.random.default_rng(seed)
    (seqs, y), (dev_seqs, dev_y) = train, dev
    # fine-tuning dropout everywhere BERT has it, whatever the pretraining run used (it may have trained without)
    model.config = dataclasses.replace(model.config, hidden_dropout_prob=p_drop, attention_probs_dropout_prob=p_drop)
    head = head_init(model.config.hidden_size, 2, rng)
    params = {k: v for k, v in model.params.items() if not k.startswith("mlm.")}   # the MLM head is unused
    params.update(head)
    opt = AdamW(params, lr=lr, weight_decay=0.01)
    steps_per_epoch = -(-len(seqs) // batch_size)
    total, warmup = epochs * steps_per_epoch, max(1, epochs * steps_per_epoch // 10)
    lengths = [len(s) for s in seqs]
    hist = {"seed": seed, "loss": [], "dev_acc": [], "best_dev_acc": -1.0, "best_epoch": 0}
    best_state, step, t0, c0 = None, 0, time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        bar = tqdm(bucket_batches(lengths, batch_size, rng), desc=f"{desc} seed {seed} epoch {epoch + 1}/{epochs}",
                   leave=False, position=position)
        for idx in bar:
            ids, mask = pad_batch([seqs[i] for i in idx], pad_id=0)                 # (B, Tb) dynamic padding
            x, cache = cls_forward(model, ids, mask, training=True, rng=rng)      # (B, H)
            logits, hcache = head_forward(x, head, p_drop, training=True, rng=rng)  # (B, C)
            loss, dlogits = mlm_loss(logits, y[idx])
            dx, grads = head_backward(dlogits, hcache)
            grads.update(cls_backward(model, cache, dx))
            clip_grad_norm(grads, 1.0)
            opt.step(grads, lr=lr_at(step, lr, warmup, total))
            step += 1
            hist["loss"].append(float(loss))
            bar.set_postfix(loss=f"{np.mean(hist['loss'][-50:]):.3f}")
        acc = float((predict(model, head, dev_seqs).argmax(-1) == dev_y).mean())
        hist["dev_acc"].append(acc)
        print(f"{desc} seed {seed} | epoch {epoch + 1} | train loss {np.mean(hist['loss'][-steps_per_epoch:]):.4f} "
              f"| dev acc {acc:.4f}", flush=True)
        if acc > hist["best_dev_acc"]:
            hist["best_dev_acc"], hist["best_epoch"] = acc, epoch + 1
            best_state = {k: v.copy() for k, v in params.items()}
    for k, v in best_state.items():                                    # restore the best epoch, in place
        params[k][...] = v
    hist["wall_s"], hist["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0   # dev evaluations included
    hist["ms_per_step"] = 1000 * hist["wall_s"] / max(step, 1)
    return hist, head


# ---- runs in parallel: one spawn worker per run, one BLAS thread each ----

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_one(task):
    """One fine-tuning run described by a picklable dict (a worker's whole input): loads its own model,
    from the checkpoint or a random init. -> (hist, the fine-tuned params + head if task["keep"] else None)"""
    from workers import tune_malloc
    tune_malloc()                          # keep freed memory: no page faults for each step's temporaries (-8% CPU)
    model = load_checkpoint(task["checkpoint"], task["vocab"])[0]
    if task["init"] == "random":
        model = random_init_like(model, task["seed"])
    hist, head = finetune(model, None, task["train"], task["dev"], task["seed"], task["epochs"], task["lr"],
                          task["batch_size"], task["dropout"], desc=task["desc"], position=task.get("position"))
    hist.update(init=task["init"], lr=task["lr"], batch_size=task["batch_size"])
    return hist, ({**model.params, **head} if task.get("keep") else None)


def run_tasks(tasks, jobs):
    """run_one over every task, results in task order: in this process when jobs <= 1, else in `jobs` worker
    processes started with 'spawn' (Windows-safe) and one BLAS thread each, so `jobs` runs fill `jobs` cores.
    A run depends only on its task (its seed drives every random draw), so the results equal a sequential run's."""
    jobs = max(1, min(jobs, len(tasks)))
    tasks = [dict(t, position=i % jobs if jobs > 1 else None) for i, t in enumerate(tasks)]
    if jobs == 1:
        return [run_one(t) for t in tasks]
    saved = {k: os.environ.get(k) for k in BLAS_ENV}
    os.environ.update({k: "1" for k in BLAS_ENV})                 # read by NumPy when each worker imports it
    try:
        pool = mp.get_context("spawn").Pool(jobs)                  # the workers start here, with this environment
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        out = pool.map(_run_in_worker, tasks, chunksize=1)
    except BaseException:
        pool.terminate()
        raise
    pool.close()
    pool.join()
    return out


def _run_in_worker(task):
    """run_one, with a SystemExit turned into an error the pool sends back: a worker process that exits
    would leave its task unanswered and the pool waiting forever."""
    try:
        return run_one(task)
    except SystemExit as e:
        raise RuntimeError(f"fine-tuning run {task['desc']} seed {task['seed']} stopped: exit {e.code}") from None


def parse_sweep(text):
    """'32:1e-4,128:3e-4' -> [(32, 0.0001), (128, 0.0003)]; None if an item is not batch:lr."""
    out = []
    for item in text.split(","):
        b, _, lr = item.strip().partition(":")
        try:
            out.append((int(b), float(lr)))
        except ValueError:
            return None
        if out[-1][0] < 1 or not out[-1][1] > 0:
            return None
    return out or None


def sweep_pairs(text):
    """argparse type for --sweep: parse_sweep or a one-line usage error."""
    pairs = parse_sweep(text)
    if pairs is None:
        raise argparse.ArgumentTypeError(f"must be batch:lr pairs like 32:1e-4,128:1e-3 (batch >= 1, lr > 0), "
                                         f"got {text!r}")
    return pairs


def summarize(hists):
    """Best-epoch dev accuracy per seed -> mean, sd (ddof 1; 0 for one seed), and per-run timings."""
    accs = np.array([h["best_dev_acc"] for h in hists])
    return {"dev_acc_per_seed": accs.tolist(), "dev_acc_mean": float(accs.mean()),
            "dev_acc_sd": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
            "runs": [{k: h[k] for k in ("seed", "dev_acc", "best_dev_acc", "best_epoch", "ms_per_step", "cpu_s",
                                        "wall_s")} for h in hists]}


# ---- bag-of-words floor: logistic regression on sparse counts ----

def bow_features(sentences, vocab=None):
    """Binary bag of lowercased whitespace words as (rows, cols) index pairs; vocab built when None."""
    if vocab is None:
        vocab = {w: i for i, w in enumerate(sorted({w for s in sentences for w in s.lower().split()}))}
    rows, cols = [], []
    for r, s in enumerate(sentences):
        c = sorted({vocab[w] for w in s.lower().split() if w in vocab})
        rows += [r] * len(c); cols += c
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), vocab


def bow_logreg(train_sents, train_y, dev_sents, dev_y, epochs=4, lr=0.05, batch_size=256, wd=1e-4, seed=0):
    """p(y=1|x) = sigmoid(x.w + b) on binary word indicators; AdamW on mini-batches.
    Sparse: score_r = sum_{(r,c)} w_c;  dw_c = sum_{(r,c)} dscore_r. -> best dev accuracy over epochs."""
    from optimizer import AdamW
    rng = np.random.default_rng(seed)
    _, _, vocab = bow_features(train_sents)
    params = {"w": np.zeros((len(vocab), 1)), "b": np.zeros(1)}            # w 2-D so that AdamW decays it
    opt = AdamW(params, lr=lr, weight_decay=wd)
    d_rows, d_cols, _ = bow_features(dev_sents, vocab)
    train_sents = np.array(train_sents, dtype=object)
    best = 0.0
    for _ in range(epochs):
        perm = rng.permutation(len(train_sents))
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            rows, cols, _ = bow_features(train_sents[idx], vocab)
            score = np.bincount(rows, weights=params["w"][cols, 0], minlength=len(idx)) + params["b"][0]   # (B,)
            dscore = (1.0 / (1.0 + np.exp(-score)) - train_y[idx]) / len(idx)    # sigmoid - y, mean over batch
            dw = np.bincount(cols, weights=dscore[rows], minlength=len(vocab))[:, None]                    # (F, 1)
            opt.step({"w": dw, "b": np.array([dscore.sum()])})
        score = np.bincount(d_rows, weights=params["w"][d_cols, 0], minlength=len(dev_sents)) + params["b"][0]
        best = max(best, float(((score > 0) == dev_y).mean()))
    return best


def plot_curves(runs, path, title):
    from metrics import _plt
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, hists in runs.items():
        for h in hists:
            loss = np.convolve(h["loss"], np.ones(25) / 25, mode="valid") if len(h["loss"]) > 25 else h["loss"]
            a1.plot(loss, lw=0.8, label=f"{name} seed {h['seed']}")
            a2.plot(range(1, len(h["dev_acc"]) + 1), h["dev_acc"], marker="o", label=f"{name} seed {h['seed']}")
    a1.set_xlabel("step"); a1.set_ylabel("train loss (25-step mean)"); a1.legend(fontsize=6)
    a2.set_xticks(range(1, max(len(h["dev_acc"]) for hs in runs.values() for h in hs) + 1))
    a2.set_xlabel("epoch"); a2.set_ylabel("dev accuracy"); a2.legend(fontsize=6)
    fig.suptitle(title); fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def sweep_report(configs, hists, seeds, epochs, out):
    """Dev accuracy by epoch (mean over seeds) for every (batch, lr): a markdown table, a JSON and a plot."""
    from metrics import _plt
    rows, table = [], ["| batch | lr | " + " | ".join(f"dev acc epoch {e + 1}" for e in range(epochs))
                       + " | best (epoch) | CPU s per epoch |", "|---" * (epochs + 4) + "|"]
    for i, (b, lr) in enumerate(configs):
        hs = hists[i * seeds:(i + 1) * seeds]
        by_epoch = np.mean([h["dev_acc"] for h in hs], axis=0)               # (epochs,)
        cpu = float(np.mean([h["cpu_s"] for h in hs])) / epochs
        rows.append({"batch_size": b, "lr": lr, "dev_acc_by_epoch": by_epoch.tolist(), "best_epoch": int(by_epoch.argmax()) + 1,
                     "best_dev_acc": float(by_epoch.max()), "cpu_s_per_epoch": cpu, "runs": hs})
        table.append(f"| {b} | {lr:g} | " + " | ".join(f"{a:.4f}" for a in by_epoch)
                     + f" | {by_epoch.max():.4f} ({by_epoch.argmax() + 1}) | {cpu:.0f} |")
    print("\n".join(table))
    (out / "sst2_sweep.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
        ax.plot(range(1, epochs + 1), r["dev_acc_by_epoch"], marker="o", label=f"batch {r['batch_size']}, lr {r['lr']:g}")
    ax.set_xticks(range(1, epochs + 1)); ax.set_xlabel("epoch"); ax.set_ylabel(f"dev accuracy (mean of {seeds} seed(s))")
    ax.legend(fontsize=7); fig.tight_layout(); fig.savefig(out / "sst2_sweep.png", dpi=110); plt.close(fig)
    print(f"wrote {out / 'sst2_sweep.json'} and {out / 'sst2_sweep.png'}")
    best = max(rows, key=lambda r: r["best_dev_acc"])
    print(f"sweep best: batch {best['batch_size']}, lr {best['lr']:g}, epoch {best['best_epoch']} of {epochs}: "
          f"dev acc {best['best_dev_acc']:.4f} (mean of {seeds} seed(s))")
    return rows


@cli
def main(argv=None):
    count = at_least(1)
    p = ArgumentParser(description="Fine-tune Mini-BERT on SST-2 (and the BoW / random-init controls).")
    p.add_argument("--checkpoint", required=True, help="run folder written by train.py, or a .npz checkpoint")
    p.add_argument("--vocab", default=None, type=existing_file, help="vocab.txt (default: found next to the checkpoint)")
    p.add_argument("--random-init", action="store_true", help="control: same config and recipe, random weights")
    p.add_argument("--with-random-init", action="store_true",
                   help="also run the random-init control, same recipe and seeds, in the same worker pool")
    p.add_argument("--epochs", type=count, default=EPOCHS, help=f"max epochs; the best on dev is kept (default {EPOCHS})")
    p.add_argument("--max_samples", type=at_least(0), default=0, help="random train subset (default 0 = all 67,349 phrases)")
    p.add_argument("--lr", type=positive, default=LR, help=f"peak lr (default {LR:g}, chosen with --sweep: see README)")
    p.add_argument("--batch-size", type=count, default=BATCH, help=f"default {BATCH}")
    p.add_argument("--seeds", type=count, default=1, help="number of seeds (0, 1, ...); reports mean +- sd")
    p.add_argument("--dropout", type=fraction(), default=0.1, help="dropout in the encoder and on the pooled [CLS]")
    p.add_argument("--jobs", type=count, default=os.cpu_count() or 1,
                   help="runs at the same time, one worker process and one BLAS thread each (default: every core)")
    p.add_argument("--sweep", default=None, type=sweep_pairs, metavar="B:LR,...",
                   help="dev accuracy per epoch for each batch:lr pair (e.g. 32:1e-4,128:1e-3), no BoW, no --predict")
    p.add_argument("--train", default=None, type=existing_file, help="SST-2 train.tsv (default: in the data dir)")
    p.add_argument("--dev", default=None, type=existing_file, help="SST-2 dev.tsv (default: in the data dir)")
    p.add_argument("--predict", default=None, type=existing_file,
                   help="a sentence<TAB>label .tsv to score with the best model")
    p.add_argument("--no-bow", action="store_true", help="skip the bag-of-words floor")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint dir>/eval)")
    args = p.parse_args(argv)
    configs = args.sweep or [(args.batch_size, args.lr)]
    t0 = time.time()
    from data import read_sst2
    model, tok, info = load_checkpoint(args.checkpoint, args.vocab)
    T = model.config.max_position_embeddings
    splits = {}
    for split in ("train", "dev"):                          # every file read before any work or output
        path = Path(getattr(args, split) or dataset_path("sst2_" + split))
        splits[split] = read_sst2(path)
        if len(splits[split][0]) == 0:
            raise UserError(f"{path} holds no sentence<TAB>label row; pass --{split} an SST-2 .tsv file.")
    (tr_s, tr_y), (dv_s, dv_y) = splits["train"], splits["dev"]
    to_predict = read_tsv(args.predict) if args.predict and args.sweep is None else None
    out = Path(args.out) if args.out else info["run_dir"] / "eval"
    out.mkdir(parents=True, exist_ok=True)
    inits = ["random"] if args.random_init else ["pretrained"] + (["random"] if args.with_random_init else [])
    res = {"checkpoint": str(info["checkpoint"]), "init": inits[0], "epochs": args.epochs, "lr": args.lr,
           "batch_size": args.batch_size, "dropout": args.dropout, "train_total": len(tr_s)}
    bow = not args.no_bow and args.sweep is None
    if bow:
        res["bow_dev_acc"] = bow_logreg(tr_s, tr_y, dv_s, dv_y)
        print(f"bag-of-words logistic regression (all {len(tr_s)} train phrases): dev acc {res['bow_dev_acc']:.4f}")
    sub = np.random.default_rng(1234).permutation(len(tr_s))                 # the same subset for every seed
    sub = sub[:args.max_samples] if args.max_samples else sub
    if bow and len(sub) < len(tr_s):
        res["bow_dev_acc_subset"] = bow_logreg([tr_s[i] for i in sub], tr_y[sub], dv_s, dv_y)
        print(f"bag-of-words logistic regression (the same {len(sub)} phrases as the model): dev acc "
              f"{res['bow_dev_acc_subset']:.4f}")
    seqs, n_trunc = encode(tok, [tr_s[i] for i in sub], T)
    dev_seqs, n_trunc_dev = encode(tok, dv_s, T)
    res.update(train_used=len(sub), truncated_train=n_trunc, truncated_dev=n_trunc_dev)
    print(f"SST-2: fine-tuning on {len(sub)} of {len(tr_s)} train phrases"
          f"{' (subset: pass --max_samples 0 for all)' if len(sub) < len(tr_s) else ''}, dev {len(dv_s)}; "
          f"truncated to T={T}: {n_trunc} train, {n_trunc_dev} dev")
    base = {"checkpoint": str(info["checkpoint"]), "vocab": str(info["vocab"]), "train": (seqs, tr_y[sub]),
            "dev": (dev_seqs, dv_y), "epochs": args.epochs, "dropout": args.dropout}
    tasks = [dict(base, init=init, seed=seed, batch_size=b, lr=lr, keep=to_predict is not None and init == inits[0],
                  desc=init if args.sweep is None else f"batch {b} lr {lr:g}")
             for b, lr in configs for init in inits for seed in range(args.seeds)]
    jobs = min(args.jobs, len(tasks))
    n_set = f"{len(configs)} (batch, lr) settings x " if args.sweep is not None else ""
    print(f"expect: {n_set}{args.seeds} seed(s) x {args.epochs} epoch(s) x "
          f"{' / '.join(str(-(-len(sub) // b)) for b, _ in configs)} steps; init {' + '.join(inits)}; "
          f"{jobs} run(s) at a time")
    results = run_tasks(tasks, jobs)
    hists = [h for h, _ in results]
    if args.sweep is not None:
        print(f"sweep: {len(configs)} (batch, lr) settings x {args.seeds} seed(s) x {args.epochs} epoch(s), "
              f"{inits[0]} init, {len(sub)} train phrases; dev accuracy:")
        return {"sweep": sweep_report(configs, hists, args.seeds, args.epochs, out)}
    by_init = {init: hists[i * args.seeds:(i + 1) * args.seeds] for i, init in enumerate(inits)}
    allres = {}
    path = out / "sst2_results.json"                        # one file; each init (pretrained / random) its own key
    try:
        allres = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        allres = {}
    for init, hs in by_init.items():
        r = res if init == inits[0] else dict(res, init=init)
        r.update(summarize(hs))
        allres[init] = {k: v for k, v in r.items() if k != "random_init"} | {"curves": hs}
        plot_curves({init: hs}, out / f"sst2_curve_{init}.png", f"SST-2 fine-tuning ({init} init)")
        if init != inits[0]:
            res["random_init"] = r
    if to_predict is not None:
        hs = by_init[inits[0]]
        state = results[int(np.argmax([h["best_dev_acc"] for h in hs]))][1]     # the best seed's fine-tuned weights
        m = model if inits[0] == "pretrained" else random_init_like(model)   # every param but mlm.* replaced below
        m.params.update({k: v for k, v in state.items() if not k.startswith("cls.")})
        head = {k: v for k, v in state.items() if k.startswith("cls.")}
        sents, labels = to_predict
        pseqs, _ = encode(tok, sents, T)
        probs = predict(m, head, pseqs)
        pred_path = out / "predictions.tsv"
        with open(pred_path, "w", encoding="utf-8") as f:
            f.write("sentence\tprediction\tp_positive\n")
            f.writelines(f"{s}\t{int(q.argmax())}\t{q[1]:.4f}\n" for s, q in zip(sents, probs))
        if labels is not None:
            res["predict_acc"] = float((probs.argmax(-1) == labels).mean())
            print(f"--predict {args.predict}: accuracy {res['predict_acc']:.4f} on {len(sents)} sentences")
        else:
            print(f"--predict {args.predict}: {len(sents)} sentences, not every row has a 0/1 label: no accuracy")
        print(f"predictions written to {pred_path}")
    res["wall_s"] = round(time.time() - t0, 1)
    for k in ("bow_dev_acc", "bow_dev_acc_subset"):
        if k in res:
            allres[k] = res[k]
    path.write_text(json.dumps(allres, indent=2), encoding="utf-8")
    cpu = np.mean([h["cpu_s"] for h in hists])
    print(f"wrote {path} (key{'s' if len(inits) > 1 else ''} {', '.join(repr(i) for i in inits)}) and "
          f"{', '.join(str(out / f'sst2_curve_{i}.png') for i in inits)} in {res['wall_s']:.0f} s "
          f"({cpu:.0f} s CPU per run)")
    floor = f" | BoW floor {res['bow_dev_acc']:.4f}" if "bow_dev_acc" in res else ""
    ctrl = (f" | random init {res['random_init']['dev_acc_mean']:.4f} +- {res['random_init']['dev_acc_sd']:.4f}"
            if "random_init" in res else "")
    print(f"SST-2 dev accuracy ({inits[0]} init, {args.seeds} seed(s)): {res['dev_acc_mean']:.4f} +- "
          f"{res['dev_acc_sd']:.4f}{ctrl}{floor}")
    return res


if __name__ == "__main__":
    main()
