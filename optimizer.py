"""AdamW with bias correction and decoupled weight decay, the LR schedule, and global-norm gradient clipping.

AdamW: Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", Algorithm 2; Adam: Kingma & Ba 2015.
Weight decay applies only to arrays with 2+ dimensions (weights and embeddings), never to biases or
LayerNorm gains, as in BERT and nanoGPT.

Usage:
    python optimizer.py                  # prints the default schedule at a few steps and one AdamW step

Expect: lr rises linearly to max_lr over the warmup, then falls to min_lr at `total`; the AdamW demo
moves every parameter by about lr on its first step (m_hat / sqrt(v_hat) = sign(g) at step 1).
"""
import math
import threading

import numpy as np

from config import ArgumentParser, at_least, positive


def row_blocks(shape, block=1 << 18):
    """Slices of the first axis covering about `block` elements each (one slice(None) for a small array)."""
    if len(shape) < 2 or int(np.prod(shape)) <= block:
        return [slice(None)]
    step = max(1, block // int(np.prod(shape[1:])))
    return [slice(i, i + step) for i in range(0, shape[0], step)]


class AdamW:
    """m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  m_hat = m/(1-b1^t);  v_hat = v/(1-b2^t)
    p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)      (wd = weight_decay if p.ndim >= 2 else 0)
    params: dict name -> array, updated in place; the moments have the params' dtype."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0                                                   # steps taken
        self.m = {k: np.zeros_like(p) for k, p in params.items()}   # first moment
        self.v = {k: np.zeros_like(p) for k, p in params.items()}   # second moment
        self._blocks = {k: row_blocks(p.shape) for k, p in params.items()}  # units of work for step(map_fn=)
        self._local = threading.local()                               # one scratch buffer per thread

    def decays(self, name):
        """True for the arrays that get weight decay: 2+ dimensions (no biases, no LayerNorm)."""
        return self.params[name].ndim >= 2

    def step(self, grads, lr=None, map_fn=None):
        """One update of every parameter from grads (same keys and shapes), in place. lr overrides self.lr.
        map_fn (e.g. a thread pool's map) runs the independent updates of row blocks concurrently."""
        lr = self.lr if lr is None else lr
        self.t += 1
        bc1 = 1.0 - self.beta1 ** self.t                              # bias corrections
        bc2 = 1.0 - self.beta2 ** self.t
        blocks = [(k, rows) for k in self.params for rows in self._blocks[k]]
        if map_fn is None:
            for k, rows in blocks:
                self._update(k, rows, grads[k], lr, bc1, bc2)
        else:
            list(map_fn(lambda kr: self._update(kr[0], kr[1], grads[kr[0]], lr, bc1, bc2), blocks))

    def _update(self, k, rows, g, lr, bc1, bc2):
        """AdamW on rows `rows` of parameter k. The math, one line per moment:
            m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
            p -= lr * (m/bc1 / (sqrt(v/bc2) + eps) + wd*p)
        written in place into reused buffers (fresh temporaries cost page faults every step)."""
        b1, b2 = self.beta1, self.beta2
        p, g, m, v = self.params[k][rows], g[rows], self.m[k][rows], self.v[k][rows]
        tmp = self._scratch(p.shape, p.dtype)
        m *= b1
        np.multiply(g, 1.0 - b1, out=tmp)
        m += tmp                                                       # m = b1*m + (1-b1)*g
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp                                                       # v = b2*v + (1-b2)*g^2
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / math.sqrt(bc2)                                    # sqrt(v_hat)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / bc1                                                # lr * m_hat / (sqrt(v_hat) + eps)
        if self.params[k].ndim >= 2 and self.weight_decay != 0.0:
            p *= 1.0 - lr * self.weight_decay                          # decoupled decay: p -= lr*wd*p
        p -= tmp

    def _scratch(self, shape, dtype):
        """A reused buffer of this shape (this thread's; at most one row block, so about 1 MB)."""
        buf, n = getattr(self._local, "buf", None), int(np.prod(shape))
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = self._local.buf = np.empty(n, dtype)
        return buf[:n].reshape(shape)

    def state_dict(self, moments=True):
        """Everything needed to continue exactly: step count, hyper-parameters and (copies of) both moments."""
        state = {"t": self.t, "lr": self.lr, "betas": (self.beta1, self.beta2), "eps": self.eps,
                 "weight_decay": self.weight_decay}
        if moments:
            state.update(m={k: a.copy() for k, a in self.m.items()}, v={k: a.copy() for k, a in self.v.items()})
        return state

    def load_state_dict(self, state):
        missing = sorted(set(self.params) - set(state["m"]))
        if missing:
            raise ValueError(f"optimizer state lacks moments for {missing[:3]}...; it belongs to another model.")
        self.t = int(state["t"])
        self.lr = float(state["lr"])
        self.beta1, self.beta2 = (float(b) for b in state["betas"])
        self.eps = float(state["eps"])
        self.weight_decay = float(state["weight_decay"])
        for k, p in self.params.items():
            self.m[k][...] = state["m"][k]
            self.v[k][...] = state["v"][k]


def lr_at(step, max_lr, warmup, total, schedule="linear", min_lr=0.0):
    """Learning rate at `step` (0-based: the lr used for the update that makes step+1).
    Linear warmup to max_lr over `warmup` steps, then linear (BERT) or cosine decay to min_lr at `total`."""
    # 1) linear warmup: 0 -> max_lr over the first `warmup` steps
    if step < warmup:
        return max_lr * (step + 1) / warmup
    # 2) past the end of the schedule: stay at the floor
    if step >= total:
        return min_lr
    # 3) in between: decay from max_lr to min_lr, linearly or along half a cosine
    frac = (step - warmup) / max(1, total - warmup)                   # 0 -> 1
    if schedule == "linear":
        coeff = 1.0 - frac
    elif schedule == "cosine":
        coeff = 0.5 * (1.0 + math.cos(math.pi * frac))
    elif schedule == "constant":
        coeff = 1.0
    else:
        raise ValueError(f"unknown schedule {schedule!r}; use 'linear', 'cosine' or 'constant'.")
    return min_lr + coeff * (max_lr - min_lr)


def clip_grad_norm(grads, max_norm):
    """norm = sqrt(sum over all arrays of sum(g^2)); if norm > max_norm, every g *= max_norm / norm.
    Scales grads in place and returns the pre-clip global norm (a Python float)."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if max_norm is not None and max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm


def main(argv=None):
    p = ArgumentParser(description="Print the LR schedule and one AdamW step on a toy problem.")
    p.add_argument("--lr", type=positive, default=1e-3)
    p.add_argument("--warmup", type=at_least(0), default=100)
    p.add_argument("--total", type=at_least(1), default=1000)
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine", "constant"])
    p.add_argument("--min-lr", type=at_least(0.0, float), default=1e-4)
    args = p.parse_args(argv)
    if args.warmup >= args.total:
        p.error(f"--warmup {args.warmup} must be below --total {args.total}")
    for s in (0, args.warmup // 2, args.warmup - 1, args.warmup, (args.warmup + args.total) // 2,
              args.total - 1, args.total):
        print(f"step {s:5d} | lr {lr_at(s, args.lr, args.warmup, args.total, args.schedule, args.min_lr):.3e}")
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    before = {k: v.copy() for k, v in params.items()}
    opt = AdamW(params, lr=args.lr)
    opt.step({k: rng.standard_normal(v.shape) for k, v in params.items()})
    for k in params:
        print(f"{k} {params[k].shape} | max |step| {np.abs(params[k] - before[k]).max():.3e} (lr {args.lr:.0e})")


if __name__ == "__main__":
    main()
