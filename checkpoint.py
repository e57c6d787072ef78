"""Checkpoints: written atomically by train.py, found and loaded (with their vocab) by everything after it.

    resume.npz   the model + AdamW moments + run state (step, RNG, data position, args): what --resume reads
    last.npz     the model alone, in MiniBERT.save's format (every param by name + '__config__')
    best.npz     the same, at the best held-out loss so far
Every file goes to path.tmp-<pid>, is fsynced, then os.replace'd: a reader (or a killed run) sees the old
file or the new one, never half of one.

Usage:
    python checkpoint.py runs/mini              # which checkpoint and vocab evaluate.py would use, and the step

Expect: `runs/mini/best.npz | vocab data/vocab-8192.txt (8192 tokens) | L=3 H=192 T=64, 2,965,760 params | step 6676`
(the step from resume.npz, when there is one).
"""
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from config import ArgumentParser, BertConfig, UserError, cli, existing_file
from model import MiniBERT
from tokenizer import WordPieceTokenizer

REPO = Path(__file__).resolve().parent


# ---- writing (train.py) ----

def atomic_savez(path, **arrays):
    """np.savez into path.tmp-<pid>, fsync, then os.replace: a reader sees the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def model_arrays(model):
    """The arrays of MiniBERT.save's format: every param by name plus '__config__'."""
    return {"__config__": np.array(model.config.to_json()), **model.params}


def save_checkpoint(out, model, opt, state, best=False):
    """resume.npz: model + optimizer moments + run state (JSON: step, RNG, data position, args);
    last.npz (and best.npz if best): the model alone, in MiniBERT.save's format."""
    meta = {k: v for k, v in opt.state_dict(moments=False).items()}
    arrays = model_arrays(model)
    arrays.update({f"opt.m/{k}": a for k, a in opt.m.items()})     # the live moments: written, not copied
    arrays.update({f"opt.v/{k}": a for k, a in opt.v.items()})
    arrays["__state__"] = np.array(json.dumps({**state, "optimizer": meta}))
    atomic_savez(out / "resume.npz", **arrays)
    atomic_savez(out / "last.npz", **model_arrays(model))
    if best:
        atomic_savez(out / "best.npz", **model_arrays(model))


def check_out_dir(out, resume=False, overwrite=False):
    """Before any work: refuse to start a new run over another run's checkpoints (train.py --out)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; pass a folder for the run.")
    if resume and overwrite:
        raise UserError("--resume continues the run in --out and --overwrite starts a new one there; pass one of them.")
    found = [f for f in ("resume.npz", "last.npz", "best.npz") if (out / f).is_file()]
    if found and not resume and not overwrite:
        raise UserError(f"{out} holds another run ({', '.join(found)}); continue it with --resume, start over "
                        f"with --overwrite, or pass another --out.")


def load_resume(path):
    """-> (model, optimizer state dict, run state dict) from a resume.npz; a missing or unreadable file raises
    UserError (one line)."""
    if not Path(path).is_file():
        raise UserError(f"no checkpoint {path} to resume; start the run without --resume.")
    try:
        with np.load(path, allow_pickle=False) as f:
            config = BertConfig.from_dict(json.loads(str(f["__config__"])))
            state = json.loads(str(f["__state__"]))
            model = MiniBERT(config)
            model.params = {k: f[k] for k in model.params}
            opt_state = dict(state.pop("optimizer"))
            opt_state["m"] = {k: f[f"opt.m/{k}"] for k in model.params}
            opt_state["v"] = {k: f[f"opt.v/{k}"] for k in model.params}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot resume from {path}: not a complete train.py checkpoint ({str(e)[:120]}); "
                        f"start a new run with another --out.") from None
    return model, opt_state, state


# ---- finding and loading (evaluate.py, probe_pos.py, finetune_sst2.py) ----

def find_checkpoint(path):
    """A .npz file as given, or the best (else last) checkpoint of a train.py run folder."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise UserError(f"checkpoint {p} does not exist; pass --checkpoint the run folder train.py wrote "
                        f"(e.g. runs/mini) or a .npz saved with MiniBERT.save.")
    for name in ("best.npz", "last.npz"):                # what train.py writes (resume.npz adds the optimizer)
        if (p / name).is_file():
            return p / name
    found = sorted((f for f in p.glob("*.npz") if f.name != "resume.npz"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise UserError(f"no .npz checkpoint in {p}; train one (python train.py --out {p}) or pass the .npz "
                        f"file itself.")
    return found[-1]


def find_vocab(run_dir, vocab_size, vocab=None):
    """--vocab as given; else the one train.py recorded; else a vocab*.txt next to the run or in data/ whose
    size matches the checkpoint."""
    if vocab is not None:
        if not Path(vocab).is_file():
            raise UserError(f"vocab {vocab} does not exist; pass --vocab the vocab.txt the model was trained with.")
        return Path(vocab)
    try:                                                   # the --vocab that train.py recorded in resume.npz
        with np.load(run_dir / "resume.npz", allow_pickle=False) as f:
            v = json.loads(str(f["__state__"])).get("args", {}).get("vocab")
        if v and Path(v).is_file():
            return Path(v)
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    cands = sorted(run_dir.glob("vocab*.txt")) + [REPO / "data" / "vocab-8192.txt"] + sorted((REPO / "data").glob("vocab*.txt"))
    for c in cands:                                         # the first with the checkpoint's vocab size
        if c.is_file() and sum(1 for _ in open(c, encoding="utf-8")) == vocab_size:
            return c
    raise UserError(f"no vocab.txt of {vocab_size} tokens next to {run_dir} or in {REPO / 'data'}; pass --vocab "
                    f"the vocab the model was trained with.")


def load_checkpoint(path, vocab=None):
    """-> (model, tokenizer, info {checkpoint, run_dir, vocab}); any mismatch raises UserError (one clear line)."""
    ckpt = find_checkpoint(path)
    run_dir = ckpt.parent
    try:
        model = MiniBERT.load(ckpt)
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot load {ckpt} as a model ({str(e)[:160]}); pass best.npz or last.npz of a "
                        f"train.py run, or a file written by MiniBERT.save.") from None
    vpath = find_vocab(run_dir, model.config.vocab_size, vocab)
    tok = WordPieceTokenizer.load(vpath)
    if tok.vocab_size != model.config.vocab_size:
        raise UserError(f"vocab {vpath} has {tok.vocab_size} tokens but {ckpt} was trained with vocab_size="
                        f"{model.config.vocab_size}; pass --vocab the vocab.txt used for training.")
    return model, tok, {"checkpoint": ckpt, "run_dir": run_dir, "vocab": vpath}


def random_init_like(model, seed=0):
    """A fresh model of the same config: the control for everything pretraining is supposed to add."""
    return MiniBERT(model.config, seed=1000 + seed)


@cli
def main(argv=None):
    p = ArgumentParser(description="Show which checkpoint and vocab a run folder resolves to.")
    p.add_argument("checkpoint", help="run folder written by train.py, or a .npz checkpoint")
    p.add_argument("--vocab", default=None, type=existing_file,
                   help="vocab.txt (default: found next to the checkpoint or in data/)")
    args = p.parse_args(argv)
    model, tok, info = load_checkpoint(args.checkpoint, args.vocab)
    step = ""
    resume = info["run_dir"] / "resume.npz"
    if resume.is_file():
        with np.load(resume, allow_pickle=False) as f:
            step = f" | step {json.loads(str(f['__state__']))['step']}"
    c = model.config
    print(f"{info['checkpoint']} | vocab {info['vocab']} ({tok.vocab_size} tokens) | L={c.num_hidden_layers} "
          f"H={c.hidden_size} T={c.max_position_embeddings}, {model.num_params():,} params{step}")


if __name__ == "__main__":
    main()
