"""SST-2 sentiment: fine-tune Mini-BERT end to end with a [CLS] classifier, next to two controls.

    pooled = tanh(h[:, 0] Wp + bp)            (B, H)   the [CLS] state through a fresh dense + tanh pooler
    logits = dropout(pooled) Wc + bc          (B, C)   C = 2; loss = cross-entropy
The gradient flows back through the head (below) and the whole encoder (gradients.encoder_backward).
AdamW, linear warmup (10%) then linear decay, dropout 0.1, clipping at 1.0, dynamic padding with length
buckets. Dev accuracy after every epoch; the best state is kept (and used for --predict).
Controls: the same recipe from a random init (--random-init), and a bag-of-words logistic regression
(NumPy, sparse) trained on ALL of train: the floor a sentence encoder has to beat.

SST-2 train has 67k phrases: one epoch of `mini` over all of them is 2,100 steps of about 0.1 s of CPU
(batch 32, dynamic padding), 4-10 minutes per seed on 2 shared cores. So the default is a fixed random subset
(--max_samples 6000, 2 epochs: about a minute per seed); pass --max_samples 0 for all of it.

Usage:
    python finetune_sst2.py --checkpoint runs/mini --seeds 3
    python finetune_sst2.py --checkpoint runs/mini --random-init --seeds 3
    python finetune_sst2.py --checkpoint runs/mini --predict my.tsv      # sentence<TAB>label (label optional)

Expect (12,000 phrases x 2 epochs x 3 seeds, about 80 ms per step): BoW floor 0.815 dev accuracy on all
of train, 0.810 on the same 12,000 phrases; random init 0.791 +- 0.004; a barely trained 600-step checkpoint
0.782 +- 0.004 (the README has the 60-minute checkpoint). The last line gives dev accuracy, mean +- sd.
"""
# B batch, T sequence, H hidden, C classes, N examples, F bag-of-words features
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from checkpoint import load_checkpoint, random_init_like
from config import ArgumentParser, UserError, at_least, cli, existing_file, fraction, positive
from download import dataset_path
from tokenizer import check_text_file


# ---- classifier head: forward and backward side by side ----

def head_init(H, C, rng, std=0.02):
    """Fresh pooler and classifier, BERT init: N(0, std^2) weights, zero biases."""
    return {"cls.Wp": (std * rng.standard_normal((H, H))).astype(np.float32), "cls.bp": np.zeros(H, np.float32),
            "cls.Wc": (std * rng.standard_normal((H, C))).astype(np.float32), "cls.bc": np.zeros(C, np.float32)}


def head_forward(h, head, p_drop=0.1, training=False, rng=None):
    """logits = dropout(tanh(h[:, 0] Wp + bp)) Wc + bc.   h: (B, T, H) -> logits (B, C)"""
    from model import dropout_forward, linear_forward
    a, c_p = linear_forward(h[:, 0], head["cls.Wp"], head["cls.bp"])        # (B, H)
    pooled = np.tanh(a)
    dropped, c_d = dropout_forward(pooled, p_drop, rng if training else None)
    logits, c_c = linear_forward(dropped, head["cls.Wc"], head["cls.bc"])   # (B, C)
    return logits, (h.shape, c_p, pooled, c_d, c_c)


def head_backward(dlogits, cache):
    """Reverse of head_forward. dpooled = dlogits Wc^T (* dropout mask);  da = dpooled * (1 - tanh(a)^2);
    dh[:, 0] = da Wp^T, zero at every other position.  -> (dh (B, T, H), grads of the head)"""
    from gradients import dropout_backward, linear_backward
    h_shape, c_p, pooled, c_d, c_c = cache
    g = {}
    ddropped, g["cls.Wc"], g["cls.bc"] = linear_backward(dlogits, c_c)      # (B, H)
    dpooled = dropout_backward(ddropped, c_d)
    da = dpooled * (1.0 - pooled * pooled)                                # forward: pooled = tanh(a)
    dcls, g["cls.Wp"], g["cls.bp"] = linear_backward(da, c_p)              # (B, H)
    dh = np.zeros(h_shape, dtype=dcls.dtype)                               # (B, T, H)
    dh[:, 0] = dcls                                                       # only [CLS] feeds the head
    return dh, g


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
        h, _ = model.encode(ids, attention_mask=mask)
        logits, _ = head_forward(h, head)
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

def finetune(model, tok, train, dev, seed, epochs, lr, batch_size, p_drop=0.1, desc="finetune"):
    """-> dict with dev accuracy per epoch, the best one, the train loss curve, and the best state."""
    from data import bucket_batches, pad_batch
    from gradients import encoder_backward
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
    hist = {"seed": seed, "loss": [], "dev_acc": [], "best_dev_acc": -1.0}
    best_state, step, t0 = None, 0, time.perf_counter()
    for epoch in range(epochs):
        bar = tqdm(bucket_batches(lengths, batch_size, rng), desc=f"{desc} seed {seed} epoch {epoch + 1}/{epochs}",
                   leave=False)
        for idx in bar:
            ids, mask = pad_batch([seqs[i] for i in idx], pad_id=0)                 # (B, Tb) dynamic padding
            h, cache = model.encode(ids, attention_mask=mask, training=True, rng=rng)
            logits, hcache = head_forward(h, head, p_drop, training=True, rng=rng)  # (B, C)
            loss, dlogits = mlm_loss(logits, y[idx])
            dh, grads = head_backward(dlogits, hcache)
            grads.update(encoder_backward(model, cache, dh))
            clip_grad_norm(grads, 1.0)
            opt.step(grads, lr=lr_at(step, lr, warmup, total))
            step += 1
            hist["loss"].append(float(loss))
            bar.set_postfix(loss=f"{np.mean(hist['loss'][-50:]):.3f}")
        acc = float((predict(model, head, dev_seqs).argmax(-1) == dev_y).mean())
        hist["dev_acc"].append(acc)
        print(f"{desc} seed {seed} | epoch {epoch + 1} | train loss {np.mean(hist['loss'][-steps_per_epoch:]):.4f} "
              f"| dev acc {acc:.4f}")
        if acc > hist["best_dev_acc"]:
            hist["best_dev_acc"] = acc
            best_state = {k: v.copy() for k, v in params.items()}
    for k, v in best_state.items():                                    # restore the best epoch, in place
        params[k][...] = v
    hist["ms_per_step"] = 1000 * (time.perf_counter() - t0) / max(step, 1)   # dev evaluations included
    return hist, head


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


@cli
def main(argv=None):
    count = at_least(1)
    p = ArgumentParser(description="Fine-tune Mini-BERT on SST-2 (and the BoW / random-init controls).")
    p.add_argument("--checkpoint", required=True, help="run folder written by train.py, or a .npz checkpoint")
    p.add_argument("--vocab", default=None, type=existing_file, help="vocab.txt (default: found next to the checkpoint)")
    p.add_argument("--random-init", action="store_true", help="control: same config and recipe, random weights")
    p.add_argument("--epochs", type=count, default=2)
    p.add_argument("--max_samples", type=at_least(0), default=6000, help="random train subset (0 = all 67,349 phrases)")
    p.add_argument("--lr", type=positive, default=3e-4, help="peak lr (3e-4 beat 1e-4 and 1e-3 in a 4000-phrase test)")
    p.add_argument("--batch-size", type=count, default=32)
    p.add_argument("--seeds", type=count, default=1, help="number of seeds (0, 1, ...); reports mean +- sd")
    p.add_argument("--dropout", type=fraction(), default=0.1, help="dropout in the encoder and on the pooled [CLS]")
    p.add_argument("--train", default=None, type=existing_file, help="SST-2 train.tsv (default: in the data dir)")
    p.add_argument("--dev", default=None, type=existing_file, help="SST-2 dev.tsv (default: in the data dir)")
    p.add_argument("--predict", default=None, type=existing_file,
                   help="a sentence<TAB>label .tsv to score with the best model")
    p.add_argument("--no-bow", action="store_true", help="skip the bag-of-words floor")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint dir>/eval)")
    args = p.parse_args(argv)
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
    to_predict = read_tsv(args.predict) if args.predict else None
    out = Path(args.out) if args.out else info["run_dir"] / "eval"
    out.mkdir(parents=True, exist_ok=True)
    res = {"checkpoint": str(info["checkpoint"]), "init": "random" if args.random_init else "pretrained",
           "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "dropout": args.dropout,
           "train_total": len(tr_s)}
    if not args.no_bow:
        res["bow_dev_acc"] = bow_logreg(tr_s, tr_y, dv_s, dv_y)
        print(f"bag-of-words logistic regression (all {len(tr_s)} train phrases): dev acc {res['bow_dev_acc']:.4f}")
    sub = np.random.default_rng(1234).permutation(len(tr_s))                 # the same subset for every seed
    sub = sub[:args.max_samples] if args.max_samples else sub
    if not args.no_bow and len(sub) < len(tr_s):
        res["bow_dev_acc_subset"] = bow_logreg([tr_s[i] for i in sub], tr_y[sub], dv_s, dv_y)
        print(f"bag-of-words logistic regression (the same {len(sub)} phrases as the model): dev acc "
              f"{res['bow_dev_acc_subset']:.4f}")
    seqs, n_trunc = encode(tok, [tr_s[i] for i in sub], T)
    dev_seqs, n_trunc_dev = encode(tok, dv_s, T)
    res.update(train_used=len(sub), truncated_train=n_trunc, truncated_dev=n_trunc_dev)
    print(f"SST-2: fine-tuning on {len(sub)} of {len(tr_s)} train phrases"
          f"{' (subset: pass --max_samples 0 for all)' if len(sub) < len(tr_s) else ''}, dev {len(dv_s)}; "
          f"truncated to T={T}: {n_trunc} train, {n_trunc_dev} dev")
    print(f"expect: {args.seeds} seed(s) x {args.epochs} epoch(s) x {-(-len(sub) // args.batch_size)} steps; "
          f"init {res['init']}")
    hists, best = [], None
    for seed in range(args.seeds):
        m = random_init_like(model, seed) if args.random_init else load_checkpoint(args.checkpoint, args.vocab)[0]
        hist, head = finetune(m, tok, (seqs, tr_y[sub]), (dev_seqs, dv_y), seed, args.epochs, args.lr,
                              args.batch_size, args.dropout, desc=res["init"])
        hists.append(hist)
        if best is None or hist["best_dev_acc"] > best[0]:
            best = (hist["best_dev_acc"], m, head)
    accs = np.array([h["best_dev_acc"] for h in hists])
    res.update(dev_acc_per_seed=accs.tolist(), dev_acc_mean=float(accs.mean()), dev_acc_sd=float(accs.std(ddof=1))
               if len(accs) > 1 else 0.0, runs=[{k: h[k] for k in ("seed", "dev_acc", "best_dev_acc", "ms_per_step")} for h in hists])
    if to_predict is not None:
        sents, labels = to_predict
        pseqs, _ = encode(tok, sents, T)
        probs = predict(best[1], best[2], pseqs)
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
    tag = res["init"]
    plot_curves({tag: hists}, out / f"sst2_curve_{tag}.png", f"SST-2 fine-tuning ({tag} init)")
    res["wall_s"] = round(time.time() - t0, 1)
    path = out / "sst2_results.json"                        # one file; each init (pretrained / random) its own key
    try:
        allres = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        allres = {}
    allres[tag] = res | {"curves": hists}
    for k in ("bow_dev_acc", "bow_dev_acc_subset"):
        if k in res:
            allres[k] = res[k]
    path.write_text(json.dumps(allres, indent=2), encoding="utf-8")
    print(f"wrote {path} (key '{tag}') and {out / f'sst2_curve_{tag}.png'} in {res['wall_s']:.0f} s")
    bow = f" | BoW floor {res['bow_dev_acc']:.4f}" if "bow_dev_acc" in res else ""
    print(f"SST-2 dev accuracy ({tag} init, {len(accs)} seed(s)): {res['dev_acc_mean']:.4f} +- {res['dev_acc_sd']:.4f}{bow}")
    return res


if __name__ == "__main__":
    main()
