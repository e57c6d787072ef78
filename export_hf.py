"""Export a MiniBERT checkpoint to a Hugging Face folder (config.json, model.safetensors, vocab.txt) that
`transformers.BertForMaskedLM.from_pretrained(out_dir)` loads and runs to the same logits.

safetensors, written with NumPy: 8-byte little-endian header length n, n bytes of JSON header
{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}}, then the raw little-endian bytes.

Usage:
    python export_hf.py runs/mini/model.npz runs/mini/hf --vocab data/vocab.txt

Expect (mini): `wrote runs/mini/hf: config.json, model.safetensors, vocab.txt (model.safetensors 11.9 MB, 59 tensors)`;
the HF model then gives logits within 1e-6 of ours (tests/test_hf_reference.py).
"""
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np

from config import ArgumentParser, UserError, cli, existing_file
from model import MiniBERT, to_hf_state_dict
from tokenizer import WordPieceTokenizer

SAFETENSORS_DTYPES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("float16"): "F16",
                      np.dtype("int64"): "I64"}


def write_safetensors(tensors, path):
    """tensors: dict name -> np.ndarray. Writes the safetensors format (little-endian, C order)."""
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        if a.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {a.dtype}, which this writer does not support; cast it.")
        blob = a.tobytes()
        header[name] = {"dtype": SAFETENSORS_DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)                                       # pad the header to a multiple of 8 bytes
    with open(Path(path), "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for blob in blobs:
            f.write(blob)


def read_safetensors(path):
    """The inverse of write_safetensors: dict name -> np.ndarray."""
    inv = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + b:8 + n + e], dtype=inv[h["dtype"]]).reshape(h["shape"]).copy()
    return out


def hf_config(config):
    """Our BertConfig -> the config.json of transformers' BertForMaskedLM."""
    c = config
    return {
        "architectures": ["BertForMaskedLM"], "model_type": "bert",
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "hidden_act": "gelu_new" if c.hidden_act == "gelu" else c.hidden_act,   # gelu_new = the tanh form
        "hidden_dropout_prob": c.hidden_dropout_prob, "attention_probs_dropout_prob": c.attention_probs_dropout_prob,
        "layer_norm_eps": c.layer_norm_eps, "initializer_range": c.initializer_range,
        "type_vocab_size": 1,                     # no segments: one token-type row, all zeros
        "pad_token_id": None,                     # no frozen embedding row
        "position_embedding_type": "absolute", "tie_word_embeddings": True, "torch_dtype": "float32",
    }


def hf_tensors(model):
    """to_hf_state_dict plus what BertForMaskedLM also holds: a zero token-type table and the decoder bias
    (the same values as cls.predictions.bias; the decoder weight is tied to the word embeddings)."""
    sd = to_hf_state_dict(model.params)
    H = model.config.hidden_size
    sd["bert.embeddings.token_type_embeddings.weight"] = np.zeros((1, H), model.params["emb.tok"].dtype)
    sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]
    return sd


def save_hf(model, out_dir, vocab_file=None):
    """Write config.json, model.safetensors and (when vocab_file is given) vocab.txt into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "config.json", "w", encoding="utf-8") as f:
        json.dump(hf_config(model.config), f, indent=2)
    write_safetensors(hf_tensors(model), out / "model.safetensors")
    if vocab_file is not None:
        shutil.copyfile(Path(vocab_file), out / "vocab.txt")
    return out


@cli
def main(argv=None):
    p = ArgumentParser(description="Export a MiniBERT .npz checkpoint to a Hugging Face folder.")
    p.add_argument("checkpoint", type=existing_file, help="an .npz written by MiniBERT.save (best.npz, last.npz)")
    p.add_argument("out_dir")
    p.add_argument("--vocab", default=None, type=existing_file, help="vocab.txt to copy next to the weights")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in out_dir")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; pass out_dir a folder.")
    if (out / "model.safetensors").is_file() and not args.overwrite:
        raise UserError(f"{out} already holds an export (model.safetensors); pass --overwrite to replace it, or "
                        f"another out_dir.")
    try:
        model = MiniBERT.load(args.checkpoint)
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot load {args.checkpoint} as a model ({str(e)[:160]}); pass best.npz or last.npz of "
                        f"a train.py run (resume.npz holds the optimizer too).") from None
    if args.vocab is not None:
        n = WordPieceTokenizer.load(args.vocab).vocab_size              # a bad vocab.txt: one line, here
        if n != model.config.vocab_size:
            raise UserError(f"vocab {args.vocab} has {n} tokens but {args.checkpoint} has vocab_size "
                            f"{model.config.vocab_size}; pass --vocab the vocab.txt used for training.")
    out = save_hf(model, args.out_dir, args.vocab)
    size = (out / "model.safetensors").stat().st_size
    names = sorted(q.name for q in out.iterdir())
    print(f"wrote {out}: {', '.join(names)} (model.safetensors {size / 1e6:.1f} MB, {len(hf_tensors(model))} tensors)")


if __name__ == "__main__":
    main()
