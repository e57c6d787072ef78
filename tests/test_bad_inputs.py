"""Bad input, typed as a new user would: every case runs a script as a subprocess and must end with a non-zero
exit status, exactly one line on stderr that starts with `error:` and names the problem, no traceback, and
every file of the earlier runs below left as it was (each file hashed before and after; nothing added,
nothing removed). The fixtures are tiny and written here; every case fails before any real work, so the
whole file takes a few seconds of CPU per ten cases (mostly Python and NumPy starting up)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the cat sat on mat dog ran far".split()          # 5 specials + 8 words = V 13, as in `tiny`


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """A folder of inputs, good and bad, and the earlier runs that no bad command may touch."""
    import checkpoint
    import data
    import train
    from config import get_config
    from export_hf import save_hf
    from model import MiniBERT
    from optimizer import AdamW
    d = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    corpus = "\n\n".join(" ".join(rng.choice(WORDS, 12)) for _ in range(40)) + "\n"
    _write(d / "vocab.txt", "\n".join(SPECIALS + WORDS) + "\n")
    _write(d / "vocab_big.txt", "\n".join(SPECIALS + WORDS + ["extra"]) + "\n")           # 14 tokens
    _write(d / "vocab_nospecial.txt", "\n".join(SPECIALS[1:] + WORDS) + "\n")            # no [PAD]
    _write(d / "vocab_dup.txt", "\n".join(SPECIALS + WORDS + ["cat"]) + "\n")
    _write(d / "corpus.txt", corpus)
    _write(d / "valid.txt", corpus)
    _write(d / "short.txt", "cat sat\n")
    _write(d / "empty.txt", "")
    _write(d / "blank.txt", "  \n\n\t \n")
    (d / "latin1.txt").write_bytes("the cat\ncaf\u00e9 au lait\n".encode("latin-1"))     # line 2 is not UTF-8
    _write(d / "good.tsv", "sentence\tlabel\nthe cat sat\t1\nthe dog ran\t0\n")
    _write(d / "bad.tsv", "sentence\tlabel\nthe cat sat\t1\nthe dog ran\tmaybe\n")         # line 3
    row = "{}\t{}\t{}\tNOUN\tNN\t_\t0\troot\t_\t_\n"
    _write(d / "good.conllu", "# text = the cat\n" + row.format(1, "the", "the") + row.format(2, "cat", "cat") + "\n")
    _write(d / "bad.conllu", "# text = the cat\n" + row.format(1, "the", "the") + "2\tcat\tNOUN\n\n")   # line 3
    (d / "notzip.npz").write_bytes(b"this is not a zip file")
    pair = {"sentence_good": "the cat sat", "sentence_bad": "cat the sat", "field": "syntax", "UID": "p"}
    _write(d / "blimp_good" / "p.jsonl", json.dumps(pair) + "\n")
    _write(d / "blimp_bad" / "bad_paradigm.jsonl", json.dumps(pair) + "\n" +
           json.dumps({k: v for k, v in pair.items() if k != "sentence_bad"}) + "\n")      # line 2
    data.prepare(d / "corpus.txt", d / "vocab.txt", d / "prep", num_workers=1, verbose=False)
    (d / "prep" / "orphan.bin").write_bytes((d / "prep" / "corpus.bin").read_bytes())        # no .json
    # an earlier run, as train.py leaves it
    args = vars(train.build_parser().parse_args(
        ["--preset", "tiny", "--corpus", str(d / "corpus.txt"), "--valid", str(d / "valid.txt"),
         "--vocab", str(d / "vocab.txt"), "--cache-dir", str(d / "prep"), "--out", str(d / "run")]))
    vocab_hash = hashlib.sha256((d / "vocab.txt").read_bytes()).hexdigest()
    for name, vocab_hash, step, total, minutes, budget in (
            ("run", vocab_hash, 3, 10, 0.0, None),
            ("run_other_vocab", "0" * 64, 3, 10, 0.0, None),   # a run that started with another vocab
            ("run_done", vocab_hash, 10, 10, 0.5, None),       # finished: at its --steps 10
            ("run_done_time", vocab_hash, 7, None, 1.02, 1.0)):   # finished: past its --time-budget 1
        out = d / name
        out.mkdir()
        model = MiniBERT(get_config("tiny"), seed=0)
        files = {"corpus": str((d / "corpus.txt").resolve()), "valid": str((d / "valid.txt").resolve()),
                 "vocab_file": str(d / "vocab.txt"), "vocab_hash": vocab_hash}
        state = {"step": step, "tokens": 0, "elapsed_s": 60.0 * minutes, "train_s": 0.0, "best_val_loss": 2.5,
                 "total_steps": total, "files": files, "rng": {}, "data": {},
                 "args": {**args, "out": str(out), "steps": total, "time_budget": budget}}
        checkpoint.save_checkpoint(out, model, AdamW(model.params, lr=1e-3), state, best=True)
        # a line after the checkpoint's step, as a killed run leaves it: a resume that rewrote metrics.jsonl
        # (dropping it) would change the file's hash
        _write(out / "metrics.jsonl", "".join(json.dumps({"step": s, "loss": 2.5}) + "\n" for s in (step, step + 1)))
        _write(out / "run.json", json.dumps({**files, "args": state["args"]}))
    save_hf(MiniBERT(get_config("tiny"), seed=0), d / "hf", d / "vocab.txt")                 # an earlier export
    (d / "empty_dir").mkdir()
    (d / "no_data").mkdir()
    return d


TINY = "--preset tiny --corpus {d}/corpus.txt --valid {d}/valid.txt --vocab {d}/vocab.txt --cache-dir {d}/cache " \
       "--out {d}/new_run --quiet --no-plots"
PROBE = "--train {d}/good.conllu --dev {d}/good.conllu --test {d}/good.conllu"
SST2 = "--train {d}/good.tsv --dev {d}/good.tsv"

CASES = [  # (script, arguments, words the error line must contain)
    ("train.py", TINY + " --steps -5", ["--steps", "at least 1", "-5"]),
    ("train.py", TINY + " --batch-size 0", ["--batch-size", "at least 1"]),
    ("train.py", TINY + " --threads two", ["--threads", "whole number", "two"]),
    ("train.py", TINY + " --lr 0", ["--lr", "greater than 0"]),
    ("train.py", TINY + " --time-budget -1", ["--time-budget", "greater than 0"]),
    ("train.py", TINY + " --mask-prob 1.5", ["--mask-prob", "(0, 1)"]),
    ("train.py", TINY + " --dropout 1", ["--dropout", "[0, 1)"]),
    ("train.py", TINY + " --warmup-frac nan", ["--warmup-frac", "finite"]),
    ("train.py", TINY + " --lr 1e-3 --min-lr 1e-2", ["--min-lr", "above", "--lr"]),
    ("train.py", TINY.replace("{d}/corpus.txt", "{d}/missing.txt"), ["--corpus", "missing.txt", "does not exist"]),
    ("train.py", TINY.replace("{d}/vocab.txt", "{d}/vocab-typo.txt"), ["--vocab", "vocab-typo.txt"]),
    ("train.py", TINY.replace("{d}/corpus.txt", "{d}/empty.txt"), ["empty.txt", "no text"]),
    ("train.py", TINY.replace("{d}/corpus.txt", "{d}/blank.txt"), ["blank.txt", "whitespace"]),
    ("train.py", TINY.replace("{d}/corpus.txt", "{d}/latin1.txt"), ["latin1.txt:2", "UTF-8"]),
    ("train.py", TINY.replace("{d}/vocab.txt", "{d}/vocab_nospecial.txt"), ["vocab_nospecial.txt", "[PAD]"]),
    ("train.py", TINY.replace("{d}/vocab.txt", "{d}/vocab_dup.txt"), ["vocab_dup.txt", "duplicate", "cat"]),
    ("train.py", TINY.replace("{d}/new_run", "{d}/run"), ["holds another run", "--resume", "--overwrite"]),
    ("train.py", "--out {d}/run --resume --overwrite", ["--resume", "--overwrite"]),
    ("train.py", "--out {d}/empty_dir --resume", ["no checkpoint", "resume.npz", "without --resume"]),
    ("train.py", "--out {d}/run_other_vocab --resume --quiet", ["vocab.txt", "not the vocab this run started with"]),
    ("train.py", TINY.replace("{d}/corpus.txt", "{d}/short.txt"), ["short.txt", "8 bytes", "larger --corpus"]),
    ("tokenizer.py", "train --corpus {d}/empty.txt --out {d}/new_vocab.txt", ["empty.txt", "no text"]),
    ("tokenizer.py", "train --corpus {d}/latin1.txt --out {d}/new_vocab.txt", ["latin1.txt:2", "UTF-8"]),
    ("tokenizer.py", "train --corpus {d}/corpus.txt --vocab-size 3 --out {d}/new_vocab.txt", ["--vocab-size", "6"]),
    ("tokenizer.py", "train --corpus {d}/corpus.txt --out {d}/vocab.txt", ["vocab.txt exists", "--overwrite"]),
    ("tokenizer.py", "encode the cat --vocab {d}/vocab_nospecial.txt", ["vocab_nospecial.txt", "must start with"]),
    ("tokenizer.py", "encode the cat --vocab {d}/no_vocab.txt", ["no_vocab.txt", "tokenizer.py train"]),
    ("data.py", "prepare --corpus {d}/empty.txt --vocab {d}/vocab.txt --out {d}/new_prep", ["empty.txt", "no text"]),
    ("data.py", "prepare --corpus {d}/latin1.txt --vocab {d}/vocab.txt --out {d}/new_prep", ["latin1.txt:2"]),
    ("data.py", "prepare --corpus {d}/corpus.txt --vocab {d}/vocab_dup.txt --out {d}/new_prep", ["duplicate"]),
    ("data.py", "prepare --corpus {d}/corpus.txt --vocab {d}/vocab.txt --num-workers 0", ["--num-workers"]),
    ("data.py", "inspect {d}/bad.conllu", ["bad.conllu:3", "10 tab-separated columns"]),
    ("data.py", "inspect {d}/bad.tsv", ["bad.tsv:3", "sentence<TAB>0|1"]),
    ("data.py", "stats --bin {d}/prep/corpus.bin --vocab {d}/vocab_big.txt", ["corpus.bin", "not this vocab"]),
    ("data.py", "stats --bin {d}/prep/orphan.bin --vocab {d}/vocab.txt", ["orphan.json", "does not exist"]),
    ("data.py", "stats --bin {d}/prep/corpus.bin --vocab {d}/vocab.txt --seq-len 2", ["--seq-len", "at least 3"]),
    ("data.py", "download wikitext-3", ["invalid choice", "wikitext-3"]),
    ("evaluate.py", "--checkpoint {d}/nowhere", ["nowhere", "does not exist", "--checkpoint"]),
    ("evaluate.py", "--checkpoint {d}/notzip.npz", ["notzip.npz", "cannot load"]),
    ("evaluate.py", "--checkpoint {d}/run --vocab {d}/vocab_big.txt", ["14 tokens", "vocab_size=13", "--vocab"]),
    ("evaluate.py", "--checkpoint {d}/run --skip mlm,probes", ["--skip", "probes"]),
    ("evaluate.py", "--checkpoint {d}/run --mlm-batches 0", ["--mlm-batches", "at least 1"]),
    ("probe_pos.py", "--checkpoint {d}/run " + PROBE.replace("--train {d}/good", "--train {d}/bad"),
     ["bad.conllu:3"]),
    ("probe_pos.py", "--checkpoint {d}/run --layers 0,9 " + PROBE, ["--layers 9", "0 (embeddings) to 2"]),
    ("probe_pos.py", "--checkpoint {d}/run --layers 0,x", ["--layers", "0,x"]),
    ("probe_pos.py", "--checkpoint {d}/run --max_sentences 0", ["--max_sentences", "at least 1"]),
    ("finetune_sst2.py", "--checkpoint {d}/run " + SST2.replace("--train {d}/good", "--train {d}/bad"),
     ["bad.tsv:3"]),
    ("finetune_sst2.py", "--checkpoint {d}/run --seeds 0 " + SST2, ["--seeds", "at least 1"]),
    ("finetune_sst2.py", "--checkpoint {d}/run --dropout 1.0 " + SST2, ["--dropout", "[0, 1)"]),
    ("finetune_sst2.py", "--checkpoint {d}/run --predict {d}/latin1.txt " + SST2, ["latin1.txt:2", "UTF-8"]),
    ("finetune_sst2.py", "--checkpoint {d}/run --sweep 32-1e-4 " + SST2, ["--sweep", "batch:lr", "32-1e-4"]),
    ("finetune_sst2.py", "--checkpoint {d}/run --jobs 0 " + SST2, ["--jobs", "at least 1"]),
    ("blimp.py", "--checkpoint {d}/run --data-dir {d}/no_data", ["no BLiMP", "no_data", "python data.py download blimp"]),
    ("blimp.py", "--checkpoint {d}/run --data-dir {d}/missing_dir", ["--data-dir", "missing_dir", "does not exist"]),
    ("blimp.py", "--checkpoint {d}/run --data-dir {d}/blimp_bad", ["bad_paradigm.jsonl:2", "sentence_bad"]),
    ("blimp.py", "--checkpoint {d}/run --pairs-per-paradigm 0", ["--pairs-per-paradigm", "at least 1", "0"]),
    ("blimp.py", "--checkpoint {d}/run --random-init-pairs -3", ["--random-init-pairs", "at least 1"]),
    ("blimp.py", "--checkpoint {d}/run --threads 0", ["--threads", "at least 1"]),
    ("blimp.py", "--checkpoint {d}/nowhere --data-dir {d}/blimp_good", ["nowhere", "does not exist", "--checkpoint"]),
    ("blimp.py", "--checkpoint {d}/run --data-dir {d}/blimp_good --prior-bin {d}/prep/orphan.bin",
     ["orphan.json", "does not exist"]),
    ("export_hf.py", "{d}/run/resume.npz {d}/new_hf", ["resume.npz", "cannot load", "best.npz"]),
    ("export_hf.py", "{d}/run/best.npz {d}/new_hf --vocab {d}/vocab_big.txt", ["14 tokens", "vocab_size 13"]),
    ("export_hf.py", "{d}/run/best.npz {d}/hf", ["already holds an export", "--overwrite"]),
    ("export_hf.py", "{d}/missing.npz {d}/new_hf", ["missing.npz", "does not exist"]),
]


def snapshot(folder):
    """{relative path: (sha256, mtime in ns)} of every file under folder."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _id(case):
    script, args, _ = case
    for common in (TINY, PROBE, SST2):
        args = args.replace(common, "")
    return f"{script[:-3]} {args.replace('{d}/', '').strip()}"


def _run(d, script, args):
    """Run script with args (split on spaces, {d} filled in) in d, with no default corpus to find.
    -> (CompletedProcess, the snapshot of d taken before)"""
    argv = [a.format(d=d) for a in args.split()]
    before = snapshot(d)
    env = {**os.environ, "MINIBERT_DATA_DIR": str(d / "no_data")}
    r = subprocess.run([sys.executable, str(REPO / script), *argv], cwd=d, env=env, capture_output=True,
                       text=True, encoding="utf-8", timeout=120)
    return r, before


def _check_error(d, r, before, words):
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0, f"exit 0; stdout:\n{r.stdout}"
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), lines[0]
    for w in words:
        assert w.format(d=d) in lines[0], f"{w!r} not in {lines[0]!r}"
    assert snapshot(d) == before, "a file of an earlier run changed, appeared or disappeared"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_one_line(d, case):
    script, args, words = case
    _check_error(d, *_run(d, script, args), words)


RESUME = "--out {d}/run --resume --quiet --no-plots"
RESUME_CASES = [  # (arguments, words the error line must contain, words it must not): flags --resume would ignore
    (RESUME + " --lr 5", ["--lr 5.0 (this run: --lr 0.002)", "{d}/run/resume.npz", "another --out", "--overwrite"],
     []),
    (RESUME + " --preset larger", ["--preset larger (this run: --preset tiny)"], []),
    (RESUME + " --seed 1", ["--seed 1 (this run: --seed 0)"], []),
    (RESUME + " --corpus valid.txt", ["--corpus valid.txt (this run: --corpus {d}/corpus.txt)"], []),
    (RESUME + " --cache-dir {d}", ["--cache-dir {d} (this run: --cache-dir {d}/prep)"], []),
    (RESUME + " --warmup 3", ["--warmup 3 (this run: no --warmup)"], []),      # left unset: any value changes it
    (RESUME + " --qk-std 0.1", ["--qk-std 0.1 (this run: --qk-std 0.02 by default)"], []),
    (RESUME + " --whole-word-mask --lr 2e-3 --mask-prob 0.15 --steps 20 --eval-every 7",      # only the changes
     ["--mask-prob 0.15 (this run: --mask-prob 0.3), --whole-word-mask (this run: no --whole-word-mask)", "them"],
     ["--lr", "--steps 20", "--eval-every 7"]),
    (RESUME.replace("/run ", "/run_done ") + " --lr 5", ["--lr 5.0"], ["complete"]),    # refused before "complete"
]


@pytest.mark.parametrize("case", RESUME_CASES, ids=[c[0].replace(RESUME, "").strip() for c in RESUME_CASES])
def test_resume_refuses_flags_it_would_ignore(d, case):
    """--resume with a recipe flag that differs from the run's: one error line naming the flag and the run's
    value, before anything is read beyond the checkpoint (nothing on stdout) and before any file is touched."""
    args, words, absent = case
    r, before = _run(d, "train.py", args)
    line = _check_error(d, r, before, words)
    assert r.stdout == "", r.stdout
    for w in absent:
        assert w not in line, f"{w!r} in {line!r}"


DONE = "--out {d}/run_done --resume --quiet"
DONE_TIME = "--out {d}/run_done_time --resume --quiet"
COMPLETE_CASES = [  # (arguments, words the one line must contain)
    (DONE, ["{d}/run_done is complete", "reached step 10 (--steps 10)", "larger --steps (e.g. --steps 20)"]),
    (DONE + " --steps 5", ["reached step 10 (--steps 5)", "--steps 20"]),    # a smaller --steps does not extend
    (DONE + " --time-budget 60", ["(--steps 10)"]),              # the run's --steps still ends it
    # flags equal to the run's, spelled otherwise: a relative path, a path through '..', a float in another notation
    (DONE + " --preset tiny --lr 0.002 --mask-prob 3e-1 --seed 0 --corpus corpus.txt --vocab {d}/prep/../vocab.txt "
            "--cache-dir {d}/prep/ --qk-std 0.02 --threads 1 --eval-every 7 --save-every 3 --log-every 2 --no-plots",
     ["is complete", "(--steps 10)"]),
    (DONE_TIME, ["{d}/run_done_time is complete", "trained 1.0 minutes (--time-budget 1)",
                 "larger --time-budget (e.g. --time-budget 3)"]),
    (DONE_TIME + " --steps 50", ["(--time-budget 1)", "larger --time-budget"]),   # the run's budget still ends it
    (DONE_TIME + " --time-budget 0.5", ["(--time-budget 0.5)"]),
]


@pytest.mark.parametrize("case", COMPLETE_CASES, ids=[c[0].replace("{d}/", "") for c in COMPLETE_CASES])
def test_resume_of_a_finished_run_changes_nothing(d, case):
    """Resuming a run that reached its --steps or its --time-budget (with no larger one given): exit 0, one
    line saying it is complete and how to extend it, and no file changed (hash and mtime), added (no plot.log:
    no plot child) or removed."""
    args, words = case
    r, before = _run(d, "train.py", args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    for w in words:
        assert w.format(d=d) in lines[0], f"{w!r} not in {lines[0]!r}"
    assert snapshot(d) == before, "resuming a finished run changed, added or removed a file"


def test_cases_cover_every_script():
    scripts = {c[0] for c in CASES}
    assert scripts >= {"train.py", "tokenizer.py", "data.py", "evaluate.py", "probe_pos.py", "finetune_sst2.py",
                       "export_hf.py", "blimp.py"} and len(CASES) >= 30


def test_every_numeric_train_flag_is_checked():
    """A flag added to train.py with a number or a path must get its check in train.CHECKS."""
    import train
    p = train.build_parser()
    unchecked = [a.dest for a in p._actions if a.type in (int, float)]
    assert not unchecked, f"train.py flags without a check in train.CHECKS: {unchecked}"
