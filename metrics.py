"""Metrics and plots for looking inside Mini-BERT: MLM accuracy/perplexity, gradient norms, attention
entropy, effective rank, token diversity, layer similarity (linear CKA), the plot helpers, and train.py's training curves (plot_training).

Usage:
    python metrics.py --test        # every metric on a hand-computed case (and on a tiny model if model.py exists)

Expect: one line per metric, `name | got ... | want ... | ok`, then `metrics: 14/14 ok` last (12 without model.py).
"""
# B batch, T sequence, H hidden, A heads, L layers, V vocab, N rows (tokens or examples)
import argparse
import json
import math
import os
from pathlib import Path

import numpy as np

IGNORE_INDEX = -100


# ---- MLM ----

def masked_accuracy(logits, labels):
    """acc = 1/N sum_{i: y_i != -100} 1[argmax_v logits_iv == y_i].   logits (..., V), labels (...) -> float"""
    y = labels.reshape(-1)
    scored = y != IGNORE_INDEX
    if not scored.any():
        return float("nan")
    pred = logits.reshape(-1, logits.shape[-1])[scored].argmax(-1)   # (N,)
    return float((pred == y[scored]).mean())


def masked_cross_entropy(logits, labels):
    """ce = -1/N sum_{i: y_i != -100} log softmax(logits_i)[y_i]   (log-sum-exp shifted by the row max)"""
    y = labels.reshape(-1)
    scored = y != IGNORE_INDEX
    z = logits.reshape(-1, logits.shape[-1])[scored].astype(np.float64)   # (N, V)
    z = z - z.max(-1, keepdims=True)
    logp = z[np.arange(len(z)), y[scored]] - np.log(np.exp(z).sum(-1))   # (N,)
    return float(-logp.mean())


def perplexity(mean_ce):
    """ppl = exp(mean masked cross-entropy): the effective number of equally likely choices."""
    return float(math.exp(min(mean_ce, 700.0)))


# ---- gradients and updates ----

def group_of(name):
    """'layer1.attn.Wq' -> 'layer1', 'emb.tok' -> 'emb' (the contract's per-layer grouping)."""
    return name.split(".", 1)[0]


def grad_norms(grads):
    """global = sqrt(sum_k ||g_k||^2); per group the same sum over its keys.  -> (global, {group: norm})"""
    sq = {}
    for k, g in grads.items():
        sq[group_of(k)] = sq.get(group_of(k), 0.0) + float(np.sum(np.square(g, dtype=np.float64)))
    return math.sqrt(sum(sq.values())), {k: math.sqrt(v) for k, v in sq.items()}


def update_ratios(before, after):
    """ratio_k = ||after_k - before_k|| / ||before_k|| per param (about 1e-3 is healthy for Adam, Karpathy)."""
    return {k: float(np.linalg.norm(after[k] - before[k]) / max(np.linalg.norm(before[k]), 1e-12)) for k in before}


def weight_norms(params):
    """||W||_F per group (sqrt of the sum of squares of its arrays)."""
    return grad_norms(params)[1]


# ---- attention ----

def attention_entropy(attn_probs, attention_mask=None):
    """H = -sum_j p_ij log p_ij, averaged over batch and real query rows i.  list of L (B, A, T, T) -> (L, A)
    Uniform attention over k real keys gives ln k; attending to one key gives 0."""
    out = []
    for p in attn_probs:
        B, A, T, _ = p.shape
        ent = -(p * np.log(np.maximum(p, 1e-30))).sum(-1)                  # (B, A, T)
        w = np.ones((B, T)) if attention_mask is None else np.asarray(attention_mask, dtype=np.float64)
        out.append((ent * w[:, None, :]).sum((0, 2)) / w.sum())              # (A,)
    return np.array(out)                                                      # (L, A)


# ---- representations ----

def effective_rank(M, center=False):
    """erank = exp(-sum_i q_i log q_i), q_i = s_i / sum_j s_j over singular values s (Roy & Vetterli 2007).
    1 for a rank-1 matrix, n for an n x n identity."""
    M = np.asarray(M, dtype=np.float64)
    if center:
        M = M - M.mean(0, keepdims=True)
    s = np.linalg.svd(M, compute_uv=False)
    q = s[s > 1e-12 * s.max()] / s.sum()
    return float(np.exp(-(q * np.log(q)).sum()))


def token_diversity(X):
    """Mean pairwise cosine over the N rows of X (N, H), i != j:  (||sum_i u_i||^2 - N) / (N (N-1)), u = x/||x||.
    0 for orthogonal rows, 1 when every row points the same way (representation collapse)."""
    U = np.asarray(X, dtype=np.float64)
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    N = len(U)
    s = U.sum(0)
    return float((s @ s - N) / (N * (N - 1)))


def linear_cka(X, Y):
    """CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), columns centred (Kornblith et al. 2019).
    X (N, H1), Y (N, H2) -> float in [0, 1]; invariant to rotation and isotropic scaling."""
    X = np.asarray(X, dtype=np.float64); X = X - X.mean(0)
    Y = np.asarray(Y, dtype=np.float64); Y = Y - Y.mean(0)
    return float(np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)))


def layer_cka(hidden_states, attention_mask=None):
    """CKA between every pair of layers on the real tokens.  list of L+1 (B, T, H) -> (L+1, L+1)"""
    keep = slice(None) if attention_mask is None else np.asarray(attention_mask).reshape(-1).astype(bool)
    reps = [h.reshape(-1, h.shape[-1])[keep] for h in hidden_states]          # each (N, H)
    n = len(reps)
    return np.array([[linear_cka(reps[i], reps[j]) for j in range(n)] for i in range(n)])


# ---- plots (matplotlib, Agg) ----

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_attention_grid(attn, tokens, path, title=""):
    """attn: list of L arrays (A, T, T) for ONE sentence; tokens: its T pieces. One heatmap per (layer, head)."""
    plt = _plt()
    L, A, n = len(attn), attn[0].shape[0], len(tokens)
    fig, axes = plt.subplots(L, A, figsize=(2.6 * A, 2.6 * L), squeeze=False)
    for i in range(L):
        for a in range(A):
            ax = axes[i][a]
            ax.imshow(attn[i][a, :n, :n], cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(n)); ax.set_yticks(range(n))
            ax.set_xticklabels(tokens, rotation=90, fontsize=5); ax.set_yticklabels(tokens, fontsize=5)
            ax.set_title(f"layer {i} head {a}", fontsize=7)
    fig.suptitle(title or "attention (rows = queries, columns = keys)", fontsize=9)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def plot_gradient_flow(norms, path, title="gradient norm per layer"):
    """norms: {group: norm} in model order (emb, layer0, ..., mlm)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(norms), list(norms.values()), color="tab:blue")
    ax.set_yscale("log"); ax.set_ylabel("||grad||"); ax.set_title(title)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def plot_probe_by_layer(curves, path, baselines=None, title="POS probe accuracy by layer"):
    """curves: {label: [acc at layer 0..L]}; baselines: {label: acc} drawn as horizontal lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ys in curves.items():
        ax.plot(range(len(ys)), ys, marker="o", label=label)
    for (label, y), ls in zip((baselines or {}).items(), ["--", ":", "-."] * 3):
        ax.axhline(y, color="gray", ls=ls, label=label)
    ax.set_xticks(range(max(len(ys) for ys in curves.values())))
    ax.set_xlabel("layer (0 = embeddings)"); ax.set_ylabel("accuracy"); ax.set_title(title)
    ax.legend(fontsize=7); ax.grid(alpha=0.3)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def plot_grouped_bars(groups, series, path, lines=None, title="", ylabel="accuracy"):
    """groups: x labels; series: {label: [value per group]}, drawn as bars side by side in each group;
    lines: {label: y} drawn as horizontal lines across the plot (chance, published anchors)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups)) + 1.5, 4))
    width = 0.8 / len(series)
    for k, (label, ys) in enumerate(series.items()):
        ax.bar([g + (k - (len(series) - 1) / 2) * width for g in range(len(groups))], ys, width, label=label)
    for (label, y), ls in zip((lines or {}).items(), ["--", ":", "-."] * 3):
        ax.axhline(y, color="gray", ls=ls, label=label)
    ax.set_xticks(range(len(groups))); ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel); ax.set_title(title); ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))        # outside: bars reach the top
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def plot_weight_norms(steps, norms, path, title="weight norm per group over training"):
    """steps: [s1, s2, ...] (numbers, or labels such as checkpoint names); norms: one {group: norm} per step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(steps))
    for g in norms[0]:
        ax.plot(x, [n[g] for n in norms], marker="o", label=g)
    ax.set_xticks(list(x)); ax.set_xticklabels([str(s) for s in steps], fontsize=7)
    ax.set_xlabel("checkpoint"); ax.set_ylabel("||W||_F"); ax.set_title(title); ax.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def read_metrics(path, upto=None):
    """The records of train.py's metrics.jsonl (those with step <= upto if given); [] if there is no file."""
    if not path.is_file():
        return []
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in recs if upto is None or r["step"] <= upto]


def plot_training(out, recs):
    """train.py's PNGs in out, from its metrics.jsonl records: loss.png (train + held-out), heldout.png
    (accuracy, perplexity), attention.png (held-out attention entropy), lr.png, grad_norm.png (per layer).
    Each is drawn to a temp file and renamed, so a reader never sees half a PNG."""
    plt = _plt()
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
               title="held-out attention entropy (near 0: one key per query; study.py heads tells which)")
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


# ---- self-test: hand-computed cases ----

def hand_cases():
    """[(name, got, want)] for every metric; each `want` is worked out by hand in the comment."""
    V = 5
    logits = np.zeros((2, 3, V)); logits[0, 0, 2] = 1; logits[0, 2, 4] = 1; logits[1, 1, 0] = 1
    labels = np.array([[2, -100, 1], [-100, 0, -100]])          # 3 scored rows, argmax right on 2 of them
    X = np.array([[1., 0], [-1, 0], [0, 1], [0, -1]]); Y = X[:, :1]
    attn = np.full((1, 1, 4, 4), 0.25)                               # uniform over 4 keys -> ln 4
    mask = np.array([[1, 1, 0, 0]]); attn2 = np.zeros((1, 1, 4, 4)); attn2[..., :2] = 0.5   # 2 real keys -> ln 2
    before = {"emb.tok": np.array([3.0, 4.0]), "layer0.W": np.array([0.0, 1.0])}
    after = {"emb.tok": np.array([3.0, 4.5]), "layer0.W": np.array([0.0, 1.0])}
    return [
        ("masked_accuracy", masked_accuracy(logits, labels), 2 / 3),
        ("masked_cross_entropy (uniform)", masked_cross_entropy(np.zeros((4, V)), np.arange(4)), math.log(V)),
        ("perplexity (uniform)", perplexity(math.log(V)), V),
        ("grad_norms global", grad_norms(before)[0], math.sqrt(26)),        # sqrt(9+16+0+1)
        ("grad_norms emb", grad_norms(before)[1]["emb"], 5.0),              # ||(3,4)||
        ("update_ratios", update_ratios(before, after)["emb.tok"], 0.1),    # 0.5 / 5
        ("attention_entropy", attention_entropy([attn])[0, 0], math.log(4)),
        ("attention_entropy (masked)", attention_entropy([attn2], mask)[0, 0], math.log(2)),
        ("effective_rank I3", effective_rank(np.eye(3)), 3.0),
        ("effective_rank rank-1", effective_rank(np.outer([1., 2, 3], [1., -1])), 1.0),
        ("token_diversity", token_diversity(np.array([[1., 0], [0, 1], [1, 0]])), 1 / 3),   # cos 0,1,0 -> 1/3
        ("linear_cka", linear_cka(X, Y), 1 / math.sqrt(2)),      # ||Y'X||^2=4, ||X'X||=sqrt 8, ||Y'Y||=2
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description="Check every metric against a hand-computed case.")
    p.add_argument("--test", action="store_true", help="run the hand-computed checks (the default action)")
    p.add_argument("--plots", default=None, help="also draw each plot helper on toy data into this folder")
    args = p.parse_args(argv)
    cases = hand_cases()
    try:                                                          # on a tiny model, when model.py exists
        from config import get_config
        from model import MiniBERT
        cfg = get_config("tiny")
        _, cache = MiniBERT(cfg, seed=0).encode(np.arange(2 * cfg.max_position_embeddings).reshape(2, -1) % 13)
        ent = attention_entropy(cache["attn_probs"])             # N(0, 0.02) init: near-uniform attention
        cases.append(("attention_entropy tiny model (~ln T)", float(ent.mean()), math.log(cfg.max_position_embeddings)))
        cka = layer_cka(cache["hidden_states"])
        cases.append(("layer_cka tiny model diagonal", float(np.diag(cka).mean()), 1.0))
    except ImportError as e:
        print(f"(tiny-model checks skipped: {e})")
    ok = 0
    for name, got, want in cases:
        good = abs(got - want) <= 1e-3 * max(1.0, abs(want))
        ok += good
        print(f"{name:38s} | got {got:.6f} | want {want:.6f} | {'ok' if good else 'FAIL'}")
    if args.plots:
        out = Path(args.plots); out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        plot_attention_grid([rng.dirichlet(np.ones(4), (2, 4)) for _ in range(2)], list("abcd"), out / "attn.png")
        plot_gradient_flow({"emb": 0.1, "layer0": 0.3, "mlm": 1.0}, out / "gradflow.png")
        plot_probe_by_layer({"trained": [0.8, 0.9], "random": [0.7, 0.7]}, out / "probe.png", {"majority": 0.17})
        plot_weight_norms([0, 100], [{"emb": 1.0}, {"emb": 1.2}], out / "wnorms.png")
        print(f"plots written to {out}")
    print(f"metrics: {ok}/{len(cases)} ok")
    if ok != len(cases):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
