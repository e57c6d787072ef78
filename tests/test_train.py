"""train.py: exact resume, checkpoints that survive SIGKILL, and 10 training steps against PyTorch autograd.
Fixtures (a 13-token vocab and a small corpus of its words, for the `tiny` preset) are written to tmp_path."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import benchmark
import checkpoint
import train
from model import MiniBERT
from workers import Workers

REPO = Path(__file__).resolve().parent.parent
WORDS = "the cat sat on mat dog ran far".split()          # 5 specials + 8 words = V 13, as in `tiny`


def _corpus(n_docs, seed):
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        paras = [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 15)))) for _ in range(int(rng.integers(1, 4)))]
        docs.append("\n".join(paras))
    return "\n\n".join(docs) + "\n"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_data")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n",
                                 encoding="utf-8")
    (d / "train.txt").write_text(_corpus(60, 1), encoding="utf-8")
    (d / "valid.txt").write_text(_corpus(20, 2), encoding="utf-8")
    return d


def _args(d, out, *extra):
    return ["--preset", "tiny", "--corpus", str(d / "train.txt"), "--valid", str(d / "valid.txt"),
            "--vocab", str(d / "vocab.txt"), "--cache-dir", str(d / "cache"), "--out", str(out),
            "--steps", "12", "--batch-size", "4", "--accum", "2", "--threads", "2", "--warmup", "3", "--lr", "1e-2",
            "--dropout", "0.1", "--eval-every", "5", "--log-every", "1", "--eval-batches", "2", "--quiet", "--no-plots", *extra]


def _losses(out):
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}


def test_resume_is_exact(tiny_data, tmp_path):
    """A run stopped at step 5 and resumed has the same loss at every step (bit for bit) and the same
    final weights as an uninterrupted run (dropout on, 2 worker threads, so RNG and data position matter)."""
    a, b = tmp_path / "a", tmp_path / "b"
    train.main(_args(tiny_data, a))
    train.main(_args(tiny_data, b, "--stop-at", "5"))
    assert max(_losses(b)) == 5
    train.main(["--out", str(b), "--resume", "--quiet", "--threads", "2"])
    la, lb = _losses(a), _losses(b)
    assert sorted(la) == sorted(lb) == list(range(1, 13))
    for step in la:
        assert la[step] == lb[step], f"step {step}: {la[step]!r} != {lb[step]!r}"
    ma, mb = MiniBERT.load(a / "last.npz"), MiniBERT.load(b / "last.npz")
    for k in ma.params:
        np.testing.assert_array_equal(ma.params[k], mb.params[k])
    train.main(["--plot", str(b)])                  # the PNGs, from the resumed run's metrics.jsonl
    for name in ("loss.png", "heldout.png", "lr.png", "grad_norm.png"):
        assert (b / name).stat().st_size > 1000


def test_resume_extends_a_finished_run_only_with_a_larger_steps(tiny_data, tmp_path, capsys):
    """A run at its --steps: --resume (with the same or a smaller --steps) prints that it is complete and
    changes no file (hash and mtime); --resume --steps 9 trains steps 7-9 and appends them to metrics.jsonl."""
    out = tmp_path / "x"
    args = _args(tiny_data, out)
    args[args.index("--steps") + 1] = "6"
    train.main(args)
    files = sorted(p for p in out.iterdir() if p.is_file())
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    capsys.readouterr()
    for extra in ([], ["--steps", "6"], ["--steps", "4", "--lr", "0.01", "--threads", "1"]):
        train.main(["--out", str(out), "--resume", "--quiet", *extra])
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{out} is complete") and "--steps 12" in lines[0], lines
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.iterdir()) if p.is_file()} == before
    train.main(["--out", str(out), "--resume", "--quiet", "--steps", "9"])
    assert sorted(_losses(out)) == list(range(1, 10))
    assert checkpoint.load_resume(out / "resume.npz")[2]["step"] == 9


_WRITER = r"""
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[2])
from checkpoint import save_checkpoint
from config import get_config
from model import MiniBERT
from optimizer import AdamW
out = Path(sys.argv[1])
model = MiniBERT(get_config("mini"), seed=0)
opt = AdamW(model.params, lr=1e-3)
for step in range(10 ** 6):
    model.params["mlm.bias"][:] = step              # a marker: the file's step and its contents must agree
    opt.t = step
    print("writing", step, flush=True)
    save_checkpoint(out, model, opt, {"step": step}, best=True)
    print("saved", step, flush=True)
"""


def test_sigkill_during_checkpoint_write_keeps_previous(tmp_path):
    """Kill -9 a process in the middle of writing checkpoints (mini-sized, ~50 MB each): every file left
    behind is complete and self-consistent (old or new, never half-written)."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER, encoding="utf-8")
    torn = 0                                        # kills that left a half-written temp file behind
    for delay in (0.06, 0.12, 0.18):
        out = tmp_path / f"run{delay}"
        out.mkdir()
        proc = subprocess.Popen([sys.executable, str(script), str(out), str(REPO)], stdout=subprocess.PIPE,
                                text=True, encoding="utf-8")
        saved = -1
        while True:                                 # wait for one complete checkpoint and the next write to start
            line = proc.stdout.readline()
            assert line, "writer exited early"
            kind, step = line.split()
            if kind == "saved":
                saved = int(step)
            if kind == "writing" and saved >= 1:
                break
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        torn += any(".tmp-" in p.name for p in out.iterdir())
        model, opt_state, state = checkpoint.load_resume(out / "resume.npz")
        assert state["step"] >= saved and opt_state["t"] == state["step"]
        assert np.all(model.params["mlm.bias"] == state["step"])
        for name in ("last.npz", "best.npz"):
            m = MiniBERT.load(out / name)
            assert np.all(m.params["mlm.bias"] == m.params["mlm.bias"][0]) and m.params["mlm.bias"][0] >= saved
    assert torn >= 1, "no kill landed inside a write; the test did not test anything"


def test_nan_stops_with_clear_message(tiny_data, tmp_path, capsys):
    out = tmp_path / "nan"
    with pytest.raises(SystemExit) as e:
        train.main(_args(tiny_data, out, "--lr", "1e30", "--clip", "0"))
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "--lr" in err and "Traceback" not in err


def test_user_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.txt" in err[0]


def test_ten_steps_match_torch_autograd_float64():
    """10 full steps of `tiny` (masking, forward, backward over 2 thread shards, clip, AdamW with warmup)
    give the loss trajectory of the PyTorch autograd reference (tests/torch_bert.py) to <= 1e-9, float64."""
    torch = pytest.importorskip("torch")
    import torch_bert
    from config import get_config
    from optimizer import AdamW, lr_at
    config = get_config("tiny")
    model = MiniBERT(config, seed=0)
    model.params = {k: v.astype(np.float64) for k, v in model.params.items()}
    tm = torch_bert.make_torch_model(config, model.params, dtype=torch.float64)
    topt = torch_bert.make_optimizer(tm, lr=1e-2, weight_decay=0.01)
    opt = AdamW(model.params, lr=1e-2, weight_decay=0.01)
    workers = Workers(2)
    rng = np.random.default_rng(0)
    tok_info = {"vocab_size": 13, "special_ids": [0, 1, 2, 3, 4], "mask_id": 4, "is_continuation": None}

    class A:                                        # the masking flags train_step reads
        whole_word_mask, mask_prob = False, 0.3
    ours, theirs = [], []
    try:
        for step in range(10):
            ids = rng.integers(5, 13, size=(6, 8))
            ids[:, 0], ids[:, -1] = 2, 3
            micro = [train.make_micro_batch(ids, rng, tok_info, A, workers.n)]
            lr = lr_at(step, 1e-2, warmup=3, total=10, schedule="linear")
            ours.append(train.train_step(model, opt, micro, lr, 1.0, workers)["loss"])
            input_ids = np.concatenate([s[0] for s in micro[0]])
            labels = np.concatenate([s[1] for s in micro[0]])
            mask = labels != -100
            for g in topt.param_groups:
                g["lr"] = lr
            theirs.append(torch_bert.train_step(tm, topt, input_ids, labels[mask], mlm_mask=mask, max_grad_norm=1.0))
    finally:
        workers.close()
    ours, theirs = np.array(ours), np.array(theirs)
    assert np.max(np.abs(ours - theirs) / np.abs(theirs)) <= 1e-9, (ours, theirs)
    assert ours[-1] < ours[0]                       # it learns
    # the weights agree too (AdamW divides by sqrt(v), so relative error grows where v is tiny)
    for k, v in model.params.items():
        np.testing.assert_allclose(v, tm.w(k).detach().numpy(), rtol=1e-7, atol=1e-10)


def test_time_budget_ends_the_schedule(tiny_data, tmp_path):
    """--time-budget: the run stops on time and the LR schedule's length is estimated so that the decay
    ends with the budget (the last logged lr is far below the peak)."""
    out = tmp_path / "tb"
    args = [a for a in _args(tiny_data, out, "--time-budget", "0.05", "--eval-every", "100000")
            if a not in ("--steps", "12")]
    t0 = time.time()
    train.main(args)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    lrs = [r["lr"] for r in recs if "lr" in r]
    assert time.time() - t0 < 60 and len(lrs) >= 5             # few steps when the machine is busy
    assert max(lrs) == pytest.approx(1e-2, rel=0.2) and lrs[-1] < 0.5 * max(lrs)


def test_benchmark_json(capsys):
    flags = ["--preset", "tiny", "--batch-size", "4", "--bench-steps", "2", "--no-torch"]
    res = benchmark.main(flags)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == res
    for key in ("ms_per_step", "forward_ms", "backward_ms", "optimizer_ms", "tokens_per_s", "peak_rss_mb"):
        assert res[key] > 0
    alias = subprocess.run([sys.executable, str(REPO / "train.py"), "--benchmark", *flags], capture_output=True,
                           text=True, encoding="utf-8", check=True)              # the old spelling still works
    assert json.loads(alias.stdout.strip().splitlines()[-1]).keys() == res.keys()


def test_benchmark_several_sizes(capsys):
    """One command, several logical batches: above 32 rows, accumulated default (32-row) micro-batches."""
    res = benchmark.main(["--preset", "tiny", "--batch-size", "2", "64", "--threads", "2", "--bench-steps", "1",
                          "--no-torch"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == {"benchmark": res}
    assert [(r["logical_batch"], r["batch_size"], r["accum"]) for r in res] == [(2, 2, 1), (64, 32, 2)]
    assert all(r["ms_per_step"] > 0 and r["floor_ms"] > 0 and r["peak_rss_mb"] > 0 for r in res)


def test_benchmark_refuses_a_batch_not_made_of_micro_batches(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--preset", "tiny", "--batch-size", "8", "40", "--no-torch"])
    assert "multiple of the 32-row micro-batch" in capsys.readouterr().err


def test_resume_refuses_a_changed_vocab(tiny_data, tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text((tiny_data / "vocab.txt").read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "v"
    args = _args(tiny_data, out, "--stop-at", "3")
    args[args.index("--vocab") + 1] = str(vocab)
    args[args.index("--cache-dir") + 1] = str(tmp_path / "cache")
    train.main(args)
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["vocab_file"] == str(vocab.resolve())
    lines = vocab.read_text(encoding="utf-8").splitlines()
    lines[5], lines[6] = lines[6], lines[5]                     # same size, different ids
    vocab.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        train.main(["--out", str(out), "--resume", "--quiet"])
    assert "not the vocab this run started with" in capsys.readouterr().err


def test_blas_override_note(monkeypatch):
    """train.py's note names the forcing variable and how to unset it, only when the forced kernel is slower
    than this CPU's (AVX-512 CPU, a non-AVX-512 kernel), and says nothing otherwise."""
    import workers
    cases = [("Haswell", True, "OpenBLAS Haswell", True), (None, True, "OpenBLAS SkylakeX", False),
             ("SkylakeX", True, "OpenBLAS SkylakeX", False), ("Haswell", False, "OpenBLAS Haswell", False),
             ("Haswell", True, "not OpenBLAS (NumPy was built with another BLAS)", False)]
    for forced, avx512, kernel, says in cases:
        if forced is None:
            monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
        else:
            monkeypatch.setenv("OPENBLAS_CORETYPE", forced)
        monkeypatch.setattr(workers, "cpu_has_avx512", lambda: avx512)
        monkeypatch.setattr(workers, "blas_kernel", lambda: kernel)
        note = workers.blas_override_note()
        assert (note is not None) == says, (forced, avx512, kernel, note)
        if says:
            assert "OPENBLAS_CORETYPE=Haswell" in note and "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE" in note


def test_blas_kernel_is_named():
    """The kernel comes from OpenBLAS itself (NumPy wheels bundle it): 'OpenBLAS <core name>'."""
    import workers
    k = workers.blas_kernel()
    assert k.startswith("OpenBLAS ") and len(k.split()) == 2 or k.startswith("not OpenBLAS"), k
