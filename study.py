"""The recipe study of the default pretraining run, and the cross-check of our training loop against PyTorch.

A recipe (batch size, learning rate, warmup, masking rate, decay) is judged by what a held-out set says after
a fixed amount of this machine's time, so every study run is `train.py` with a 10-minute budget on one core
(two run side by side on a 2-core machine, under the same load) and the same held-out set (2,048 rows of
wiki.valid masked at 15% with a fixed seed, whatever the run trains with). The schedule of each run ends
with its budget, as the default run's does.

Usage:
    python study.py list                                 # the named runs and their train.py flags
    python study.py run b32_lr5e-4 b128_lr2e-3 --jobs 2  # run some (logs in runs/study/<name>.log)
    python study.py plot runs/study/* --out figures/recipe_study.png     # held-out curves in one figure
    python study.py torch --steps 1000 --out runs/torch_vs_numpy         # ours vs the PyTorch twin
    python study.py heads runs/mini                      # where each attention head of a checkpoint looks

`torch` trains three models for the same steps on one thread each: ours and tests/torch_bert.py's
PyTorch twin from the same init, on the same batches, masks and schedule (the only difference is the
arithmetic of two float32 implementations), and ours from another seed (another init, data order and
masks: the seed noise that the gap between the first two must stay within).

Expect: `plot` writes one PNG (held-out loss and accuracy against minutes and against tokens);
`torch` ends with a line `torch vs ours: max |held-out loss gap| ... | seed noise (ours, seed 0 vs 1) ...`.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from config import ArgumentParser, at_least, fraction, positive

REPO = Path(__file__).resolve().parent
COMMON = ["--threads", "1", "--batch-size", "8", "--time-budget", "10", "--eval-batches", "64", "--no-plots", "--quiet"]

# name -> train.py flags on top of COMMON. Logical batch = 8 x accum rows of 64 tokens; evaluations every
# ~400K training tokens (eval-every = 6,400 rows / logical batch).
STUDY = {
    "b32_lr5e-4": ["--accum", "4", "--lr", "5e-4", "--warmup", "300"],                       # the old default
    "b32_lr5e-4_prior": ["--accum", "4", "--lr", "5e-4", "--warmup", "300", "--bias-init", "unigram"],
    "b128_lr2e-3_prior": ["--accum", "16", "--lr", "2e-3", "--warmup-frac", "0.1", "--beta2", "0.98",
                          "--bias-init", "unigram"],
    "b32_lr1e-3_prior": ["--accum", "4", "--lr", "1e-3", "--warmup-frac", "0.1", "--beta2", "0.98",
                         "--bias-init", "unigram"],
    "b128_lr2e-3_prior_sin": ["--accum", "16", "--lr", "2e-3", "--warmup-frac", "0.1", "--beta2", "0.98",
                              "--bias-init", "unigram", "--pos-init", "sinusoidal"],
    "b128_lr2e-3_prior_sin_mask30": ["--accum", "16", "--lr", "2e-3", "--warmup-frac", "0.1", "--beta2", "0.98",
                                     "--bias-init", "unigram", "--pos-init", "sinusoidal", "--mask-prob", "0.3"],
    "b128_lr2e-3_prior_sin_mask30_qk": ["--accum", "16", "--lr", "2e-3", "--warmup-frac", "0.1", "--beta2", "0.98",
                                        "--bias-init", "unigram", "--pos-init", "sinusoidal", "--mask-prob", "0.3",
                                        "--qk-std", "0.072"],
    "b256_lr3e-3_prior_sin": ["--accum", "32", "--lr", "3e-3", "--warmup-frac", "0.1", "--beta2", "0.98",
                              "--bias-init", "unigram", "--pos-init", "sinusoidal"],
    "b32_lr5e-4_prior_mask40": ["--accum", "4", "--lr", "5e-4", "--warmup", "300", "--bias-init", "unigram",
                                "--mask-prob", "0.4"],
}


def eval_every(flags):
    accum = int(flags[flags.index("--accum") + 1]) if "--accum" in flags else 4
    return str(max(10, 6400 // (8 * accum)))


def cmd_list(args):
    for name, flags in STUDY.items():
        print(f"{name:24s} python train.py {' '.join(COMMON + flags)} --eval-every {eval_every(flags)} "
              f"--out {args.out_dir}/{name}")


def cmd_run(args):
    """Run the named study runs, `jobs` at a time, each `python train.py ...` with its log in OUT_DIR/NAME.log."""
    names = list(STUDY) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in STUDY]
    if unknown:
        raise SystemExit(f"error: unknown study run(s) {', '.join(unknown)}; `python study.py list` shows the names.")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pending, running = list(names), []
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            flags = COMMON + STUDY[name] + ["--eval-every", eval_every(STUDY[name]), "--out", str(out / name)]
            log = open(out / f"{name}.log", "w", encoding="utf-8")
            print(f"start {name}: python train.py {' '.join(flags)}")
            running.append((name, subprocess.Popen([sys.executable, str(REPO / "train.py")] + flags,
                                                   stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(2)
        for item in list(running):
            name, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                last = (out / f"{name}.log").read_text(encoding="utf-8").strip().splitlines()[-1:]
                print(f"end {name} (exit {proc.returncode}): {last[0] if last else ''}")


def read_heldout(run_dir):
    """The held-out records of a run's metrics.jsonl: (minutes, tokens, loss, acc) arrays."""
    from metrics import read_metrics
    recs = read_metrics(Path(run_dir) / "metrics.jsonl")
    val = [r for r in recs if "val_loss" in r]
    tok = {r["step"]: r.get("tokens") for r in recs if "tokens" in r}
    mins = {r["step"]: r.get("elapsed_s", 0.0) / 60 for r in recs if "elapsed_s" in r}
    last_tok = max(tok.values()) if tok else 0
    return (np.array([mins.get(r["step"], max(mins.values(), default=0.0)) for r in val]),
            np.array([tok.get(r["step"], last_tok) for r in val]) / 1e6,
            np.array([r["val_loss"] for r in val]), np.array([r["val_acc"] for r in val]))


def cmd_plot(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [Path(d) for d in args.runs if (Path(d) / "metrics.jsonl").is_file()]
    if not runs:
        raise SystemExit("error: none of the given folders has a metrics.jsonl; give train.py --out folders.")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    rows = []
    for i, d in enumerate(sorted(runs)):
        mins, toks, loss, acc = read_heldout(d)
        if not len(loss):
            continue
        style = dict(marker=".", lw=1.2, color=f"C{i % 10}", ls="-" if i < 10 else "--", label=d.name)
        axes[0].plot(mins, loss, **style)
        axes[1].plot(toks, loss, **style)
        axes[2].plot(mins, acc, **style)
        rows.append((float(loss[-1]), d.name, float(acc[-1]), float(mins[-1]), float(toks[-1])))
    axes[0].set(xlabel="minutes of training", ylabel="held-out MLM loss (nats)", title="loss vs time")
    axes[1].set(xlabel="training tokens (M)", ylabel="held-out MLM loss (nats)", title="loss vs tokens")
    axes[2].set(xlabel="minutes of training", ylabel="held-out MLM accuracy", title="accuracy vs time")
    for a in axes:
        a.grid(alpha=0.3)
    lo = min(r[0] for r in rows)
    for a in axes[:2]:
        a.set_ylim(lo - 0.1, 7.2)
    for a in axes:                                                   # 10-minute runs beside a 90-minute one
        a.set_xscale("log")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"{'run':24s} | final held-out loss | accuracy | minutes | tokens")
    for loss, name, acc, mins, toks in sorted(rows):
        print(f"{name:24s} | {loss:.4f} | {acc:.4f} | {mins:.1f} | {toks:.1f}M")
    print(f"wrote {args.out}")


def cmd_torch(args):
    """Ours and the PyTorch twin from the same init on the same batches, masks and schedule; ours from seed 1."""
    try:
        import torch
    except ImportError:
        raise SystemExit("error: `study.py torch` needs PyTorch: pip install torch==2.13.0 (CPU is enough).")
    sys.path.insert(0, str(REPO / "tests"))
    import data
    import mlm
    import torch_bert
    import train
    from config import get_config
    from model import MiniBERT
    from optimizer import AdamW, lr_at
    from tqdm import tqdm
    from workers import Workers
    torch.set_num_threads(1)
    tok, tokens, valid, _ = data.load_corpus(cache_dir=args.cache_dir, seq_len=get_config("mini").max_position_embeddings)
    config = get_config("mini", vocab_size=tok.vocab_size)
    T, B, V = config.max_position_embeddings, args.batch_size, tok.vocab_size
    specials = list(tok.special_ids)
    eval_set = train.heldout_set(valid, T, tok, 64)                 # train.py's held-out set
    workers = Workers(1, 1)
    runs = {}
    for name, seed in (("ours", 0), ("torch", 0), ("ours_seed1", 1)):
        model = MiniBERT(config, seed=seed)
        train.init_recipe(model, args, tokens, specials)            # the recipe's init, before torch copies it
        run = {"model": model, "batches": data.PackedBatches(tokens, T, B, seed=seed),
               "rng": np.random.default_rng(seed), "log": []}
        if name == "torch":
            run["tm"] = torch_bert.make_torch_model(config, model.params)
            run["opt"] = torch_bert.make_optimizer(run["tm"], lr=args.lr, weight_decay=0.01, betas=(0.9, args.beta2))
        else:
            run["opt"] = AdamW(model.params, lr=args.lr, betas=(0.9, args.beta2), eps=1e-6, weight_decay=0.01)
        runs[name] = run
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warmup = max(1, int(args.warmup_frac * args.steps))
    for step in tqdm(range(args.steps + 1), desc="ours | torch | ours seed 1", unit="step"):
        if step % args.eval_every == 0 or step == args.steps:
            for name, run in runs.items():
                model = run["model"]
                if name == "torch":                                  # the torch weights, evaluated by our code
                    model.params = {k.replace("__", "."): v.detach().numpy().copy() for k, v in run["tm"].p.items()}
                ev = train.evaluate_mlm(model, eval_set, workers)
                run["log"].append({"step": step, "tokens": step * B * T, **ev})
            tqdm.write(f"step {step:5d} | held-out loss " + " | ".join(
                f"{n} {r['log'][-1]['val_loss']:.4f}" for n, r in runs.items()))
        if step == args.steps:
            break
        lr = lr_at(step, args.lr, warmup, args.steps, "linear")
        for name, run in runs.items():
            ids = run["batches"].next_batch()
            input_ids, labels = mlm.mask_tokens(ids, run["rng"], V, specials, args.mask_prob, mask_id=tok.mask_id)
            if name == "torch":
                for g in run["opt"].param_groups:
                    g["lr"] = lr
                mask = labels != mlm.IGNORE_INDEX
                torch_bert.train_step(run["tm"], run["opt"], input_ids, labels[mask], mlm_mask=mask,
                                      max_grad_norm=args.clip)
            else:
                m = args.micro_batch                                # accumulation, as train.py does it
                micro = [[(input_ids[i:i + m], labels[i:i + m], 0)] for i in range(0, B, m)]
                train.train_step(run["model"], run["opt"], micro, lr, args.clip, workers)
    for name, run in runs.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run["log"]), encoding="utf-8")
    curves = {n: np.array([r["val_loss"] for r in run["log"]]) for n, run in runs.items()}
    steps = [r["step"] for r in runs["ours"]["log"]]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for n, c in curves.items():
        a1.plot(steps, c, ".-", label=n)
    a1.set(xlabel="step", ylabel="held-out MLM loss (nats)", title=f"ours vs PyTorch, B={B}, lr {args.lr:g}")
    a1.legend()
    a2.plot(steps, curves["torch"] - curves["ours"], ".-", label="torch - ours (same seed)")
    a2.plot(steps, curves["ours_seed1"] - curves["ours"], ".-", label="ours seed 1 - ours seed 0")
    a2.axhline(0, color="k", lw=0.5)
    a2.set(xlabel="step", ylabel="held-out loss difference", title="implementation gap vs seed noise")
    a2.legend()
    fig.tight_layout()
    fig.savefig(out / "torch_vs_numpy.png", dpi=90)
    gap = float(np.abs(curves["torch"] - curves["ours"])[1:].max())
    noise = float(np.abs(curves["ours_seed1"] - curves["ours"])[1:].max())
    print(f"wrote {out / 'torch_vs_numpy.png'}")
    print(f"torch vs ours: max |held-out loss gap| {gap:.4f} over {args.steps} steps (final {curves['ours'][-1]:.4f} "
          f"vs {curves['torch'][-1]:.4f}) | seed noise (ours, seed 0 vs 1) max {noise:.4f}")


def cmd_heads(args):
    """Where each head of a trained checkpoint looks, on 32 held-out rows: its mean attention entropy, and
    the share of its weight on [CLS] + [SEP], on the previous token, on itself and on the next token."""
    import data
    from checkpoint import find_checkpoint
    from model import MiniBERT
    model = MiniBERT.load(find_checkpoint(args.checkpoint))
    T = model.config.max_position_embeddings
    valid, _ = data.load_tokens(Path(args.cache_dir or REPO / "data") / "wiki.valid.bin")
    ids = data.heldout_batches(valid, T, 32, 1)[0]                  # (32, T), the first held-out batch
    _, cache = model.encode(ids)
    from metrics import attention_entropy
    ents = attention_entropy(cache["attn_probs"])                   # (L, A)
    t = np.arange(T)
    print("layer head | entropy (nats) | [CLS]+[SEP] | previous | self | next")
    for layer, p in enumerate(cache["attn_probs"]):                 # (B, A, T, T)
        for a in range(p.shape[1]):
            pa = p[:, a]                                            # (B, T, T): row = query, column = key
            ent = ents[layer, a]
            print(f"{layer:5d} {a:4d} | {ent:14.2f} | {pa[:, :, 0].mean() + pa[:, :, T - 1].mean():11.2f} | "
                  f"{pa[:, t[1:], t[1:] - 1].mean():8.2f} | {pa[:, t, t].mean():4.2f} | {pa[:, t[:-1], t[:-1] + 1].mean():4.2f}")


def main(argv=None):
    p = ArgumentParser(description="Recipe study runs, their curves in one plot, and ours vs PyTorch.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("list", help="the named study runs")
    s.add_argument("--out-dir", default="runs/study")
    s = sub.add_parser("run", help="run named study runs (or `all`)")
    s.add_argument("names", nargs="+")
    s.add_argument("--jobs", type=at_least(1), default=2, help="runs at a time (one core each)")
    s.add_argument("--out-dir", default="runs/study")
    s = sub.add_parser("plot", help="held-out curves of several runs in one PNG")
    s.add_argument("runs", nargs="+", help="train.py --out folders")
    s.add_argument("--out", default="figures/recipe_study.png")
    s = sub.add_parser("heads", help="where each attention head of a checkpoint looks (previous / next token, ...)")
    s.add_argument("checkpoint", help="run folder or .npz")
    s.add_argument("--cache-dir", default=None, help="where wiki.valid.bin is (default data/)")
    s = sub.add_parser("torch", help="ours vs the PyTorch twin, same init, batches, masks and schedule")
    s.add_argument("--steps", type=at_least(1), default=1000)
    s.add_argument("--batch-size", type=at_least(1), default=128, help="logical batch (rows)")
    s.add_argument("--micro-batch", type=at_least(1), default=32, help="ours: rows per accumulated micro-batch")
    s.add_argument("--lr", type=positive, default=5e-4)
    s.add_argument("--warmup-frac", type=fraction(), default=0.1)
    s.add_argument("--beta2", type=fraction(), default=0.999)
    s.add_argument("--mask-prob", type=fraction(low_open=True), default=0.15)
    s.add_argument("--clip", type=at_least(0.0, float), default=1.0)
    s.add_argument("--bias-init", default="zero", choices=["unigram", "zero"])
    s.add_argument("--pos-init", default="normal", choices=["normal", "sinusoidal"])
    s.add_argument("--qk-std", type=positive, default=None)
    s.add_argument("--eval-every", type=at_least(1), default=100)
    s.add_argument("--cache-dir", default=None, help="where the vocab and token files are (default data/)")
    s.add_argument("--out", default="runs/torch_vs_numpy")
    args = p.parse_args(argv)
    {"list": cmd_list, "run": cmd_run, "plot": cmd_plot, "torch": cmd_torch, "heads": cmd_heads}[args.cmd](args)


if __name__ == "__main__":
    main()
