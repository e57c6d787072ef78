"""Model configuration for Mini-BERT: one dataclass with Hugging Face field names, and named presets.

Usage:
    python config.py                     # parameter table, memory budget and FLOPs of the 'mini' preset
    python config.py --preset larger --batch-size 16

Expect (mini): 2,965,760 parameters, 53% of them in the token embedding (V=8192 x H=192), which the MLM
decoder shares (tied weights); at B=32 T=64 about 169 MiB for weights + grads + AdamW state + activations,
and 17.1 GFLOP of matmuls per training step with the MLM head on the 15% masked positions.
`larger`: 30,095,312 parameters.
"""
import argparse
import dataclasses
import functools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class BertConfig:
    vocab_size: int = 8192                     # V: WordPiece vocabulary, [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4
    hidden_size: int = 192                     # H: width of the residual stream
    num_hidden_layers: int = 3                 # L: transformer layers
    num_attention_heads: int = 4               # A: heads; head size D = H / A
    intermediate_size: int = 768               # I: FFN inner width (4H, as in BERT)
    max_position_embeddings: int = 64          # T: longest sequence (learned position table has T rows)
    hidden_dropout_prob: float = 0.1           # dropout on embeddings, attention output and FFN output
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention probabilities
    layer_norm_eps: float = 1e-12              # BERT's LayerNorm epsilon
    initializer_range: float = 0.02            # std of the N(0, s^2) init of weights and embeddings
    hidden_act: str = "gelu"                   # "gelu" (tanh form of the original BERT code) or "relu"

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                             f"{self.num_attention_heads}; pick a head count that divides it.")
        if self.hidden_act not in ("gelu", "relu"):
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; use 'gelu' or 'relu'.")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer.")

    @property
    def head_size(self):
        return self.hidden_size // self.num_attention_heads

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"config has unknown fields {unknown}; it was written by another program or version.")
        return cls(**d)


PRESETS = {
    # tests: every code path, small enough for finite differences
    "tiny": BertConfig(vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=16, max_position_embeddings=8,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    # the default: pretrains on a laptop CPU in about 2 hours
    "mini": BertConfig(),
    # from the seeds: BERT-small-ish, for a patient learner
    "larger": BertConfig(vocab_size=50000, hidden_size=384, num_hidden_layers=6, num_attention_heads=8,
                         intermediate_size=1536, max_position_embeddings=128),
}


def get_config(preset="mini", **overrides):
    """A fresh copy of a preset with some fields replaced, e.g. get_config("mini", vocab_size=5000)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    return dataclasses.replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def param_table(config):
    """[(component, fnmatch patterns of model.py param names, count)]: the parameter count by component,
    from the shapes model.py allocates (tests/test_model.py checks it against the real arrays)."""
    c = config
    V, H, I, T, L = c.vocab_size, c.hidden_size, c.intermediate_size, c.max_position_embeddings, c.num_hidden_layers
    return [
        ("token embedding V x H (tied: also the MLM decoder)", ["emb.tok"], V * H),
        ("position embedding T x H", ["emb.pos"], T * H),
        ("embedding LayerNorm", ["emb.ln.*"], 2 * H),
        (f"attention Q, K, V, O: 4 (H x H + H), x{L}", ["layer*.attn.W*", "layer*.attn.b*"], L * 4 * (H * H + H)),
        (f"attention LayerNorm, x{L}", ["layer*.attn.ln.*"], L * 2 * H),
        (f"FFN W1, b1, W2, b2: 2 H I + I + H, x{L}", ["layer*.ffn.W*", "layer*.ffn.b*"], L * (2 * H * I + I + H)),
        (f"FFN LayerNorm, x{L}", ["layer*.ffn.ln.*"], L * 2 * H),
        ("MLM transform Wt, bt + LayerNorm", ["mlm.Wt", "mlm.bt", "mlm.ln.*"], H * H + 3 * H),
        ("MLM decoder bias (weight tied)", ["mlm.bias"], V),
    ]


def activation_floats(config, B, mask_prob=0.15, dropout=True):
    """Floats the forward keeps for the backward in one training step (model.py's caches) at B x T, with the
    last layer's queries, its FFN sublayer and the MLM head on N = mask_prob B T rows. Inputs shared by two
    caches count once. M, the padded queries per sequence of the last layer, is taken as the binomial mean
    + 2 standard deviations of the masked positions per row (the real M is the batch's largest count)."""
    c = config
    H, I, A, T, V, L = (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.max_position_embeddings,
                        c.vocab_size, c.num_hidden_layers)
    R, N, d = B * T, round(mask_prob * B * T), int(dropout)
    M = min(T, math.ceil(mask_prob * T + 2 * math.sqrt(mask_prob * (1 - mask_prob) * T)))
    emb = R * H * (2 + d)                             # sum -> LN xhat, output, dropout mask
    attn = (R * H * (3 + 1 + d + 2)                   # q, k, v; merged ctx; dropout mask; LN xhat, output
            + B * A * T * T * (1 + 2 * d)             # probs (+ dropout mask and dropped probs)
            + 3 * H * H)                              # the fused [Wq | Wk | Wv] (H, 3H) of the Q/K/V GEMM
    attn_rows = (R * 2 * H + 2 * H * H                # last layer: k, v of all rows; [Wk | Wv]
                 + N * H * (1 + 1 + d + 2)            # x[rows]; merged ctx; dropout mask; LN xhat, output
                 + B * M * H                          # the padded queries (B, A, M, D)
                 + B * A * M * T * (1 + 2 * d))       # their probs (+ dropout mask and dropped probs)
    ffn = lambda n: n * I * 2 + n * H * (2 + d)       # pre-act, GELU phi (act = pre-act * phi is recomputed);
    #                                                   LN xhat, output (+ dropout mask)
    head = N * H * 4 + N * V                          # pre-act, GELU phi, LN xhat, t; logits (dlogits overwrite them)
    return emb + (L - 1) * attn + attn_rows + (L - 1) * ffn(R) + ffn(N) + head


def forward_flops(config, B, mask_prob=None):
    """Multiply-add FLOPs (2 m n k per matmul) of one forward at B x T, by part; with mask_prob the last layer's
    queries (Q, attention rows, Wo; M padded queries per sequence as in activation_floats), its FFN sublayer and
    the MLM head run on mask_prob B T rows (model.py's mlm_mask path)."""
    c = config
    H, I, T, V, L = c.hidden_size, c.intermediate_size, c.max_position_embeddings, c.vocab_size, c.num_hidden_layers
    R = B * T
    if mask_prob is None:
        N, M = R, T
    else:
        N = round(mask_prob * R)
        M = min(T, math.ceil(mask_prob * T + 2 * math.sqrt(mask_prob * (1 - mask_prob) * T)))
    return {"attention projections Q, K, V, O": (L - 1) * 2 * R * H * 4 * H + 2 * R * H * 2 * H + 2 * N * H * 2 * H,
            "attention scores q k^T and probs v": (L - 1) * 2 * 2 * B * T * T * H + 2 * 2 * B * M * T * H,
            "FFN W1, W2": (L - 1) * 2 * R * 2 * H * I + 2 * N * 2 * H * I,
            "MLM transform Wt": 2 * N * H * H,
            "MLM decoder t E^T": 2 * N * H * V}


# ---- bad input: one line, no traceback (every script) ----

class UserError(ValueError):
    """A mistake in the command line or in the files it names. Every script prints it as one line,
    `error: ...`, and exits with status 1. It lives here, at the bottom of the import order, so that every
    module can raise it."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too: `error: argument --steps: must be at least 1, got -5
    (see train.py --help)`, exit status 2 (argparse's own prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def cli(main):
    """Decorator for a script's main(argv=None): a UserError or a missing file ends it with one line on
    stderr and exit status 1, instead of a traceback."""
    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv)
        except (UserError, FileNotFoundError) as e:
            print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
            raise SystemExit(1) from None
    return wrapped


def _number(kind, text):
    try:
        x = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {'a whole number' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return x


def at_least(low, kind=int):
    """argparse type: a number >= low (at_least(1): a count; at_least(0): a seed or an optional count)."""
    def check(text):
        x = _number(kind, text)
        if x < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return x
    check.__name__ = f"at_least_{low}"
    return check


def positive(text):
    """argparse type: a float > 0 (a learning rate, a time budget)."""
    x = _number(float, text)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return x


def fraction(low_open=False):
    """argparse type: a probability in [0, 1), or in (0, 1) with low_open (a masking rate must mask something)."""
    def check(text):
        x = _number(float, text)
        if not (0 < x < 1 if low_open else 0 <= x < 1):
            raise argparse.ArgumentTypeError(f"must be in {'(0' if low_open else '[0'}, 1), got {text}")
        return x
    check.__name__ = "fraction"
    return check


def existing_file(text):
    """argparse type: a path to a file that exists (returned as a str: run arguments are saved as JSON)."""
    p = Path(text)
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file" if p.is_dir() else
                                         f"{text} does not exist")
    return text


def existing_dir(text):
    """argparse type: a folder that exists."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder" if Path(text).exists() else
                                         f"folder {text} does not exist")
    return text


@cli
def main(argv=None):
    p = ArgumentParser(description="Print the parameter table, memory budget and FLOPs of a preset.")
    p.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    p.add_argument("--batch-size", type=at_least(1), default=32)
    p.add_argument("--mask-prob", type=fraction(low_open=True), default=0.15,
                   help="fraction of positions the MLM head sees")
    args = p.parse_args(argv)
    c, B = get_config(args.preset), args.batch_size
    print(json.dumps(c.to_dict()))
    table = param_table(c)
    P = sum(n for _, _, n in table)
    print(f"\nparameters ({args.preset})")
    for name, _, n in table:
        print(f"  {name:<52} {n:>12,}  {100 * n / P:5.1f}%")
    print(f"  {'total':<52} {P:>12,}")
    mib = lambda floats: f"{4 * floats / 2 ** 20:8.1f} MiB"
    act = activation_floats(c, B, args.mask_prob)
    print(f"\nmemory, float32, B={B} T={c.max_position_embeddings}")
    for name, floats in (("weights", P), ("gradients", P), ("AdamW state m, v", 2 * P),
                         (f"activations kept for backward (mask {args.mask_prob:.0%})", act)):
        print(f"  {name:<52} {mib(floats)}")
    print(f"  {'total':<52} {mib(4 * P + act)}")
    print(f"\nFLOPs of one forward, B={B} T={c.max_position_embeddings} (matmuls, 2 m n k)")
    full, masked = forward_flops(c, B), forward_flops(c, B, args.mask_prob)
    for name in full:
        print(f"  {name:<40} {full[name] / 1e9:8.2f} GFLOP all rows | {masked[name] / 1e9:8.2f} masked rows")
    f, m = sum(full.values()), sum(masked.values())
    print(f"  {'forward':<40} {f / 1e9:8.2f} GFLOP          | {m / 1e9:8.2f}")
    print(f"training step = forward + backward (2x forward) = {3 * m / 1e9:.2f} GFLOP with the MLM head on "
          f"{args.mask_prob:.0%} of positions ({3 * f / 1e9:.2f} on all); {P:,} parameters")


if __name__ == "__main__":
    main()
