"""Smoke test: run every component of Mini-BERT once on tiny inputs, one OK / FAIL line each.

This is the "does my checkout work?" check, not the test suite (that is `python -m pytest`). Nothing here
reads the real datasets; every fixture is written to a temporary folder.

Usage:
    python simple_test.py            # all checks
    python simple_test.py core data  # only the named checks

Expect: one line per check, e.g. `OK    core        forward + backward on tiny (0.0 s)`, then
`simple_test: 12/12 OK` last, in about 10-20 s. The exit code is 1 if any check fails.
"""
import argparse
import contextlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent
WORDS = "the cat sat on mat dog ran far".split()                 # 5 specials + 8 words = V 13, as in `tiny`
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_corpus(rng, n_docs):
    """Documents of random sentences over WORDS, one paragraph per line, a blank line between documents."""
    docs = ["\n".join(" ".join(rng.choice(WORDS, size=int(rng.integers(5, 15)))) for _ in range(2))
            for _ in range(n_docs)]
    return "\n\n".join(docs) + "\n"


def tiny_batch(seed=0):
    from config import get_config
    from model import MiniBERT
    rng = np.random.default_rng(seed)
    model = MiniBERT(get_config("tiny"), seed=seed)
    ids = rng.integers(5, 13, size=(2, 8))
    mlm_mask = np.zeros((2, 8), bool)
    mlm_mask[:, 3] = True
    return model, ids, mlm_mask


# ---- checks: each returns a short description, or raises ----

def check_config(tmp):
    from config import get_config, param_table
    from model import MiniBERT
    cfg = get_config("tiny")
    table = sum(n for _, _, n in param_table(cfg))
    real = MiniBERT(cfg).num_params()
    assert table == real, f"param table says {table}, the model allocates {real}"
    return f"tiny preset: parameter table = real arrays = {real:,}"


def check_core(tmp):
    from gradients import backward
    from mlm import mlm_loss
    model, ids, mlm_mask = tiny_batch()
    logits, cache = model.forward(ids, mlm_mask=mlm_mask)
    loss, dlogits = mlm_loss(logits, ids[mlm_mask])
    grads = backward(model, cache, dlogits)
    assert logits.shape == (2, 13) and set(grads) == set(model.params)
    assert abs(loss - np.log(13)) < 0.1, f"loss at init {loss:.3f}, expected ~ln(13) = {np.log(13):.3f}"
    return f"forward + backward on tiny, loss at init {loss:.3f} ~ ln(13) {np.log(13):.3f}"


def check_gradients(tmp):
    sys.path.insert(0, str(REPO / "tests"))
    from gradcheck import check_all
    rows = check_all()
    bad = [name for name, err, tol in rows if not err <= tol]
    assert not bad, f"finite-difference check failed for {bad}"
    return f"{len(rows)} finite-difference checks, worst rel_err {max(err for _, err, _ in rows):.1e}"


def check_save_load(tmp):
    from model import MiniBERT
    model, ids, _ = tiny_batch()
    model.save(tmp / "m.npz")
    again = MiniBERT.load(tmp / "m.npz")
    a, _ = model.forward(ids)
    b, _ = again.forward(ids)
    assert np.array_equal(a, b)
    return "save -> load gives identical logits"


def check_export_hf(tmp):
    from export_hf import save_hf
    model, _, _ = tiny_batch()
    save_hf(model, tmp / "hf")
    names = sorted(p.name for p in (tmp / "hf").iterdir())
    assert "config.json" in names and "model.safetensors" in names, names
    return "save_hf writes " + ", ".join(names)


def check_tokenizer(tmp):
    from tokenizer import WordPieceTokenizer
    rng = np.random.default_rng(0)
    tok = WordPieceTokenizer.train(tiny_corpus(rng, 20).splitlines(), vocab_size=40)
    ids = tok.encode("The cat sat on the MAT")                   # lowercased by BERT's normaliser
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and tok.unk_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "the cat sat on the mat", tok.decode(ids)
    tok.save(tmp / "vocab.txt")
    assert WordPieceTokenizer.load(tmp / "vocab.txt").encode("the dog ran far") == tok.encode("the dog ran far")
    return f"trained a {tok.vocab_size}-token vocab, encode/decode/save/load round trip"


def check_masking(tmp):
    from mlm import mask_tokens
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, size=(64, 64))
    ids[:, 0], ids[:, -1] = 2, 3
    inp, labels = mask_tokens(ids, rng, vocab_size=100, special_ids=[0, 1, 2, 3, 4])
    frac = float((labels != -100).mean())
    assert np.all(labels[:, [0, -1]] == -100) and 0.12 < frac < 0.16, frac
    return f"selected {frac:.3f} of tokens (BERT: 0.15 of the non-special ones), specials never"


def check_data(tmp):
    from data import PackedBatches, pad_batch
    tokens = np.arange(5, 1005, dtype=np.uint16)
    tokens[::50] = 3                                              # [SEP] between documents
    batches = PackedBatches(tokens, seq_len=16, batch_size=4, seed=0)
    x = batches.next_batch()
    assert x.shape == (4, 16) and np.all(x[:, 0] == 2) and np.all(x[:, -1] == 3) and not np.any(x == 0)
    ids, mask = pad_batch([[2, 7, 3], [2, 3]])
    assert ids.tolist() == [[2, 7, 3], [2, 3, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    return "packed rows [CLS] ... [SEP] with no padding; pad_batch pads and masks"


def check_optimizer(tmp):
    from optimizer import AdamW, clip_grad_norm, lr_at
    p = {"w": np.ones((2, 2)), "b": np.zeros(2)}
    g = {"w": np.full((2, 2), 0.5), "b": np.full(2, -0.5)}
    norm = clip_grad_norm(g, 1e9)
    AdamW(p, lr=0.1, weight_decay=0.0).step(g)
    assert np.allclose(p["w"], 0.9) and np.allclose(p["b"], 0.1) and abs(norm - np.sqrt(6 * 0.25)) < 1e-12
    assert lr_at(0, 1.0, 10, 100) < lr_at(10, 1.0, 10, 100) and lr_at(100, 1.0, 10, 100) == 0.0
    return "one AdamW step moves each weight by lr; warmup then decay"


def check_train(tmp):
    import json
    import train
    rng = np.random.default_rng(0)
    (tmp / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n", encoding="utf-8")
    (tmp / "train.txt").write_text(tiny_corpus(rng, 40), encoding="utf-8")
    (tmp / "valid.txt").write_text(tiny_corpus(rng, 10), encoding="utf-8")
    with open(tmp / "train.log", "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):   # keep the smoke output short
        train.main(["--preset", "tiny", "--corpus", str(tmp / "train.txt"), "--valid", str(tmp / "valid.txt"),
                    "--vocab", str(tmp / "vocab.txt"), "--cache-dir", str(tmp / "cache"), "--out", str(tmp / "run"),
                    "--steps", "20", "--batch-size", "4", "--threads", "1", "--warmup", "2", "--lr", "1e-2",
                    "--eval-every", "10", "--log-every", "1", "--eval-batches", "2", "--quiet", "--no-plots"])
    recs = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r]
    assert len(losses) == 20 and losses[-1] < losses[0], losses
    assert (tmp / "run" / "last.npz").exists()
    return f"20 steps of tiny: loss {losses[0]:.2f} -> {losses[-1]:.2f}, checkpoint written"


def check_metrics(tmp):
    from metrics import hand_cases
    cases = hand_cases()
    bad = [name for name, got, want in cases if not np.allclose(got, want, atol=1e-9)]
    assert not bad, f"metrics differ from their hand-computed values: {bad}"
    return f"{len(cases)} metrics equal their hand-computed values"


def check_probe(tmp):
    from probe_pos import train_probe, probe_accuracy
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)                          # linearly separable
    params, _, _ = train_probe(X, y, X, y, n_classes=2, seed=0, lr=3e-2, batch_size=32, max_epochs=30)
    acc = probe_accuracy(params, X, y)
    assert acc > 0.9, acc
    return f"linear probe on a separable toy task: accuracy {acc:.2f}"


CHECKS = {"config": check_config, "core": check_core, "gradients": check_gradients, "save_load": check_save_load,
          "export_hf": check_export_hf, "tokenizer": check_tokenizer, "masking": check_masking, "data": check_data,
          "optimizer": check_optimizer, "train": check_train, "metrics": check_metrics, "probe": check_probe}


def main(argv=None):
    p = argparse.ArgumentParser(description="Smoke-test every Mini-BERT component on tiny inputs (~15 s).")
    p.add_argument("checks", nargs="*", choices=[[]] + sorted(CHECKS), metavar="CHECK",
                   help=f"run only these ({', '.join(CHECKS)}); default: all")
    p.add_argument("-v", "--verbose", action="store_true", help="print the traceback of a failing check")
    args = p.parse_args(argv)
    names = args.checks or list(CHECKS)
    n_ok = 0
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            tmp = Path(d) / name
            tmp.mkdir()
            t0 = time.perf_counter()
            try:
                what = CHECKS[name](tmp)
                n_ok += 1
                print(f"OK    {name:<10}  {what} ({time.perf_counter() - t0:.1f} s)", flush=True)
            except Exception as e:                                  # a smoke test reports, it does not stop
                print(f"FAIL  {name:<10}  {type(e).__name__}: {e}", flush=True)
                if args.verbose:
                    traceback.print_exc()
    print(f"simple_test: {n_ok}/{len(names)} OK")
    sys.exit(0 if n_ok == len(names) else 1)


if __name__ == "__main__":
    main()
