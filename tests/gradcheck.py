"""Finite-difference gradient checks (float64) shared by tests/test_gradients.py and `python gradients.py`.

Usage:
    python tests/gradcheck.py            # same table as `python gradients.py`

Expect: every primitive rel_err <= 1e-8 (measured 3e-12 .. 3e-9), whole model <= 1e-6 (measured 3e-8).
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradients as G          # noqa: E402
import model as M              # noqa: E402
from config import get_config  # noqa: E402
from mlm import mlm_loss       # noqa: E402


def num_grad(f, x, dout, h=1e-5):
    """Centred differences of sum(f() * dout) w.r.t. x (x is perturbed in place and restored).
    Outputs are subtracted before the weighted sum, as in cs231n: entries that x[i] does not touch cancel
    exactly, so the round-off stays that of the entries it does touch."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h; fp = np.copy(f())
        x[i] = old - h; fm = np.copy(f())
        x[i] = old
        g[i] = np.sum((fp - fm) * dout) / (2 * h)
    return g


def num_grad_at(f, x, idxs, h=1e-5):
    """Centred differences of the scalar f() w.r.t. x at the coordinates idxs only."""
    g = []
    for i in idxs:
        old = x[i]
        x[i] = old + h; fp = f()
        x[i] = old - h; fm = f()
        x[i] = old
        g.append((fp - fm) / (2 * h))
    return np.array(g)


def rel_error(a, b):
    return np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))


# ---- primitives ----
# Each check returns the max relative error over all inputs of one backward (float64, params away
# from identities). shape: the leading shape of the input, e.g. (4,) or (2, 3).

def _rng(seed):
    return np.random.default_rng(seed)


def check_linear(shape=(4,), seed=0):
    r = _rng(seed)
    x, W, b = r.standard_normal(shape + (5,)), r.standard_normal((5, 6)), r.standard_normal(6)
    out, cache = M.linear_forward(x, W, b)
    dout = r.standard_normal(out.shape)
    dx, dW, db = G.linear_backward(dout, cache)
    f = lambda: M.linear_forward(x, W, b)[0]
    return max(rel_error(dx, num_grad(f, x, dout)), rel_error(dW, num_grad(f, W, dout)),
               rel_error(db, num_grad(f, b, dout)))


def check_layernorm(shape=(4,), seed=0, eps=1e-12):
    r = _rng(seed)
    x, gamma, beta = r.standard_normal(shape + (6,)), 1 + 0.1 * r.standard_normal(6), 0.1 * r.standard_normal(6)
    out, cache = M.layernorm_forward(x, gamma, beta, eps)
    dout = r.standard_normal(out.shape)
    dx, dg, db = G.layernorm_backward(dout, cache)
    f = lambda: M.layernorm_forward(x, gamma, beta, eps)[0]
    return max(rel_error(dx, num_grad(f, x, dout)), rel_error(dg, num_grad(f, gamma, dout)),
               rel_error(db, num_grad(f, beta, dout)))


def check_gelu(shape=(4,), seed=0):
    r = _rng(seed)
    x = r.standard_normal(shape + (5,))                  # |x| >~ 4 would lose 1 + tanh to round-off
    out, cache = M.gelu_forward(x)
    dout = r.standard_normal(out.shape)
    return rel_error(G.gelu_backward(dout, cache), num_grad(lambda: M.gelu_forward(x)[0], x, dout))


def check_relu(shape=(4,), seed=0):
    r = _rng(seed)
    x = r.standard_normal(shape + (5,))
    x += np.sign(x) * 0.1                                # keep away from the kink at 0
    out, cache = M.relu_forward(x)
    dout = r.standard_normal(out.shape)
    return rel_error(G.relu_backward(dout, cache), num_grad(lambda: M.relu_forward(x)[0], x, dout))


def check_softmax(shape=(4,), seed=0):
    r = _rng(seed)
    x = r.standard_normal(shape + (5,))
    out, cache = M.softmax_forward(x)
    dout = r.standard_normal(out.shape)
    return rel_error(G.softmax_backward(dout, cache), num_grad(lambda: M.softmax_forward(x)[0], x, dout))


def check_dropout(shape=(4,), seed=0, p=0.3):
    r = _rng(seed)
    x = r.standard_normal(shape + (5,))
    f = lambda: M.dropout_forward(x, p, np.random.default_rng(123))[0]   # same mask on every call
    out, cache = M.dropout_forward(x, p, np.random.default_rng(123))
    dout = r.standard_normal(out.shape)
    return rel_error(G.dropout_backward(dout, cache), num_grad(f, x, dout))


def check_residual(shape=(4,), seed=0):
    r = _rng(seed)
    x, y = r.standard_normal(shape + (5,)), r.standard_normal(shape + (5,))
    dout = r.standard_normal(x.shape)
    dx, dy = G.residual_backward(dout, M.residual_forward(x, y)[1])
    f = lambda: M.residual_forward(x, y)[0]
    return max(rel_error(dx, num_grad(f, x, dout)), rel_error(dy, num_grad(f, y, dout)))


def check_embedding(shape=(4,), seed=0):
    r = _rng(seed)
    W = r.standard_normal((7, 3))
    ids = r.integers(0, 7, size=shape + (3,))            # repeated ids exercise the scatter-add
    out, cache = M.embedding_forward(ids, W)
    dout = r.standard_normal(out.shape)
    return rel_error(G.embedding_backward(dout, cache), num_grad(lambda: M.embedding_forward(ids, W)[0], W, dout))


def check_attention(seed=0, p_drop=0.2):
    r = _rng(seed)
    B, A, T, D = 2, 2, 4, 3
    q, k, v = (0.5 * r.standard_normal((B, A, T, D)) for _ in range(3))   # softmax away from saturation
    mask_bias = np.zeros((B, 1, 1, T))
    mask_bias[1, ..., -1] = M.MASK_VALUE                 # sample 1: last key is padding
    f = lambda: M.attention_forward(q, k, v, mask_bias, p_drop, np.random.default_rng(7))[0]
    out, cache = M.attention_forward(q, k, v, mask_bias, p_drop, np.random.default_rng(7))
    dout = r.standard_normal(out.shape)
    dq, dk, dv = G.attention_backward(dout, cache)
    return max(rel_error(dq, num_grad(f, q, dout)), rel_error(dk, num_grad(f, k, dout)),
               rel_error(dv, num_grad(f, v, dout)))


# ---- layers ----

def _layer_params(r, prefix_shapes):
    """Random float64 params away from identities: gamma ~ 1 + 0.1 N, everything else ~ 0.5 N."""
    return {k: (1 + 0.1 * r.standard_normal(s)) if k.endswith("gamma") else 0.5 * r.standard_normal(s)
            for k, s in prefix_shapes.items()}


def _dict_error(g, f, P, dout):
    return max(rel_error(g[k], num_grad(f, P[k], dout)) for k in P)


def check_embeddings(seed=0, p_drop=0.2):
    r = _rng(seed)
    P = _layer_params(r, {"tok": (7, 4), "pos": (6, 4), "ln.gamma": (4,), "ln.beta": (4,)})
    ids = r.integers(0, 7, size=(2, 5))
    f = lambda: M.embeddings_forward(ids, P, 1e-12, p_drop, np.random.default_rng(3))[0]
    out, cache = M.embeddings_forward(ids, P, 1e-12, p_drop, np.random.default_rng(3))
    dout = r.standard_normal(out.shape)
    return _dict_error(G.embeddings_backward(dout, cache), f, P, dout)


def check_attention_sublayer(seed=0, p=0.2, rows=None):
    """rows: None (every row a query), or the selected rows of the last layer's MLM path (an uneven count per
    sequence, so the padded query slots are exercised)."""
    r = _rng(seed)
    B, T, H, A = 2, 3, 4, 2
    P = _layer_params(r, {**{n: (H, H) for n in ("Wq", "Wk", "Wv", "Wo")},
                          **{n: (H,) for n in ("bq", "bk", "bv", "bo", "ln.gamma", "ln.beta")}})
    x = r.standard_normal((B * T, H))
    mask_bias = np.zeros((B, 1, 1, T))
    mask_bias[0, ..., -1] = M.MASK_VALUE
    rows = None if rows is None else np.asarray(rows)
    fwd = lambda: M.attention_sublayer_forward(x, P, B, mask_bias, A, 1e-12, p, p, np.random.default_rng(5), rows)
    f = lambda: fwd()[0]
    out, cache = fwd()
    dout = r.standard_normal(out.shape)
    dx, g = G.attention_sublayer_backward(dout, cache)
    P_nobk = {k: v for k, v in P.items() if k != "bk"}   # bk: analytically 0, checked in absolute terms
    return max(rel_error(dx, num_grad(f, x, dout)), _dict_error(g, f, P_nobk, dout),
               np.max(np.abs(g["bk"])))


def check_ffn_sublayer(seed=0, act="gelu", p=0.2):
    r = _rng(seed)
    N, H, I = 5, 4, 6
    P = _layer_params(r, {"W1": (H, I), "b1": (I,), "W2": (I, H), "b2": (H,), "ln.gamma": (H,), "ln.beta": (H,)})
    x = r.standard_normal((N, H))
    while act == "relu" and np.min(np.abs(x @ P["W1"] + P["b1"])) < 1e-2:   # keep away from relu's kink
        x = r.standard_normal((N, H))
    f = lambda: M.ffn_sublayer_forward(x, P, act, 1e-12, p, np.random.default_rng(9))[0]
    out, cache = M.ffn_sublayer_forward(x, P, act, 1e-12, p, np.random.default_rng(9))
    dout = r.standard_normal(out.shape)
    dx, g = G.ffn_sublayer_backward(dout, cache)
    return max(rel_error(dx, num_grad(f, x, dout)), _dict_error(g, f, P, dout))


def check_mlm_head(seed=0, act="gelu"):
    r = _rng(seed)
    N, H, V = 4, 4, 7
    P = _layer_params(r, {"Wt": (H, H), "bt": (H,), "ln.gamma": (H,), "ln.beta": (H,), "bias": (V,)})
    E = r.standard_normal((V, H))
    x = r.standard_normal((N, H))
    pre = lambda: x @ P["Wt"] + P["bt"]
    # relu: keep away from the kink, and >= 2 positive entries per row (LN of a one-hot row is constant)
    while act == "relu" and (np.min(np.abs(pre())) < 1e-2 or np.min(np.sum(pre() > 0, axis=1)) < 2):
        x = r.standard_normal((N, H))
    f = lambda: M.mlm_head_forward(x, P, E, act, 1e-12)[0]
    out, cache = M.mlm_head_forward(x, P, E, act, 1e-12)
    dout = r.standard_normal(out.shape)
    dx, g, dE = G.mlm_head_backward(dout, cache)
    return max(rel_error(dx, num_grad(f, x, dout)), _dict_error(g, f, P, dout), rel_error(dE, num_grad(f, E, dout)))


def check_mlm_loss(seed=0):
    r = _rng(seed)
    logits = r.standard_normal((2, 3, 6))
    labels = np.array([[1, -100, 3], [-100, 5, 0]])
    err = 0.0
    for z, y in ((logits, labels), (logits[labels != -100], labels[labels != -100])):   # (B, T, V) and (N, V)
        dz = mlm_loss(z, y)[1]
        err = max(err, rel_error(dz, num_grad(lambda: np.array(mlm_loss(z, y)[0]), z, np.array(1.0))))
    return err


# ---- model ----

def tiny_model(seed=0, dropout=0.0, act="gelu", **overrides):
    """The tiny preset in float64, params away from identities (gamma ~ 1 + 0.1 N, weights ~ 0.5 N)."""
    config = get_config("tiny", hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        hidden_act=act, **overrides)
    model = M.MiniBERT(config, seed=seed)
    r = _rng(seed + 1)
    model.params = {k: (1 + 0.1 * r.standard_normal(a.shape)) if k.endswith("gamma")
                    else 0.5 * r.standard_normal(a.shape) for k, a in model.params.items()}
    return model


def tiny_batch(config, seed=0, T=7):
    """(input_ids, attention_mask, mlm_mask, labels): 3 sequences, the last two padded; T < max positions so
    that the unused rows of emb.pos must get zero gradient."""
    r = _rng(seed)
    B, V = 3, config.vocab_size
    ids = r.integers(5, V, size=(B, T))
    attention_mask = np.ones((B, T), np.int64)
    attention_mask[1, 5:] = 0
    attention_mask[2, 3:] = 0
    ids[attention_mask == 0] = 0                                    # [PAD]
    mlm_mask = np.zeros((B, T), bool)
    mlm_mask[0, [1, 4, 6]] = mlm_mask[1, [0, 3]] = mlm_mask[2, 2] = True
    labels = r.integers(0, V, size=int(mlm_mask.sum()))             # (N,)
    return ids, attention_mask, mlm_mask, labels


def model_gradcheck(model, batch, dropout_seed=None, n_coords=4, seed=0, encoder_only=False):
    """Max relative error per params key of backward (or encoder_backward) vs centred differences at
    n_coords sampled coordinates. With dropout_seed, training=True with rng=default_rng(dropout_seed) on
    every evaluation, so every evaluation draws the same masks. -> dict key -> error ('...bk': absolute)."""
    ids, am, mm, labels = batch
    training = dropout_seed is not None
    rng = (lambda: np.random.default_rng(dropout_seed)) if training else (lambda: None)
    r = _rng(seed)
    if encoder_only:
        w = r.standard_normal(ids.shape + (model.config.hidden_size,))   # loss = sum(h * w)
        def loss():
            return float(np.sum(model.encode(ids, am, training=training, rng=rng())[0] * w))
        h, cache = model.encode(ids, am, training=training, rng=rng())
        grads = G.encoder_backward(model, cache, w)
    else:
        def loss():
            return mlm_loss(model.forward(ids, am, mm, training=training, rng=rng())[0], labels)[0]
        logits, cache = model.forward(ids, am, mm, training=training, rng=rng())
        grads = G.backward(model, cache, mlm_loss(logits, labels)[1])
    errors = {}
    for k, a in model.params.items():
        if k not in grads:
            continue
        assert grads[k].shape == a.shape and grads[k].dtype == a.dtype, k
        flat = r.choice(a.size, size=min(n_coords, a.size), replace=False)
        idxs = [np.unravel_index(i, a.shape) for i in flat]
        num = num_grad_at(loss, a, idxs)
        ours = np.array([grads[k][i] for i in idxs])
        errors[k] = np.max(np.abs(grads[k])) if k.endswith(".bk") else rel_error(ours, num)
    return errors


def check_all(seed=0):
    """[(name, max error, tolerance)] for `python gradients.py`."""
    rows = []
    prim = [("linear", check_linear), ("layernorm", check_layernorm), ("gelu", check_gelu), ("relu", check_relu),
            ("softmax", check_softmax), ("dropout", check_dropout), ("residual", check_residual),
            ("embedding", check_embedding)]
    for name, fn in prim:
        rows.append((name, max(fn((4,), seed), fn((2, 3), seed)), 1e-8))
    rows.append(("attention", check_attention(seed), 1e-8))
    rows.append(("embeddings", check_embeddings(seed), 1e-6))
    rows.append(("attention_sublayer", check_attention_sublayer(seed), 1e-6))
    rows.append(("attention rows", check_attention_sublayer(seed, rows=[0, 2, 4]), 1e-6))
    rows.append(("ffn_sublayer gelu", check_ffn_sublayer(seed, "gelu"), 1e-6))
    rows.append(("ffn_sublayer relu", check_ffn_sublayer(seed, "relu"), 1e-6))
    rows.append(("mlm_head", check_mlm_head(seed), 1e-6))
    rows.append(("mlm_loss", check_mlm_loss(seed), 1e-8))
    model = tiny_model(seed)
    batch = tiny_batch(model.config, seed)
    rows.append(("model (eval)", max(model_gradcheck(model, batch, seed=seed).values()), 1e-6))
    model = tiny_model(seed, dropout=0.2)
    rows.append(("model (dropout)", max(model_gradcheck(model, batch, dropout_seed=11, seed=seed).values()), 1e-6))
    rows.append(("encoder_backward", max(model_gradcheck(model, batch, dropout_seed=11, seed=seed,
                                                         encoder_only=True).values()), 1e-6))
    return rows


if __name__ == "__main__":
    for name, err, tol in check_all():
        print(f"{name:<20} | rel_err {err:.1e} | {'ok' if err <= tol else 'FAIL'}")
