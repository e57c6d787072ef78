"""The same Mini-BERT in plain PyTorch (an independent autograd reference, and the baseline that
`benchmark.py` times). Parameter names are ours (dotted keys, weights stored (in, out)), so
`make_torch_model(config, model.params)` copies a NumPy model exactly and `grads_numpy(tm)` returns a dict
comparable with gradients.backward(). Needs torch; nothing else in the repo imports it at import time.

Like model.py, with an mlm_mask the last layer's queries (Q, attention rows, Wo, LN), its FFN sublayer and the
MLM head run only on the masked rows (exact), so both implementations do the same arithmetic.

Usage:
    python tests/torch_bert.py --preset mini --batch-size 32     # times a training step, 2 threads

Expect: a line like `torch eager | mini | B=32 T=64 | 300 ms/step` (depends on the machine and its load).
"""
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from config import PRESETS, ArgumentParser, at_least, get_config   # noqa: E402

# B batch, T sequence, H hidden, A heads, D = H/A head size, I ffn size, V vocab, L layers

MASK_VALUE = -1e9


def _gelu(x):   # tanh form, as model.gelu_forward: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), one kernel
    return F.gelu(x, approximate="tanh")


class TorchBERT(torch.nn.Module):
    """Mini-BERT with the flat parameter names of model.py (dots replaced by '__' inside the ParameterDict)."""

    def __init__(self, config, params):
        super().__init__()
        self.config = config
        self.p = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(torch.from_numpy(np.array(v)))
                                         for k, v in params.items()})

    def w(self, name):
        return self.p[name.replace(".", "__")]

    def forward(self, input_ids, attention_mask=None, mlm_mask=None):  # (B, T) -> (B, T, V) or (N, V)
        c, w = self.config, self.w
        B, T = input_ids.shape
        A, eps = c.num_attention_heads, c.layer_norm_eps
        ph, pa = (c.hidden_dropout_prob, c.attention_probs_dropout_prob) if self.training else (0.0, 0.0)
        act = _gelu if c.hidden_act == "gelu" else F.relu
        H = c.hidden_size
        ln = lambda x, pre: F.layer_norm(x, (H,), w(pre + ".gamma"), w(pre + ".beta"), eps)
        x = w("emb.tok")[input_ids] + w("emb.pos")[:T]                               # (B, T, H)
        x = F.dropout(ln(x, "emb.ln"), ph, self.training).reshape(B * T, H)         # (B*T, H)
        bias = None
        if attention_mask is not None and not bool(attention_mask.all()):
            bias = ((1.0 - attention_mask.to(x.dtype)) * MASK_VALUE).reshape(B, 1, 1, T)
        rows = None if mlm_mask is None else torch.nonzero(mlm_mask.reshape(-1)).reshape(-1)
        for i in range(c.num_hidden_layers):
            pre = f"layer{i}.attn."
            sel = rows is not None and i == c.num_hidden_layers - 1                # last layer: masked queries
            k, v = ((x @ w(pre + n) + w(pre + b)).reshape(B, T, A, -1).transpose(1, 2)
                    for n, b in (("Wk", "bk"), ("Wv", "bv")))                       # (B, A, T, D)
            xq = x[rows] if sel else x                                              # (N or B*T, H)
            q = xq @ w(pre + "Wq") + w(pre + "bq")
            if sel:                                                                 # padded per sequence, as model.py
                b = rows // T
                counts = torch.bincount(b, minlength=B)
                j = torch.arange(len(rows)) - (torch.cumsum(counts, 0) - counts)[b]
                M = max(int(counts.max()) if len(rows) else 0, 1)
                q = torch.zeros(B, M, H, dtype=x.dtype).index_put((b, j), q)         # (B, M, H)
            q = q.reshape(B, -1, A, H // A).transpose(1, 2)                         # (B, A, T or M, D)
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])               # (B, A, T or M, T)
            if bias is not None:
                scores = scores + bias
            probs = F.dropout(torch.softmax(scores, dim=-1), pa, self.training)
            ctx = (probs @ v).transpose(1, 2).reshape(B, -1, H)                     # (B, T or M, H)
            ctx = ctx[b, j] if sel else ctx.reshape(B * T, H)                       # (N or B*T, H)
            a = F.dropout(ctx @ w(pre + "Wo") + w(pre + "bo"), ph, self.training)
            x = ln(xq + a, pre + "ln")                                              # (N or B*T, H)
            pre = f"layer{i}.ffn."
            h = act(x @ w(pre + "W1") + w(pre + "b1"))                              # (N, I)
            y = F.dropout(h @ w(pre + "W2") + w(pre + "b2"), ph, self.training)     # (N, H)
            x = ln(x + y, pre + "ln")
        t = ln(act(x @ w("mlm.Wt") + w("mlm.bt")), "mlm.ln")
        logits = t @ w("emb.tok").T + w("mlm.bias")                                 # (N, V)
        return logits if rows is not None else logits.reshape(B, T, -1)


def make_torch_model(config, params=None, dtype=torch.float32):
    """A TorchBERT holding a copy of params (a model.py params dict); a fresh MiniBERT init when None."""
    if params is None:
        from model import MiniBERT
        params = MiniBERT(config, seed=0).params
    return TorchBERT(config, params).to(dtype)


def grads_numpy(tm):
    """The .grad of every parameter, as a dict keyed like model.params."""
    return {k.replace("__", "."): p.grad.detach().numpy() for k, p in tm.p.items()}


def mlm_loss_torch(logits, labels):
    """Mean cross-entropy over labels != -100, as mlm.mlm_loss."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def make_optimizer(tm, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999)):
    """torch AdamW with decay only on 2+-dimensional tensors, like optimizer.py."""
    decay = [p for p in tm.parameters() if p.dim() >= 2]
    no_decay = [p for p in tm.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas, eps=1e-6)


def train_step(tm, opt, input_ids, labels, attention_mask=None, mlm_mask=None, max_grad_norm=1.0):
    """One training step: forward (with dropout), loss, backward, clip, AdamW. Inputs are NumPy arrays;
    labels are (N,) for the masked rows when mlm_mask is given, else (B, T) with -100. -> loss (float)."""
    tm.train()
    ids = torch.from_numpy(np.asarray(input_ids, dtype=np.int64))
    am = None if attention_mask is None else torch.from_numpy(np.asarray(attention_mask))
    mm = None if mlm_mask is None else torch.from_numpy(np.asarray(mlm_mask, dtype=bool))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    opt.zero_grad(set_to_none=True)
    loss = mlm_loss_torch(tm(ids, am, mm), y)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(tm.parameters(), max_grad_norm)
    opt.step()
    return loss.item()


def main(argv=None):
    p = ArgumentParser(description="Time the PyTorch training step of a preset.")
    p.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    p.add_argument("--batch-size", type=at_least(1), default=32)
    p.add_argument("--threads", type=at_least(1), default=2)
    p.add_argument("--steps", type=at_least(1), default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = get_config(args.preset)
    tm = make_torch_model(config)
    opt = make_optimizer(tm)
    rng = np.random.default_rng(0)
    B, T = args.batch_size, config.max_position_embeddings
    times = []
    for step in range(args.steps + 2):
        ids = rng.integers(5, config.vocab_size, size=(B, T))
        mm = rng.random((B, T)) < 0.15
        labels = ids[mm]
        t0 = time.perf_counter()
        train_step(tm, opt, ids, labels, mlm_mask=mm)
        if step >= 2:
            times.append(time.perf_counter() - t0)
    print(f"torch eager | {args.preset} | B={B} T={T} | {1e3 * np.median(times):.0f} ms/step "
          f"(median of {args.steps}, {args.threads} threads)")


if __name__ == "__main__":
    main()
