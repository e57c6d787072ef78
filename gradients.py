"""Mini-BERT backward pass in NumPy, derived by hand: one backward per forward in model.py, same order,
same `# ---- section ----` rulers. Each `<op>_backward(dout, cache)` returns the gradients of the forward's
inputs in the forward's argument order; composite layers replay their forward in reverse.
Full derivations: DERIVATIONS.md (the docstrings name the section).

Usage:
    python gradients.py                  # finite-difference check of every backward, in float64

Expect: one line per backward, `name | max relative error vs centred differences | ok`, e.g.
`layernorm            | rel_err 1.7e-09 | ok`: primitives 3e-12 .. 3e-9 (tolerance 1e-8), composite layers
<= 2e-8, whole `tiny` model 3.0e-08 eval / 1.3e-08 with dropout (tolerance 1e-6); last line `all ok`.
"""
import argparse
import math

import numpy as np

from model import BLOCK, GELU_C, blocks, merge_heads, split_heads, split_kv, split_qkv, sub_params

# B batch, T sequence, H hidden, A heads, D = H/A head size, I ffn size, V vocab, L layers, C classes
# N = number of rows fed to a layer: B*T, or the number of masked positions in the MLM path.


# ---- primitives ----

def embedding_backward(dout, cache, dW=None):
    """forward: out[n] = W[ids[n]]  ->  dW[v] = sum_{n: ids[n] = v} dout[n]  (a scatter-add; rows never
    looked up get 0).  dW: None, or W's gradient from its other use (the tied decoder's, a fresh array of
    the caller's), which the scatter-add then adds into: no (V, H) zero fill and no (V, H) sum of the two.
    Derivation: DERIVATIONS.md#embedding-lookup"""
    ids, shape = cache
    H = shape[1]
    dW = np.zeros(shape, dout.dtype) if dW is None else dW          # (V, H)
    # the scatter-add on the flat (V*H,) view, dW.flat[ids[n]*H + h] += dout[n, h]: NumPy's fast 1-D
    # ufunc.at, about 3x faster than the 2-D form, and the same additions in the same order
    flat_ids = (ids.reshape(-1, 1) * H + np.arange(H)).reshape(-1)  # (N*H,)
    np.add.at(dW.reshape(-1), flat_ids, dout.reshape(-1))
    return dW


def linear_backward(dout, cache):
    """forward: out = x @ W + b  ->  dx = dout @ W^T;  dW = x^T @ dout;  db = sum over rows of dout.
    Derivation: DERIVATIONS.md#linear"""
    x, W = cache
    dx = dout @ W.T                                                 # (..., in)
    x2, d2 = x.reshape(-1, x.shape[-1]), dout.reshape(-1, dout.shape[-1])
    dW = x2.T @ d2                                                  # (in, out)
    db = d2.sum(axis=0)                                             # (out,)
    return dx, dW, db


def row_mean(x):
    """<x> = mean over the last axis, keepdims: x @ (1/H, ..., 1/H), a BLAS matrix-vector product (4x faster
    than x.mean(-1) on rows of a few hundred).   x: (..., H) -> (..., 1)"""
    return (x @ np.full(x.shape[-1], 1.0 / x.shape[-1], x.dtype))[..., None]


def row_dot_mean(x, y):
    """<x * y> = mean over the last axis of the product, keepdims, without the (..., H) temporary.
    x, y: (..., H) -> (..., 1)"""
    return np.einsum("...h,...h->...", x, y)[..., None] * (1.0 / x.shape[-1])


def layernorm_backward(dout, cache):
    """dxhat = dout * gamma;  dx = rstd * (dxhat - <dxhat> - xhat * <dxhat * xhat>)   (<.> = mean over H)
    dgamma = sum over rows of dout * xhat;  dbeta = sum over rows of dout.
    Derivation: DERIVATIONS.md#layernorm"""
    xhat, rstd, gamma = cache
    H = xhat.shape[-1]
    dxhat = dout * gamma
    dx = xhat * row_dot_mean(dxhat, xhat)                           # term 3
    np.subtract(dxhat, dx, out=dx)                                  # term 1 - term 3
    dx -= row_mean(dxhat)                                           # - term 2
    dx *= rstd
    d2, x2 = dout.reshape(-1, H), xhat.reshape(-1, H)               # (rows, H)
    dgamma = np.einsum("nh,nh->h", d2, x2)                          # (H,)   sum over rows of dout * xhat
    dbeta = d2.sum(axis=0)                                          # (H,)
    return dx, dgamma, dbeta


def gelu_backward(dout, cache, out=None):
    """forward: out = x phi, phi = 0.5 (1 + tanh(u)), u = c (x + 0.044715 x^3)
    ->  dx = dout * phi * (1 + 2 x (1 - phi) du/dx),  du/dx = c (1 + 0.134145 x^2)
    (product rule with dphi/dx = 0.5 (1 - tanh^2) du/dx = 2 phi (1 - phi) du/dx).
    out: a C-contiguous array of x's shape to write dx into (the FFN passes its recomputed h, no longer
    needed). In L2-sized blocks, as the forward.   Derivation: DERIVATIONS.md#gelu"""
    x, phi = cache
    dx = np.empty(x.shape, x.dtype) if out is None else out
    tmp = np.empty(min(BLOCK, x.size), x.dtype)                     # 1 - phi, one block
    for xb, pb, gb, db in blocks(x, phi, np.ascontiguousarray(dout), dx):
        t = tmp[:xb.size]
        np.multiply(xb, xb, out=db)
        db *= 2 * 0.134145 * GELU_C                                 # 3 * 0.044715 = 0.134145
        db += 2 * GELU_C                                            # 2 du/dx = 2 c (1 + 0.134145 x^2)
        db *= xb
        np.subtract(1.0, pb, out=t)
        db *= t                                                     # 2 x (1 - phi) du/dx   (term 2 / phi)
        db += 1.0                                                   # + 1                   (term 1 / phi)
        db *= pb
        db *= gb
    return dx


def relu_backward(dout, cache):
    """forward: out = max(x, 0)  ->  dx = dout * 1[x > 0].   Derivation: DERIVATIONS.md#relu"""
    (pos,) = cache
    return dout * pos


def softmax_backward(dout, cache):
    """forward: p = softmax(x)  ->  dx = p * (dout - sum_k dout_k p_k)   (over the last axis).
    Derivation: DERIVATIONS.md#softmax"""
    (p,) = cache
    dx = dout - np.einsum("...k,...k->...", dout, p)[..., None]     # dout - sum_k dout_k p_k (no temporary)
    dx *= p
    return dx


def dropout_backward(dout, cache):
    """forward: out = x * mask (mask = keep / (1 - p))  ->  dx = dout * mask; identity when the forward was.
    Derivation: DERIVATIONS.md#dropout"""
    if cache is None:
        return dout
    (mask,) = cache
    return dout * mask


def residual_backward(dout, cache=None):
    """forward: out = x + y  ->  dx = dout, dy = dout (the skip path passes the gradient unchanged).
    Derivation: DERIVATIONS.md#residual"""
    return dout, dout


# ---- attention ----

def attention_backward(dout, cache, out=None):
    """forward: scores = q k^T / sqrt(D) + mask;  probs = softmax(scores);  pd = dropout(probs);  ctx = pd v
    ->  dpd = dctx v^T;  dv = pd^T dctx;  dscores = softmax_backward(dropout_backward(dpd)) / sqrt(D);
        dq = dscores k;  dk = dscores^T q      (the mask is a constant: no gradient).
    out: None, or three (B, A, T, D) arrays to write dq, dk, dv into (the sublayer passes views of its fused
    (B*T, 3H) buffer: no copy to merge the heads).   Derivation: DERIVATIONS.md#scaled-dot-product-attention"""
    q, k, v, pd, c_soft, c_drop = cache
    dq, dk, dv = (None, None, None) if out is None else out
    dpd = dout @ v.transpose(0, 1, 3, 2)                            # (B, A, T, T)
    dv = np.matmul(pd.transpose(0, 1, 3, 2), dout, out=dv)          # (B, A, T, D)
    dscores = softmax_backward(dropout_backward(dpd, c_drop), c_soft)
    dscores *= 1.0 / math.sqrt(q.shape[-1])
    dq = np.matmul(dscores, k, out=dq)                              # (B, A, T, D)
    dk = np.matmul(dscores.transpose(0, 1, 3, 2), q, out=dk)        # (B, A, T, D)
    return dq, dk, dv


# ---- layers ----

def embeddings_backward(dout, cache, dtok=None):  # (B*T, H) -> grads of emb.*
    """forward: x = dropout(LN(E_tok[ids] + E_pos[:T]))  ->  dE_pos[t] = sum over the batch of dsum[:, t]
    (0 for t >= T), dE_tok = scatter-add of dsum at ids (added into dtok, E_tok's decoder gradient, if given).
    Returns grads keyed without the 'emb.' prefix."""
    c_tok, c_ln, c_drop, pos_shape = cache
    B, T = c_tok[0].shape
    g = {}
    dx = dropout_backward(dout, c_drop)
    dsum, g["ln.gamma"], g["ln.beta"] = layernorm_backward(dx, c_ln)
    dx_tok, dpos_bt = residual_backward(dsum.reshape(B, T, -1))    # (B, T, H)
    g["tok"] = embedding_backward(dx_tok, c_tok, dtok)              # (V, H)
    g["pos"] = np.zeros(pos_shape, dout.dtype)                      # (max_position_embeddings, H)
    g["pos"][:T] = dpos_bt.sum(axis=0)                              # E_pos broadcast along B: sum over B
    return g


def attention_sublayer_backward(dout, cache):  # (B*T or N, H) -> (B*T, H)
    """forward: out = LN(x + dropout(merge(attention(x Wq + bq, x Wk + bk, x Wv + bv)) Wo + bo))
    -> dx = dsum (skip path) + dq Wq^T + dk Wk^T + dv Wv^T (x feeds four paths: their gradients add).
    With queries at selected rows only (the forward's rows): dq and the skip path land on those rows of dx.
    Derivation: DERIVATIONS.md#sublayers-post-ln"""
    c_qkv, c_att, c_o, c_drop, c_ln, sel = cache
    B, A = c_att[0].shape[:2]                                       # from q: (B, A, T or M, D)
    g = {}
    ds, g["ln.gamma"], g["ln.beta"] = layernorm_backward(dout, c_ln)
    dx_skip, da = residual_backward(ds)
    da = dropout_backward(da, c_drop)
    dctx, g["Wo"], g["bo"] = linear_backward(da, c_o)               # (B*T or N, H)
    if sel is not None:
        return _attention_sublayer_rows_backward(dx_skip, dctx, c_qkv, c_att, sel, B, A, g)
    dqkv = np.empty((dctx.shape[0], 3 * dctx.shape[1]), dctx.dtype)  # (B*T, 3H) = [dq | dk | dv]
    attention_backward(split_heads(dctx, B, A), c_att, out=split_qkv(dqkv, B, A))   # writes dq, dk, dv
    # forward: [q | k | v] = x [Wq | Wk | Wv] + [bq | bk | bv]  ->  dx_qkv = dq Wq^T + dk Wk^T + dv Wv^T in one
    # GEMM; d[Wq | Wk | Wv] = x^T [dq | dk | dv], split back into the three params
    dx_qkv, dWqkv, dbqkv = linear_backward(dqkv, c_qkv)             # (B*T, H), (H, 3H), (3H,)
    g["Wq"], g["Wk"], g["Wv"] = (np.ascontiguousarray(a) for a in np.split(dWqkv, 3, axis=1))   # (H, H) each
    g["bq"], g["bk"], g["bv"] = np.split(dbqkv, 3)                  # (H,) each
    dx_qkv += dx_skip                                               # x feeds four paths: the gradients add
    return dx_qkv, g


def _attention_sublayer_rows_backward(dx_skip, dctx, c_kv, c_att, sel, B, A, g):  # (N, H) -> (B*T, H)
    """Reverse of model._attention_sublayer_rows: forward xq = x[rows]; q = xq Wq + bq; [k | v] = x [Wk | Wv] + ...;
    q padded into (B, M) slots; ctx = attention(...)[slots]  ->  dctx scattered into the slots (padded slots get
    0), attention_backward, dq gathered back; dx = d[k | v] [Wk | Wv]^T, and rows `rows` of dx also get
    dq Wq^T + the skip path (the forward's gather x[rows] reversed: a scatter-add, rows are distinct)."""
    rows, b, j, M, c_q = sel
    H = dctx.shape[1]
    dctx_pad = np.zeros((B, M, H), dctx.dtype)                      # (B, M, H)
    dctx_pad[b, j] = dctx
    dkv = np.empty((c_kv[0].shape[0], 2 * H), dctx.dtype)           # (B*T, 2H) = [dk | dv]
    dk, dv = split_kv(dkv, B, A)                                    # views: attention_backward writes into dkv
    dq_pad, _, _ = attention_backward(split_heads(dctx_pad.reshape(B * M, H), B, A), c_att, out=(None, dk, dv))
    dq = merge_heads(dq_pad).reshape(B, M, H)[b, j]                 # (N, H)
    dxq, g["Wq"], g["bq"] = linear_backward(dq, c_q)                # (N, H)
    dx, dWkv, dbkv = linear_backward(dkv, c_kv)                     # (B*T, H)
    g["Wk"], g["Wv"] = (np.ascontiguousarray(a) for a in np.split(dWkv, 2, axis=1))   # (H, H) each
    g["bk"], g["bv"] = np.split(dbkv, 2)                            # (H,) each
    dxq += dx_skip                                                  # xq feeds the query and the skip path
    dx[rows] += dxq                                                 # scatter back to the selected rows
    return dx, g


def ffn_sublayer_backward(dout, cache):  # (N, H) -> (N, H)
    """forward: out = LN(x + dropout(act(x W1 + b1) W2 + b2))  ->  dx = dsum (skip path) + dh W1^T.
    Derivation: DERIVATIONS.md#sublayers-post-ln"""
    c_in, act, c_act, c_out, c_drop, c_ln = cache
    g = {}
    ds, g["ln.gamma"], g["ln.beta"] = layernorm_backward(dout, c_ln)
    dx_skip, dy = residual_backward(ds)
    dy = dropout_backward(dy, c_drop)
    h, W2 = c_out
    if h is None:                                                   # the forward did not keep h = gelu(a):
        a, phi = c_act                                              # recompute it, h = a * phi
        h = a * phi                                                 # (N, I)
    dh, g["W2"], g["b2"] = linear_backward(dy, (h, W2))             # (N, I)
    if act == "gelu":
        dh = gelu_backward(dh, c_act, out=None if h is c_out[0] else h)   # dx written over the recomputed h
    else:
        dh = relu_backward(dh, c_act)
    dx_ffn, g["W1"], g["b1"] = linear_backward(dh, c_in)            # (N, H)
    dx_ffn += dx_skip                                               # x feeds both paths: the gradients add
    return dx_ffn, g


def mlm_head_backward(dlogits, cache):  # (N, V) -> (N, H)
    """forward: t = LN(act(x Wt + bt));  logits = t E^T + bias
    ->  dt = dlogits E;  dE (decoder part) = dlogits^T t;  dbias = sum over rows of dlogits.
    Returns dx, grads keyed without 'mlm.', and the decoder's gradient of the tied E (V, H).
    Derivation: DERIVATIONS.md#tied-weights"""
    c_t, act, c_act, c_ln, t, E = cache
    g = {}
    dt = dlogits @ E                                                # (N, H)
    dE = dlogits.T @ t                                              # (V, H)
    g["bias"] = dlogits.sum(axis=0)                                 # (V,)
    dh, g["ln.gamma"], g["ln.beta"] = layernorm_backward(dt, c_ln)
    dh = (gelu_backward if act == "gelu" else relu_backward)(dh, c_act)
    dx, g["Wt"], g["bt"] = linear_backward(dh, c_t)                 # (N, H)
    return dx, g, dE


# ---- model ----

def _encoder_backward(model, cache, dx, dtok=None):
    """Reverse replay of MiniBERT._encode. dx: (B*T, H), or (N, H) when the forward ran with an mlm_mask.
    -> grads for every emb.* and layer*.* key; 'emb.tok' is the embedding-lookup part, added into dtok
    (the tied decoder's part, (V, H)) when given."""
    grads = {}
    L = len(cache["layers"])
    for i in reversed(range(L)):
        c_attn, c_ffn = cache["layers"][i]
        dx, g = ffn_sublayer_backward(dx, c_ffn)
        grads.update({f"layer{i}.ffn.{k}": v for k, v in g.items()})
        # with rows, the last attention sublayer takes (N, H) and returns (B*T, H): it scatters its queries'
        # and skip path's gradients back to the selected rows (DERIVATIONS.md#running-only-the-masked-rows)
        dx, g = attention_sublayer_backward(dx, c_attn)
        grads.update({f"layer{i}.attn.{k}": v for k, v in g.items()})
    g = embeddings_backward(dx, cache["emb"], dtok)
    grads.update({f"emb.{k}": v for k, v in g.items()})
    return grads


def encoder_backward(model, cache, dh):
    """dh: (B, T, H), gradient of the loss w.r.t. h from model.encode() -> grads for emb.* and layer*.* keys."""
    if cache["rows"] is not None:
        raise ValueError("encoder_backward needs the cache of encode() (or forward() without mlm_mask).")
    if dh.shape != cache["hidden_states"][-1].shape:
        raise ValueError(f"dh has shape {dh.shape} but encode() returned {cache['hidden_states'][-1].shape}; "
                         f"pass the gradient of that output.")
    return _encoder_backward(model, cache, dh.reshape(-1, dh.shape[-1]))


def backward(model, cache, dlogits):
    """dlogits: (B, T, V), or (N, V) when the forward ran with an mlm_mask -> grads, same keys and shapes
    as model.params. The tied E_tok gets the sum of its decoder and embedding-lookup gradients."""
    if dlogits.shape != cache["logits_shape"]:
        raise ValueError(f"dlogits has shape {dlogits.shape} but forward() returned logits of shape "
                         f"{cache['logits_shape']}; pass the gradient of those logits.")
    V = dlogits.shape[-1]
    dx, g, dE_dec = mlm_head_backward(dlogits.reshape(-1, V), cache["head"])
    grads = _encoder_backward(model, cache, dx, dtok=dE_dec)        # tied weight: decoder + lookup gradients
    grads.update({f"mlm.{k}": v for k, v in g.items()})
    return {k: grads[k] for k in model.params}                      # the params' key order


def main(argv=None):
    p = argparse.ArgumentParser(description="Finite-difference check of every backward, in float64.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
    from gradcheck import check_all
    ok = True
    for name, err, tol in check_all(seed=args.seed):
        good = err <= tol
        ok &= good
        print(f"{name:<20} | rel_err {err:.1e} | {'ok' if good else 'FAIL (tol %.0e)' % tol}")
    print("all ok" if ok else "SOME CHECKS FAILED")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
