"""Mini-BERT forward pass in NumPy: every primitive returns (out, cache); gradients.py holds the backwards.

The architecture of BERT (Devlin et al. 2019, §3) without segment embeddings, NSP or pooler:
    x   = LN(E_tok[ids] + E_pos[:T])                          embeddings
    x1  = LN(x + Dropout(MHA(x) Wo + bo))                      attention sublayer (post-LN)
    x   = LN(x1 + Dropout(gelu(x1 W1 + b1) W2 + b2))           FFN sublayer (post-LN), L times
    t   = LN(gelu(x Wt + bt));  logits = t E_tok^T + bias      MLM head, decoder tied to E_tok

Read it side by side with gradients.py (same sections, same order) and DERIVATIONS.md.

Usage:
    python model.py                      # tiny random batch through the 'tiny' preset, prints shapes

Expect: `1,485 params | logits (2, 8, 13) | masked logits (3, 13) | hidden_states 3 x (2, 8, 8) | attn_probs 2 x (2, 2, 8, 8)`.
Speed: `python benchmark.py` (the training step), `python benchmark.py --fwd-bwd 8 32` (forward + backward alone).
"""
import argparse
import json
import math
from pathlib import Path

import numpy as np

from config import BertConfig, get_config, PRESETS

# B batch, T sequence, H hidden, A heads, D = H/A head size, I ffn size, V vocab, L layers, C classes
# N = number of rows fed to a layer: B*T, or the number of masked positions in the MLM path.

MASK_VALUE = -1e9   # added to the scores of padded keys: large and finite, so an all-padding row gives no NaN


# ---- primitives ----

def embedding_forward(ids, W):
    """out[n] = W[ids[n]]   (a row lookup).   ids: (...) ints, W: (V, H) -> out: (..., H)"""
    return W[ids], (ids, W.shape)


def linear_forward(x, W, b):
    """out = x @ W + b.   x: (..., in), W: (in, out), b: (out,) -> out: (..., out)"""
    out = x @ W
    out += b
    return out, (x, W)


def layernorm_forward(x, gamma, beta, eps):
    """LayerNorm over the last axis (Ba et al. 2016): xhat = (x - mean) * rstd, rstd = 1/sqrt(var + eps);
    out = gamma * xhat + beta.   x: (..., H), gamma/beta: (H,) -> out: (..., H)"""
    H = x.shape[-1]
    xhat = x - (x @ np.full(H, 1.0 / H, x.dtype))[..., None]         # x - mean (row means as a BLAS GEMV)
    var = np.einsum("...h,...h->...", xhat, xhat)[..., None] * (1.0 / H)   # (..., 1)  no (..., H) square
    rstd = 1.0 / np.sqrt(var + eps)                                 # (..., 1)
    xhat *= rstd
    out = xhat * gamma
    out += beta
    return out, (xhat, rstd, gamma)


GELU_C = math.sqrt(2.0 / math.pi)   # a Python float: keeps float32 arrays float32
BLOCK = 1 << 15                      # elements per block of an elementwise chain: 128 KB of float32 stays in L2


def blocks(*arrays):
    """The arrays' flat views cut into blocks of BLOCK elements: an elementwise chain of k passes run block by
    block reads memory once instead of k times (the k passes hit the L2 cache). Arrays must be C-contiguous."""
    flat = [a.reshape(-1) for a in arrays]
    for i in range(0, flat[0].size, BLOCK):
        yield [f[i:i + BLOCK] for f in flat]


def gelu_forward(x):
    """gelu(x) = x phi,  phi = 0.5 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)   (tanh form of the BERT
    code; phi approximates the normal CDF Phi(x) of gelu = x Phi(x)).   x: any shape -> same shape
    Computed in L2-sized blocks (7 passes each)."""
    x = np.ascontiguousarray(x)
    out, phi = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    for xb, u, ob in blocks(x, phi, out):
        np.multiply(xb, xb, out=u)
        u *= 0.044715 * GELU_C
        u += GELU_C
        u *= xb                                                     # u = c x + c 0.044715 x^3
        np.tanh(u, out=u)
        u *= 0.5
        u += 0.5                                                    # phi = 0.5 (1 + tanh(u))
        np.multiply(xb, u, out=ob)                                  # gelu = x phi
    return out, (x, phi)


def relu_forward(x):
    """relu(x) = max(x, 0).   x: any shape -> same shape"""
    return np.maximum(x, 0), (x > 0,)


def softmax_forward(x, out=None):
    """p_j = exp(x_j - max x) / sum_k exp(x_k - max x) over the last axis.   x: (..., K) -> p: (..., K)
    out: where to write p (x itself is fine: attention passes its fresh scores, saving an array and a pass)."""
    e = np.subtract(x, x.max(axis=-1, keepdims=True), out=out)      # x - max x
    np.exp(e, out=e)
    e *= 1.0 / (e @ np.ones(e.shape[-1], e.dtype))[..., None]       # / sum_k e_k (row sums as a BLAS GEMV)
    return e, (e,)


def dropout_forward(x, p, rng):
    """Inverted dropout: out = x * keep / (1 - p), keep ~ Bernoulli(1 - p) drawn from rng.
    p == 0 or rng None (evaluation) -> identity (cache None).   x: any shape -> same shape"""
    if p == 0.0 or rng is None:
        return x, None
    mask = (rng.random(x.shape, dtype=x.dtype) >= p).astype(x.dtype)
    mask *= 1.0 / (1.0 - p)
    return x * mask, (mask,)


def residual_forward(x, y):
    """out = x + y (skip connection).   x, y: same shape -> same shape"""
    return x + y, None


# ---- attention ----

def attention_forward(q, k, v, mask_bias, p_drop, rng):
    """Scaled dot-product attention (Vaswani et al. 2017, §3.2.1) with a padding mask on the keys:
    scores = q k^T / sqrt(D) + mask_bias;  probs = softmax(scores);  ctx = dropout(probs) v.
    q, k, v: (B, A, T, D); mask_bias: (B, 1, 1, T) or None -> ctx: (B, A, T, D), probs (B, A, T, T)"""
    scores = q @ k.transpose(0, 1, 3, 2)                            # (B, A, T, T)
    scores *= 1.0 / math.sqrt(q.shape[-1])
    if mask_bias is not None:
        scores += mask_bias                                         # padded keys get MASK_VALUE
    probs, c_soft = softmax_forward(scores, out=scores)             # in place: scores are not needed again
    pd, c_drop = dropout_forward(probs, p_drop, rng)
    ctx = pd @ v                                                    # (B, A, T, D)
    return ctx, (q, k, v, pd, c_soft, c_drop)


def split_heads(x, B, A):
    """(B*T, H) -> (B, A, T, D), a view."""
    return x.reshape(B, -1, A, x.shape[-1] // A).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, A, T, D) -> (B*T, H), a copy."""
    B, A, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B * T, A * D)


def split_qkv(qkv, B, A):
    """(B*T, 3H) = [q | k | v] -> q, k, v: (B, A, T, D) each, views (no copy)."""
    q, k, v = qkv.reshape(B, -1, 3, A, qkv.shape[-1] // (3 * A)).transpose(2, 0, 3, 1, 4)   # (3, B, A, T, D)
    return q, k, v


def split_kv(kv, B, A):
    """(B*T, 2H) = [k | v] -> k, v: (B, A, T, D) each, views (no copy)."""
    k, v = kv.reshape(B, -1, 2, A, kv.shape[-1] // (2 * A)).transpose(2, 0, 3, 1, 4)   # (2, B, A, T, D)
    return k, v


def query_slots(rows, B, T):
    """Where each selected row goes in a (B, M) grid of queries padded per sequence. rows: (N,) increasing flat
    indices b*T + t -> b (N,) its sequence, j (N,) its rank among that sequence's rows, M = the most selected
    rows in one sequence (at least 1)."""
    b = rows // T                                                   # (N,)
    counts = np.bincount(b, minlength=B)                            # (B,)
    j = np.arange(len(rows)) - (np.cumsum(counts) - counts)[b]      # (N,)
    return b, j, max(int(counts.max(initial=0)), 1)


# ---- layers ----

def embeddings_forward(ids, W, eps, p_drop, rng):  # (B, T) -> (B*T, H)
    """x = dropout(LN(E_tok[ids] + E_pos[:T])).   W: the emb.* params without the 'emb.' prefix."""
    B, T = ids.shape
    tok, c_tok = embedding_forward(ids, W["tok"])                   # (B, T, H)
    x, c_res = residual_forward(tok, W["pos"][:T])                  # E_pos broadcasts along B
    x, c_ln = layernorm_forward(x.reshape(B * T, -1), W["ln.gamma"], W["ln.beta"], eps)  # (B*T, H)
    x, c_drop = dropout_forward(x, p_drop, rng)
    return x, (c_tok, c_ln, c_drop, W["pos"].shape)


def attention_sublayer_forward(x, W, B, mask_bias, A, eps, p_hidden, p_attn, rng, rows=None):  # (B*T, H) -> (B*T or N, H)
    """out = LN(x + dropout(MHA(x) Wo + bo)),  MHA(x) = concat_heads(attention(x Wq + bq, x Wk + bk, x Wv + bv)).
    W: the layer{i}.attn.* params without the prefix.
    rows (N,) (the last layer of an MLM forward): queries only at those rows, so out is (N, H). Keys and values
    still come from all B*T rows, but Q, the attention rows, Wo, the residual and LN run on the N rows alone
    (exact: row n of the output depends on x only through q_n and the keys/values of its sequence)."""
    if rows is not None:
        return _attention_sublayer_rows(x, W, B, mask_bias, A, eps, p_hidden, p_attn, rng, rows)
    # q, k, v in one GEMM: [q | k | v] = x [Wq | Wk | Wv] + [bq | bk | bv]  (the params stay three matrices)
    Wqkv = np.concatenate([W["Wq"], W["Wk"], W["Wv"]], axis=1)      # (H, 3H)
    bqkv = np.concatenate([W["bq"], W["bk"], W["bv"]])              # (3H,)
    qkv, c_qkv = linear_forward(x, Wqkv, bqkv)                      # (B*T, 3H)
    q, k, v = split_qkv(qkv, B, A)                                  # (B, A, T, D) each
    ctx, c_att = attention_forward(q, k, v, mask_bias, p_attn, rng)  # (B, A, T, D)
    a, c_o = linear_forward(merge_heads(ctx), W["Wo"], W["bo"])     # (B*T, H)
    a, c_drop = dropout_forward(a, p_hidden, rng)
    s, _ = residual_forward(x, a)
    out, c_ln = layernorm_forward(s, W["ln.gamma"], W["ln.beta"], eps)
    return out, (c_qkv, c_att, c_o, c_drop, c_ln, None)


def _attention_sublayer_rows(x, W, B, mask_bias, A, eps, p_hidden, p_attn, rng, rows):  # (B*T, H) -> (N, H)
    """attention_sublayer_forward with queries at `rows` only. The N queries are laid out per sequence in a
    zero-padded (B, A, M, D) grid (M = most selected rows in one sequence) so that attention_forward runs as
    usual on (B, A, M, T) scores; the padded slots are computed and dropped (their gradient is 0)."""
    H = x.shape[1]
    kv, c_kv = linear_forward(x, np.concatenate([W["Wk"], W["Wv"]], axis=1),
                              np.concatenate([W["bk"], W["bv"]]))   # (B*T, 2H) = [k | v]
    xq = x[rows]                                                    # (N, H)
    q, c_q = linear_forward(xq, W["Wq"], W["bq"])                   # (N, H)
    b, j, M = query_slots(rows, B, x.shape[0] // B)
    q_pad = np.zeros((B, M, H), x.dtype)                            # (B, M, H)
    q_pad[b, j] = q
    k, v = split_kv(kv, B, A)                                       # (B, A, T, D) each
    ctx, c_att = attention_forward(split_heads(q_pad.reshape(B * M, H), B, A), k, v, mask_bias, p_attn, rng)
    ctx = merge_heads(ctx).reshape(B, M, H)[b, j]                   # (N, H)
    a, c_o = linear_forward(ctx, W["Wo"], W["bo"])                  # (N, H)
    a, c_drop = dropout_forward(a, p_hidden, rng)
    s, _ = residual_forward(xq, a)
    out, c_ln = layernorm_forward(s, W["ln.gamma"], W["ln.beta"], eps)
    return out, (c_kv, c_att, c_o, c_drop, c_ln, (rows, b, j, M, c_q))


def ffn_sublayer_forward(x, W, act, eps, p_hidden, rng):  # (N, H) -> (N, H)
    """out = LN(x + dropout(act(x W1 + b1) W2 + b2)).   W: the layer{i}.ffn.* params without the prefix.
    With GELU the cache does not keep h = gelu(a) (the input of W2, (N, I)): the backward recomputes it
    as h = a * phi from the GELU cache, one multiply instead of the largest array of the layer held from
    the forward to the backward (recompute instead of cache, as activation checkpointing does)."""
    a, c_in = linear_forward(x, W["W1"], W["b1"])                   # (N, I)
    h, c_act = (gelu_forward if act == "gelu" else relu_forward)(a)
    y, c_out = linear_forward(h, W["W2"], W["b2"])                  # (N, H)
    if act == "gelu":
        c_out = (None, c_out[1])                                    # h is recomputed: gelu(a) = a * phi
    y, c_drop = dropout_forward(y, p_hidden, rng)
    s, _ = residual_forward(x, y)
    out, c_ln = layernorm_forward(s, W["ln.gamma"], W["ln.beta"], eps)
    return out, (c_in, act, c_act, c_out, c_drop, c_ln)


def mlm_head_forward(x, W, E, act, eps):  # (N, H) -> (N, V)
    """t = LN(act(x Wt + bt));  logits = t E^T + bias   (E = emb.tok: the decoder is tied to the embedding).
    W: the mlm.* params without the prefix."""
    h, c_t = linear_forward(x, W["Wt"], W["bt"])                    # (N, H)
    h, c_act = (gelu_forward if act == "gelu" else relu_forward)(h)
    t, c_ln = layernorm_forward(h, W["ln.gamma"], W["ln.beta"], eps)
    logits = t @ E.T                                                # (N, V)
    logits += W["bias"]
    return logits, (c_t, act, c_act, c_ln, t, E)


def sub_params(params, prefix):
    """The entries of params under prefix, with the prefix removed: sub_params(p, "mlm.")["Wt"] is p["mlm.Wt"]."""
    n = len(prefix)
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}


# ---- model ----

class MiniBERT:
    """BERT for masked language modelling. `params` (flat dict, dotted names) is the single source of truth:
    forward reads it on every call, and its dtype (float32 by default; float64 in gradient tests) is the
    dtype of the computation."""

    def __init__(self, config, seed=0):
        if not isinstance(config, BertConfig):
            raise ValueError(f"config must be a BertConfig, got {type(config).__name__}; use config.get_config().")
        self.config = config
        c, rng = config, np.random.default_rng(seed)
        V, H, I, T, s = c.vocab_size, c.hidden_size, c.intermediate_size, c.max_position_embeddings, c.initializer_range

        def normal(*shape):                                         # BERT init: N(0, 0.02^2)
            return (s * rng.standard_normal(shape)).astype(np.float32)

        p = {"emb.tok": normal(V, H), "emb.pos": normal(T, H),
             "emb.ln.gamma": np.ones(H, np.float32), "emb.ln.beta": np.zeros(H, np.float32)}
        for i in range(c.num_hidden_layers):
            for name in ("Wq", "Wk", "Wv", "Wo"):
                p[f"layer{i}.attn.{name}"] = normal(H, H)
                p[f"layer{i}.attn.b{name[1]}"] = np.zeros(H, np.float32)
            p[f"layer{i}.attn.ln.gamma"], p[f"layer{i}.attn.ln.beta"] = np.ones(H, np.float32), np.zeros(H, np.float32)
            p[f"layer{i}.ffn.W1"], p[f"layer{i}.ffn.b1"] = normal(H, I), np.zeros(I, np.float32)
            p[f"layer{i}.ffn.W2"], p[f"layer{i}.ffn.b2"] = normal(I, H), np.zeros(H, np.float32)
            p[f"layer{i}.ffn.ln.gamma"], p[f"layer{i}.ffn.ln.beta"] = np.ones(H, np.float32), np.zeros(H, np.float32)
        p["mlm.Wt"], p["mlm.bt"] = normal(H, H), np.zeros(H, np.float32)
        p["mlm.ln.gamma"], p["mlm.ln.beta"] = np.ones(H, np.float32), np.zeros(H, np.float32)
        p["mlm.bias"] = np.zeros(V, np.float32)
        self.params = p

    def num_params(self):
        return sum(a.size for a in self.params.values())

    def _check_inputs(self, input_ids, attention_mask, mlm_mask, training, rng):
        c = self.config
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be a 2-D integer array (B, T), got {ids.dtype} with shape {ids.shape}.")
        if ids.shape[1] > c.max_position_embeddings:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds max_position_embeddings="
                             f"{c.max_position_embeddings}; truncate the input.")
        if ids.size and (ids.min() < 0 or ids.max() >= c.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {c.vocab_size}); got values in [{ids.min()}, {ids.max()}].")
        for name, m in (("attention_mask", attention_mask), ("mlm_mask", mlm_mask)):
            if m is not None and np.shape(m) != ids.shape:
                raise ValueError(f"{name} has shape {np.shape(m)} but input_ids has {ids.shape}; they must match.")
        if training and rng is None and (c.hidden_dropout_prob > 0 or c.attention_probs_dropout_prob > 0):
            raise ValueError("training=True with dropout needs rng=np.random.default_rng(seed) to draw the masks.")
        return ids

    def encode(self, input_ids, attention_mask=None, training=False, rng=None):
        """Embeddings and L encoder layers. -> h (B, T, H) = output of the last layer, and the cache, with
        cache["hidden_states"]: L+1 arrays (B, T, H) (0 = embeddings after LN, i = output of layer i) and
        cache["attn_probs"]: L arrays (B, A, T, T) (softmax output before dropout)."""
        ids = self._check_inputs(input_ids, attention_mask, None, training, rng)
        h, cache = self._encode(ids, attention_mask, None, training, rng)
        return h.reshape(ids.shape + (-1,)), cache

    def _encode(self, ids, attention_mask, rows, training, rng):
        """The encoder on (B*T, H) rows. With rows (indices of masked positions), the last layer computes its
        queries, and everything after them, only at those rows: returns (N, H) instead of (B*T, H), and
        cache["attn_probs"][L-1] holds those rows' attention, (N, A, T)."""
        c, P = self.config, self.params
        B, T = ids.shape
        rng = rng if training else None                              # no rng -> no dropout
        dtype = P["emb.tok"].dtype
        mask_bias = None
        if attention_mask is not None and not np.all(attention_mask):
            keep = np.asarray(attention_mask).astype(bool)
            mask_bias = np.where(keep, 0.0, MASK_VALUE).astype(dtype).reshape(B, 1, 1, T)   # (B, 1, 1, T)
        x, c_emb = embeddings_forward(ids, sub_params(P, "emb."), c.layer_norm_eps, c.hidden_dropout_prob, rng)
        hidden_states, attn_probs, layers = [x.reshape(B, T, -1)], [], []
        L = c.num_hidden_layers
        for i in range(L):
            # The last layer with rows: queries at the selected rows only, and everything after that (the FFN
            # sublayer, the MLM head) is per position: (N, H) from here on.
            sel = rows if i == L - 1 else None
            x, c_attn = attention_sublayer_forward(
                x, sub_params(P, f"layer{i}.attn."), B, mask_bias, c.num_attention_heads, c.layer_norm_eps,
                c.hidden_dropout_prob, c.attention_probs_dropout_prob, rng, rows=sel)
            x, c_ffn = ffn_sublayer_forward(x, sub_params(P, f"layer{i}.ffn."), c.hidden_act, c.layer_norm_eps,
                                            c.hidden_dropout_prob, rng)
            layers.append((c_attn, c_ffn))
            probs = c_attn[1][4][0]                                 # c_att -> c_soft -> probs (before dropout)
            if sel is not None:                                     # (B, A, M, T) padded -> the N real rows
                _, b, j, _, _ = c_attn[5]
                probs = probs[b, :, j]                              # (N, A, T)
            attn_probs.append(probs)
            hidden_states.append(None if x.shape[0] != B * T else x.reshape(B, T, -1))   # None: gathered rows
        cache = {"hidden_states": hidden_states, "attn_probs": attn_probs, "emb": c_emb, "layers": layers,
                 "rows": rows, "shape": (B, T)}
        return x, cache

    def forward(self, input_ids, attention_mask=None, mlm_mask=None, training=False, rng=None):
        """-> logits, cache.  input_ids (B, T) ints in [0, V); attention_mask (B, T), 1 = real token, 0 = padding;
        mlm_mask (B, T) bool.  Without mlm_mask logits are (B, T, V).  With it, logits are (N, V), the True
        entries in row-major order, and the work after the last layer's attention sublayer (its FFN
        sublayer and the MLM head, the decoder being about half of all FLOPs) runs only on those N rows:
        that part is per position, so this is exact. Then cache["hidden_states"][L] is None.
        training=True enables dropout, with masks drawn from rng (np.random.Generator)."""
        ids = self._check_inputs(input_ids, attention_mask, mlm_mask, training, rng)
        rows = None if mlm_mask is None else np.flatnonzero(np.asarray(mlm_mask).reshape(-1))   # (N,)
        x, cache = self._encode(ids, attention_mask, rows, training, rng)
        c = self.config
        logits, cache["head"] = mlm_head_forward(x, sub_params(self.params, "mlm."), self.params["emb.tok"],
                                                 c.hidden_act, c.layer_norm_eps)   # (B*T or N, V)
        if rows is None:
            logits = logits.reshape(ids.shape + (-1,))               # (B, T, V)
        cache["logits_shape"] = logits.shape
        return logits, cache

    def save(self, path):
        """One .npz: every param under its dotted name, plus the config as JSON under '__config__'.
        Written to exactly `path` (np.savez on a name would append '.npz')."""
        with open(Path(path), "wb") as f:
            np.savez(f, __config__=np.array(self.config.to_json()), **self.params)

    @classmethod
    def load(cls, path):
        with np.load(Path(path), allow_pickle=False) as f:
            if "__config__" not in f.files:
                raise ValueError(f"{path} has no '__config__' entry; it was not written by MiniBERT.save().")
            config = BertConfig.from_dict(json.loads(str(f["__config__"])))
            arrays = {k: f[k] for k in f.files if k != "__config__"}
        model = cls(config)
        if set(arrays) != set(model.params):
            raise ValueError(f"{path} does not match its config: missing {sorted(set(model.params) - set(arrays))}, "
                             f"unexpected {sorted(set(arrays) - set(model.params))}.")
        for k, a in arrays.items():
            if a.shape != model.params[k].shape:
                raise ValueError(f"{path}: '{k}' has shape {a.shape} but the config needs "
                                 f"{model.params[k].shape}.")
        model.params = arrays
        return model


HF_NAMES = {  # our name -> (Hugging Face BertForMaskedLM name, transpose?) ; {i} = layer index
    "emb.tok": ("bert.embeddings.word_embeddings.weight", False),
    "emb.pos": ("bert.embeddings.position_embeddings.weight", False),
    "emb.ln.gamma": ("bert.embeddings.LayerNorm.weight", False),
    "emb.ln.beta": ("bert.embeddings.LayerNorm.bias", False),
    "attn.Wq": ("attention.self.query.weight", True), "attn.bq": ("attention.self.query.bias", False),
    "attn.Wk": ("attention.self.key.weight", True), "attn.bk": ("attention.self.key.bias", False),
    "attn.Wv": ("attention.self.value.weight", True), "attn.bv": ("attention.self.value.bias", False),
    "attn.Wo": ("attention.output.dense.weight", True), "attn.bo": ("attention.output.dense.bias", False),
    "attn.ln.gamma": ("attention.output.LayerNorm.weight", False),
    "attn.ln.beta": ("attention.output.LayerNorm.bias", False),
    "ffn.W1": ("intermediate.dense.weight", True), "ffn.b1": ("intermediate.dense.bias", False),
    "ffn.W2": ("output.dense.weight", True), "ffn.b2": ("output.dense.bias", False),
    "ffn.ln.gamma": ("output.LayerNorm.weight", False), "ffn.ln.beta": ("output.LayerNorm.bias", False),
    "mlm.Wt": ("cls.predictions.transform.dense.weight", True),
    "mlm.bt": ("cls.predictions.transform.dense.bias", False),
    "mlm.ln.gamma": ("cls.predictions.transform.LayerNorm.weight", False),
    "mlm.ln.beta": ("cls.predictions.transform.LayerNorm.bias", False),
    "mlm.bias": ("cls.predictions.bias", False),
}


def to_hf_state_dict(params):
    """Our params (or grads) -> dict keyed and laid out like transformers' BertForMaskedLM.state_dict():
    Linear weights are stored (out, in) there, so ours (in, out) are transposed. One entry per our key; the
    tied decoder weight/bias and the zero token-type table are added by export_hf.save_hf."""
    out = {}
    for k, a in params.items():
        if k.startswith("layer"):
            i, rest = k[len("layer"):].split(".", 1)
            name, t = HF_NAMES[rest]
            name = f"bert.encoder.layer.{i}.{name}"
        else:
            name, t = HF_NAMES[k]
        out[name] = np.ascontiguousarray(a.T) if t else a
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description="Run a random batch through MiniBERT and print shapes.")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--batch-size", type=int, default=2)
    args = p.parse_args(argv)
    config = get_config(args.preset)
    rng = np.random.default_rng(0)
    model = MiniBERT(config, seed=0)
    B, T = args.batch_size, config.max_position_embeddings
    ids = rng.integers(5, config.vocab_size, size=(B, T))
    logits, cache = model.forward(ids)
    mlm_mask = np.zeros((B, T), bool)
    mlm_mask.flat[[1, 3, 5]] = True
    mlogits, _ = model.forward(ids, mlm_mask=mlm_mask)
    hs, ap = cache["hidden_states"], cache["attn_probs"]
    print(f"{model.num_params():,} params | logits {logits.shape} | masked logits {mlogits.shape} | "
          f"hidden_states {len(hs)} x {hs[0].shape} | attn_probs {len(ap)} x {ap[0].shape}")


if __name__ == "__main__":
    main()
