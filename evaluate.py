"""What did pretraining teach the model? Every figure next to the control that gives it meaning, in one report.

    1. held-out MLM accuracy and perplexity (fixed masking seed), vs a random-init model and a unigram guess
    2. the POS probe by layer (probe_pos.py): trained, random init, control task, selectivity, word baselines
    3. SST-2 (finetune_sst2.py): from the checkpoint and from random init, and the bag-of-words floor
    4. attention heatmaps for a few sentences
    5. gradient flow and representation metrics (metrics.py), trained vs random init
    6. overfitting one batch: the loss of a single batch must go to ~0 (the whole pipeline can learn)
    7. BLiMP minimal pairs (blimp.py): pseudo-log-likelihood accuracy per field, vs random init and the unigram prior
Writes DIR/report.md (figures, baselines, plots, the command of each) and its files under DIR/eval/.

Usage:
    python evaluate.py --checkpoint runs/mini            # full: ~38 minutes for mini on 2 quiet cores
    python evaluate.py --checkpoint runs/mini --quick    # subsets: ~1 minute
    python evaluate.py --checkpoint runs/mini --overfit_one_batch     # only the overfitting check (~15 s)

Full = 80 held-out MLM batches of 32 x T; the probe on all of EWT (12,544 train sentences, 4 layers x 3
probes); SST-2 with finetune_sst2.py's default recipe (all 67,349 train phrases, batch 128, lr 1e-3, at most
2 epochs, the best kept) x 3 seeds, from the checkpoint and from random init: 6 runs in 2 worker processes;
BLiMP on all 67 x 1,000 pairs, the model and the random-init control (`python data.py download blimp` first,
or --skip blimp). Quick = 5 MLM batches; probe on 1,000 sentences; SST-2 on 2,000 phrases x 1 seed per init;
BLiMP on 50 pairs per paradigm.
Measured (mini, one BLAS thread, CPU time on 2 shared cores): MLM, probe, overfit and plots about 110 s;
one SST-2 run about 250-300 s, so on 2 quiet cores SST-2 takes 3 rounds of 2 parallel runs, 13-15 minutes,
BLiMP 1.77M masked copies per model at 0.7 ms of CPU each: about 21 CPU-minutes per model, about 22 minutes for
both on 2 quiet cores (estimated from CPU time); the whole evaluation about 38 minutes. Quick: about 2 minutes.

Expect: the last line names the report and repeats the key figures (MLM accuracy, best probe layer, SST-2,
BLiMP).
"""
# B batch, T sequence, H hidden, A heads, L layers, V vocab
import argparse
import json
import os
import sys
import time

import numpy as np

from checkpoint import load_checkpoint, random_init_like
from config import ArgumentParser, UserError, at_least, cli, existing_file
from download import dataset_path

SENTENCES = ["The quick brown fox jumps over the lazy dog because it was bored.",
             "She said that the results of the experiment were surprising.",
             "In 1905, Einstein published four papers that changed physics."]


def now():
    """(wall seconds, CPU seconds of this process and of its finished worker processes). CPU time is what a
    part costs when other programs share the cores: wall time then stretches, CPU time does not (BLAS
    threads add to it, though)."""
    t = os.times()
    return time.perf_counter(), time.process_time() + t.children_user + t.children_system


def since(t0):
    w, c = now()
    return w - t0[0], c - t0[1]


PARTS = ("mlm", "probe", "sst2", "attention", "repr", "overfit", "blimp")


def parts(text):
    """argparse type for --skip: a comma-separated subset of PARTS."""
    got = set(text.split(",")) - {""}
    if not got <= set(PARTS):
        raise argparse.ArgumentTypeError(f"unknown part(s) {','.join(sorted(got - set(PARTS)))}; choose from "
                                         f"{','.join(PARTS)}")
    return got


# ---- 1. held-out MLM ----

def mlm_eval(model, tok, batches, seed=1234):
    """Masked accuracy and perplexity on fixed batches with a fixed masking seed (the same masks for every
    model). Also the unigram guess fitted on these labels: always predict the most frequent token."""
    from tqdm import tqdm
    from metrics import masked_accuracy, masked_cross_entropy, perplexity
    from mlm import mask_tokens
    rng = np.random.default_rng(seed)
    n, correct, ce, labels_all = 0, 0.0, 0.0, []
    for ids in tqdm(batches, desc="held-out MLM", leave=False):
        inp, labels = mask_tokens(ids, rng, model.config.vocab_size, tok.special_ids)
        mlm_mask = labels != -100
        logits, _ = model.forward(inp, mlm_mask=mlm_mask)              # (N, V)
        y = labels[mlm_mask]
        k = len(y)
        correct += masked_accuracy(logits, y) * k
        ce += masked_cross_entropy(logits, y) * k
        n += k
        labels_all.append(y)
    y = np.concatenate(labels_all)
    counts = np.bincount(y, minlength=model.config.vocab_size)
    p = counts / counts.sum()
    return {"masked_tokens": int(n), "accuracy": correct / n, "loss": ce / n, "perplexity": perplexity(ce / n),
            "unigram_accuracy": float(p.max()), "unigram_perplexity": perplexity(float(-np.log(p[y]).mean()))}


# ---- 5. gradient flow and representations ----

def representation_metrics(model, batch, attention_mask=None, max_tokens=2000, seed=0):
    """Per layer: token diversity, effective rank (centred) of the representations, CKA between layers;
    attention entropy per (layer, head)."""
    from metrics import attention_entropy, effective_rank, layer_cka, token_diversity
    _, cache = model.encode(batch, attention_mask=attention_mask)
    hs = cache["hidden_states"]
    H = hs[0].shape[-1]
    pick = np.random.default_rng(seed).permutation(hs[0].shape[0] * hs[0].shape[1])[:max_tokens]
    reps = [h.reshape(-1, H)[pick] for h in hs]
    return {"n_tokens": len(pick), "token_diversity": [token_diversity(r) for r in reps],
            "effective_rank": [effective_rank(r, center=True) for r in reps],
            "cka": layer_cka([r[None] for r in reps]).tolist(),
            "attention_entropy": attention_entropy(cache["attn_probs"], attention_mask).tolist()}


def weight_ranks(params):
    from metrics import effective_rank
    return {k: effective_rank(v) for k, v in params.items() if v.ndim == 2 and k != "emb.pos"}


def gradient_flow(model, tok, batch, seed=0):
    """Per-group gradient norms of the MLM loss on one batch (no dropout, fixed mask)."""
    from gradients import backward
    from metrics import grad_norms
    from mlm import mask_tokens, mlm_loss
    inp, labels = mask_tokens(batch, np.random.default_rng(seed), model.config.vocab_size, tok.special_ids)
    mlm_mask = labels != -100
    logits, cache = model.forward(inp, mlm_mask=mlm_mask)
    loss, dlogits = mlm_loss(logits, labels[mlm_mask])
    total, groups = grad_norms(backward(model, cache, dlogits))
    return {"loss": loss, "global": total, "groups": groups}


# ---- 6. overfit one batch ----

def overfit_one_batch(model, tok, batch, steps=150, lr=1e-3, seed=0, log_every=10):
    """Train on ONE fixed masked batch (no dropout, no decay) and return the loss curve; it must reach ~0."""
    from gradients import backward
    from mlm import mask_tokens, mlm_loss
    from optimizer import AdamW
    inp, labels = mask_tokens(batch, np.random.default_rng(seed), model.config.vocab_size, tok.special_ids)
    mlm_mask = labels != -100
    opt = AdamW(model.params, lr=lr, weight_decay=0.0)
    curve = []
    for step in range(steps + 1):
        logits, cache = model.forward(inp, mlm_mask=mlm_mask)
        loss, dlogits = mlm_loss(logits, labels[mlm_mask])
        curve.append(loss)
        if step % log_every == 0:
            print(f"step {step:4d} | loss {loss:.4f}")
        if step < steps:
            opt.step(backward(model, cache, dlogits))
    return curve


# ---- report ----

def train_command(run_dir):
    """The train.py command that wrote run_dir, rebuilt from the args saved in its resume.npz (flags whose
    value differs from train.py's default). None when that cannot be read."""
    try:
        import train
        with np.load(run_dir / "resume.npz", allow_pickle=False) as f:
            args = json.loads(str(f["__state__"]))["args"]
        defaults = vars(train.build_parser().parse_args([]))
    except Exception:                                      # an old or foreign run folder: say nothing
        return None
    parts = ["python train.py"]
    for k, v in args.items():
        if k in defaults and v is not None and v is not False and v != defaults[k]:
            parts.append("--" + k.replace("_", "-") + ("" if v is True else f" {v}"))
    return " ".join(parts)


def read_train_log(path):
    """Last logged step of train.py's metrics.jsonl, plus its last held-out eval (val_*); None if absent."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    steps = [r for r in rows if "loss" in r]                       # train.py's last row is a held-out eval only
    if not steps:
        return None
    out = dict(steps[-1])
    evals = [r for r in rows if "val_loss" in r]
    if evals:
        out.update({k: evals[-1][k] for k in ("val_loss", "val_acc", "val_ppl")}, val_step=evals[-1]["step"])
    out.setdefault("tokens", 0); out.setdefault("elapsed_s", 0.0)
    return out


def fmt_list(xs, f="{:.3f}", sep=" | "):
    return sep.join(f.format(x) for x in xs)


def write_report(path, ctx):
    """ctx holds every result; sections appear for the parts that ran."""
    r, cmd = ctx["results"], ctx["commands"]
    lines = [f"# Mini-BERT evaluation: `{ctx['checkpoint']}`", "",
             f"Vocab `{ctx['vocab']}`; config: {ctx['config']}.",
             f"Mode: {'quick (subsets)' if ctx['quick'] else 'full'}; generated {time.strftime('%Y-%m-%d %H:%M')}; "
             f"total wall time {ctx['total_s']:.0f} s.", "", f"Command: `{cmd['evaluate']}`", ""]
    if ctx.get("train_log"):
        tl = ctx["train_log"]
        lines += ["## 0. The pretraining run (from its metrics.jsonl)", "",
                  f"{tl['step']} steps, {tl['tokens']:,} tokens, {tl['elapsed_s'] / 60:.1f} minutes; last train loss "
                  f"{tl['loss']:.4f}." + (f" Last held-out eval (step {tl['val_step']}): loss {tl['val_loss']:.4f}, "
                  f"accuracy {tl['val_acc']:.4f}, perplexity {tl['val_ppl']:.1f}." if "val_step" in tl else ""), ""]
        lines += [f"![{f}]({f})" for f in ("loss.png", "heldout.png", "grad_norm.png", "lr.png")
                  if (ctx["run_dir"] / f).is_file()]
        cmd_train = train_command(ctx["run_dir"])
        lines += ["", f"Command: `{cmd_train}`" if cmd_train else "Command: the `python train.py` run that wrote "
                  "this folder.", ""]
    if "mlm" in r:
        m, mr = r["mlm"], r["mlm_random"]
        lines += ["## 1. Held-out masked-token prediction", "",
                  f"{m['masked_tokens']} masked tokens from `{ctx['valid']}` ({ctx['mlm_batches']} batches of 32 x T, "
                  "masking seed 1234, 80/10/10).", "",
                  "| model | accuracy | loss | perplexity |", "|---|---|---|---|",
                  f"| this checkpoint | {m['accuracy']:.4f} | {m['loss']:.4f} | {m['perplexity']:.1f} |",
                  f"| random init (same config) | {mr['accuracy']:.4f} | {mr['loss']:.4f} | {mr['perplexity']:.1f} |",
                  f"| unigram guess (most frequent token; fitted on these labels) | {m['unigram_accuracy']:.4f} | - | "
                  f"{m['unigram_perplexity']:.1f} |", "", f"Command: `{cmd['evaluate']}`", ""]
    if "probe" in r:
        p = r["probe"]
        lines += ["## 2. POS probe by layer (UD English-EWT)", "",
                  f"{p['field'].upper()}, linear softmax probe on frozen features ({p['pooling']} piece), early "
                  f"stopping on dev. Sentences: {p['sentences']}; words scored {p['words_scored']} of {p['words']}.", "",
                  "| layer | trained dev | trained test | random-init test | control test | selectivity test |",
                  "|---|---|---|---|---|---|"]
        for j, l in enumerate(p["layers"]):
            lines.append(f"| {l} | {p['trained']['dev'][j]:.4f} | {p['trained']['test'][j]:.4f} | "
                         f"{p['random_init']['test'][j]:.4f} | {p['control']['test'][j]:.4f} | "
                         f"{p['selectivity']['test'][j]:.4f} |")
        b = p["baselines"]
        lines += ["", f"Baselines (test): majority tag {b['majority']['test']:.4f}; most frequent tag per word "
                  f"{b['most_frequent_tag_per_word']['test']:.4f}. Best layer (dev): {p['best_layer']}.", "",
                  f"![probe by layer](eval/probe_by_layer.png)", "", f"Command: `{cmd['probe']}`", ""]
    if "sst2_pretrained" in r:
        sp, sr = r["sst2_pretrained"], r["sst2_random"]
        lines += ["## 3. SST-2 sentiment (dev accuracy)", "",
                  f"Fine-tuned end to end on {sp['train_used']} of {sp['train_total']} train phrases, "
                  f"at most {sp['epochs']} epoch(s), lr {sp['lr']}, batch {sp['batch_size']}, dropout {sp['dropout']}; "
                  f"the best epoch on dev is kept (per seed: {', '.join(str(x['best_epoch']) for x in sp['runs'])}); "
                  f"random init the same. "
                  f"Truncated to T: {sp['truncated_train']} train, {sp['truncated_dev']} dev. "
                  f"{np.mean([x['ms_per_step'] for x in sp['runs']]):.0f} ms per step (dev evaluations included).", "",
                  "| model | dev accuracy (mean +- sd) | per seed |", "|---|---|---|",
                  f"| this checkpoint | {sp['dev_acc_mean']:.4f} +- {sp['dev_acc_sd']:.4f} | {fmt_list(sp['dev_acc_per_seed'], '{:.4f}', ', ')} |",
                  f"| random init | {sr['dev_acc_mean']:.4f} +- {sr['dev_acc_sd']:.4f} | {fmt_list(sr['dev_acc_per_seed'], '{:.4f}', ', ')} |",
                  *([f"| bag-of-words logistic regression, same {sp['train_used']} phrases | "
                     f"{sp['bow_dev_acc_subset']:.4f} | - |"] if "bow_dev_acc_subset" in sp else []),
                  f"| bag-of-words logistic regression, all {sp['train_total']} phrases | "
                  f"{sp.get('bow_dev_acc', float('nan')):.4f} | - |", "",
                  "![SST-2 pretrained](eval/sst2_curve_pretrained.png) ![SST-2 random](eval/sst2_curve_random.png)", "",
                  "All figures, with the curves: `eval/sst2_results.json`.", "",
                  f"Command (both inits): `{cmd['sst2_pretrained']}`", ""]
    if "attention" in r:
        lines += ["## 4. Attention heatmaps", "", "Rows are queries, columns keys; one panel per (layer, head).", ""]
        lines += [f"![attention {i}](eval/{f})" for i, f in enumerate(r["attention"])]
        lines += ["", f"Command: `{cmd['evaluate']}`", ""]
    if "repr" in r:
        t, rr, g = r["repr"], r["repr_random"], r["gradflow"]
        L1 = len(t["token_diversity"])
        lines += ["## 5. Gradient flow and representations", "",
                  f"One held-out batch, MLM loss {g['loss']:.4f}, global grad norm {g['global']:.3e}.", "",
                  "| group | " + " | ".join(g["groups"]) + " |", "|---" * (len(g["groups"]) + 1) + "|",
                  "| grad norm | " + fmt_list(g["groups"].values(), "{:.3e}") + " |", "",
                  "![gradient flow](eval/gradient_flow.png)", "",
                  "| layer (0 = embeddings) | " + " | ".join(map(str, range(L1))) + " |", "|---" * (L1 + 1) + "|",
                  "| token diversity (mean cosine), trained | " + fmt_list(t["token_diversity"]) + " |",
                  "| token diversity, random init | " + fmt_list(rr["token_diversity"]) + " |",
                  f"| effective rank (of {t.get('n_tokens', '')} tokens, H={ctx['hidden']}), trained | "
                  + fmt_list(t["effective_rank"], "{:.1f}") + " |",
                  "| effective rank, random init | " + fmt_list(rr["effective_rank"], "{:.1f}") + " |",
                  "| CKA with the next layer, trained | " + fmt_list([t["cka"][i][i + 1] for i in range(L1 - 1)]) + " |", "",
                  "Attention entropy (nats; uniform over 64 keys = 4.16), trained, rows = layers, columns = heads:", ""]
        lines += ["    " + fmt_list(row, "{:.2f}") for row in t["attention_entropy"]]
        lines += ["", "Same for the random-init model:", ""]
        lines += ["    " + fmt_list(row, "{:.2f}") for row in rr["attention_entropy"]]
        lines += ["", "Effective rank of the weight matrices (trained / random init):", "",
                  "| matrix | trained | random init |", "|---|---|---|"]
        lines += [f"| {k} | {v:.1f} | {r['wrank_random'][k]:.1f} |" for k, v in r["wrank"].items()]
        if "weight_norms" in r:
            groups = list(next(iter(r["weight_norms"].values())))
            lines += ["", "Weight norm per group (Frobenius), from the init to each checkpoint in the run folder:", "",
                      "| | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
            lines += [f"| {name} | " + fmt_list([n[g] for g in groups], "{:.2f}") + " |" for name, n in r["weight_norms"].items()]
            lines += ["", "Relative change of the evaluated weights since the init, ||W - W_init|| / ||W_init|| per "
                      "group: " + ", ".join(f"{g} {v:.2f}" for g, v in r["change_from_init"].items()) + ".", "",
                      "![weight norms](eval/weight_norms.png)"]
        lines += ["", f"Command: `{cmd['evaluate']}`", ""]
    if "overfit" in r:
        c = r["overfit"]
        lines += ["## 6. Overfitting one batch", "",
                  f"One fixed masked batch, AdamW lr 1e-3, no dropout: loss {c[0]:.4f} -> {c[-1]:.4f} in {len(c) - 1} steps.",
                  "", "    " + fmt_list(c[::10], "{:.3f}"), "", f"Command: `{cmd['overfit']}`", ""]
    if "blimp" in r:
        lines += blimp_section(r["blimp"], cmd["blimp"])
    lines += ["## Wall time of each part", "", "| part | wall s | CPU s (with worker processes) |", "|---|---|---|"]
    lines += [f"| {k} | {w:.0f} | {c:.0f} |" for k, (w, c) in ctx["times"].items()]
    lines += ["", "Measured on 2 CPU cores; wall time above CPU time means other programs shared them."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def blimp_section(b, command):
    """The report's BLiMP section: the field table of the model and both controls, the anchors, the figure."""
    from blimp import ANCHORS, MODELS, best_and_worst
    i = b["info"]
    fields_of = i["fields_of_paradigms"]
    n_par = {f: sum(fields_of[u] == f for u in b["model"]["paradigms"]) for f in b["model"]["fields"]}
    pct = lambda x: f"{100 * x:.1f}"
    acc = b["model"]["paradigms"]
    best, worst = best_and_worst(acc)
    lines = ["## 7. BLiMP minimal pairs", "",
             f"{i['pairs']:,} pairs ({i['pairs_per_paradigm']} per paradigm at most, {len(acc)} paradigms; "
             f"{i['pairs_left_out_longer_than_T']} left out as longer than T), BLiMP at commit "
             f"{i['blimp_commit'][:7]}. Score = pseudo-log-likelihood (Salazar et al. 2020); a pair is right when "
             f"PLL(good) > PLL(bad), a tie counts half. Field and overall accuracy = mean over paradigms. Random "
             f"init on the first {i['random_init_pairs_per_paradigm']} pairs of each paradigm; unigram prior "
             f"counted on {i['unigram_prior_counts']}.", "",
             "| field | paradigms | this checkpoint (%) | random init (%) | unigram prior (%) |", "|---|---|---|---|---|"]
    lines += [f"| {f} | {n_par[f]} | " + " | ".join(pct(b[m]["fields"].get(f, float("nan"))) for m in MODELS) + " |"
              for f in b["model"]["fields"]]
    lines += [f"| **overall** | {len(acc)} | " + " | ".join(f"**{pct(b[m]['overall'])}**" for m in MODELS) + " |", "",
              "Published overall accuracy (BLiMP paper, Table 3; full-sentence log-probability, not PLL): "
              + ", ".join(f"{k} {pct(v)}" for k, v in ANCHORS.items()) + ".", "",
              "Best 5 paradigms: " + ", ".join(f"{u} {pct(acc[u])}" for u in best) + ". Worst 5: "
              + ", ".join(f"{u} {pct(acc[u])}" for u in worst) + ".", "",
              "![BLiMP by field](eval/blimp_by_field.png)", "",
              "All paradigms, with both controls: `eval/blimp_results.json`.", "", f"Command: `{command}`", ""]
    return lines


@cli
def main(argv=None):
    count = at_least(1)
    p = ArgumentParser(description="Evaluate a Mini-BERT checkpoint and write DIR/report.md.")
    p.add_argument("--checkpoint", required=True, help="run folder written by train.py, or a .npz checkpoint")
    p.add_argument("--vocab", default=None, type=existing_file,
                   help="vocab.txt (default: found next to the checkpoint or in data/)")
    p.add_argument("--quick", action="store_true", help="subsets everywhere: a few minutes")
    p.add_argument("--overfit_one_batch", action="store_true", help="only the one-batch overfitting check")
    p.add_argument("--skip", default=set(), type=parts, help=f"comma-separated parts to skip: {','.join(PARTS)}")
    p.add_argument("--mlm-batches", type=count, default=None, help="held-out batches of 32 (default 80, quick 5)")
    p.add_argument("--probe-sentences", type=count, default=None, help="probe train sentences (default all, quick 1000)")
    p.add_argument("--sst2-samples", type=at_least(0), default=None, help="SST-2 train phrases (default 0 = all, quick 2000)")
    p.add_argument("--sst2-epochs", type=count, default=None, help="max epochs (default finetune_sst2.py's, quick too)")
    p.add_argument("--sst2-seeds", type=count, default=None, help="default 3, quick 1")
    p.add_argument("--blimp-pairs", type=count, default=None, help="BLiMP pairs per paradigm (default 1000, quick 50)")
    args = p.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)      # progress lines appear at once in a redirected log
    t_start = now()
    model, tok, info = load_checkpoint(args.checkpoint, args.vocab)
    valid = dataset_path("wiki_valid")
    if "blimp" not in args.skip and not args.overfit_one_batch:     # before any work: the BLiMP files are there
        try:
            dataset_path("blimp")
        except UserError as e:
            raise UserError(f"{e} Or leave BLiMP out with --skip blimp.") from None
    cfg, run_dir = model.config, info["run_dir"]
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    n_mlm = args.mlm_batches or (5 if q else 80)
    probe_n = args.probe_sentences or (1000 if q else None)
    from finetune_sst2 import EPOCHS
    sst_n = args.sst2_samples if args.sst2_samples is not None else (2000 if q else 0)      # 0 = all phrases
    sst_ep, sst_seeds = args.sst2_epochs or EPOCHS, args.sst2_seeds or (1 if q else 3)
    blimp_n = args.blimp_pairs or (50 if q else 1000)
    skip = args.skip
    base = ["--checkpoint", str(info["checkpoint"]), "--vocab", str(info["vocab"])]
    commands = {"evaluate": "python evaluate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "overfit": f"python evaluate.py --checkpoint {args.checkpoint} --overfit_one_batch"}
    results, times = {}, {}
    T = cfg.max_position_embeddings
    print(f"evaluating {info['checkpoint']} (vocab {info['vocab']}, {cfg.num_hidden_layers} layers, H="
          f"{cfg.hidden_size}, T={T}); {'quick' if q else 'full'} run, outputs in {out}")
    print(f"expect: about {'2 minutes' if q else '38 minutes'} for mini on 2 cores (more when they are shared); "
          f"the time of each part is printed at the end and written to the report")

    t = now()
    from data import heldout_batches, load_tokens, prepare
    meta = prepare(valid, info["vocab"], out, num_workers=1, verbose=False)   # cached in DIR/eval, as train.py does
    tokens = np.asarray(load_tokens(meta["bin"])[0], dtype=np.int64)
    n_mlm = min(n_mlm, len(tokens) // ((T - 2) * 32))
    if n_mlm < 1:
        raise UserError(f"{valid} gives {len(tokens)} tokens, fewer than one held-out batch of 32 x {T} needs; "
                        f"set MINIBERT_DATA_DIR to a folder with a longer wiki_en_2015/wiki.valid.txt.")
    batches = heldout_batches(tokens, T, 32, n_mlm)
    times["tokenize held-out text"] = since(t)

    if args.overfit_one_batch or "overfit" not in skip:
        t = now()
        print("== overfit one batch: 8 sequences, loss should fall to ~0 ==")
        from model import MiniBERT
        fresh = MiniBERT.load(info["checkpoint"])                   # leaves the evaluated model untouched
        results["overfit"] = overfit_one_batch(fresh, tok, batches[0][:8])
        times["overfit one batch"] = since(t)
        from metrics import _plt
        plt = _plt(); fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(results["overfit"]); ax.set_yscale("log"); ax.set_xlabel("step"); ax.set_ylabel("MLM loss (one batch)")
        fig.tight_layout(); fig.savefig(out / "overfit_one_batch.png", dpi=110); plt.close(fig)
        print(f"overfit one batch: loss {results['overfit'][0]:.4f} -> {results['overfit'][-1]:.4f}")
        if args.overfit_one_batch:
            return results

    if "mlm" not in skip:
        t = now()
        print(f"== held-out MLM: {n_mlm} batches of 32 x {T} from {valid} ==")
        results["mlm"] = mlm_eval(model, tok, batches)
        results["mlm_random"] = mlm_eval(random_init_like(model), tok, batches)
        times["held-out MLM (trained + random init)"] = since(t)
        m = results["mlm"]
        print(f"held-out MLM: accuracy {m['accuracy']:.4f} | perplexity {m['perplexity']:.1f} | random init "
              f"{results['mlm_random']['accuracy']:.4f} / {results['mlm_random']['perplexity']:.0f} | unigram "
              f"{m['unigram_accuracy']:.4f} / {m['unigram_perplexity']:.0f}")

    if "probe" not in skip:
        import probe_pos
        t = now()
        pargs = base + ["--out", str(out)] + (["--max_sentences", str(probe_n)] if probe_n else [])
        commands["probe"] = "python probe_pos.py " + " ".join(pargs)
        print(f"== POS probe: {commands['probe']} ==")
        results["probe"] = probe_pos.main(pargs)
        times["POS probe (trained, random init, control)"] = since(t)

    if "sst2" not in skip:
        import finetune_sst2
        (out / "sst2_results.json").unlink(missing_ok=True)           # both inits below write their key afresh
        t = now()
        sargs = base + ["--out", str(out), "--max_samples", str(sst_n), "--epochs", str(sst_ep),
                        "--seeds", str(sst_seeds), "--with-random-init"]    # the control: same recipe, same pool
        commands["sst2_pretrained"] = commands["sst2_random"] = "python finetune_sst2.py " + " ".join(sargs)
        print(f"== SST-2: {commands['sst2_pretrained']} ==")
        results["sst2_pretrained"] = finetune_sst2.main(sargs)
        results["sst2_random"] = results["sst2_pretrained"].pop("random_init")
        times[f"SST-2 pretrained + random init ({sst_seeds} seeds each x {sst_ep} epochs x "
              f"{sst_n or 'all'} phrases, + BoW floor)"] = since(t)

    if "attention" not in skip:
        from metrics import plot_attention_grid
        t = now()
        results["attention"] = []
        for i, s in enumerate(SENTENCES):
            ids = tok.encode(s)[:T]
            _, cache = model.encode(np.array([ids]))
            f = f"attention_{i}.png"
            plot_attention_grid([a[0] for a in cache["attn_probs"]], [tok.ids_to_tokens[j] for j in ids], out / f,
                                title=s)
            results["attention"].append(f)
        times["attention heatmaps"] = since(t)

    if "repr" not in skip:
        from metrics import plot_gradient_flow, plot_weight_norms, weight_norms
        t = now()
        rnd = random_init_like(model)
        batch = batches[-1][:16]
        results["repr"] = representation_metrics(model, batch)
        results["repr_random"] = representation_metrics(rnd, batch)
        results["wrank"], results["wrank_random"] = weight_ranks(model.params), weight_ranks(rnd.params)
        results["gradflow"] = gradient_flow(model, tok, batch)
        plot_gradient_flow(results["gradflow"]["groups"], out / "gradient_flow.png",
                           "MLM gradient norm per group (one held-out batch)")
        from model import MiniBERT
        ckpts = sorted((f for f in run_dir.glob("*.npz") if f.name != "resume.npz"), key=lambda f: f.stat().st_mtime)
        names = ["init (seed 0)"] + [f.name for f in ckpts]     # train.py starts from MiniBERT(config, seed=0)
        init = MiniBERT(cfg, seed=0).params
        norms = [weight_norms(init)] + [weight_norms(MiniBERT.load(f).params) for f in ckpts]
        plot_weight_norms(names, norms, out / "weight_norms.png", "weight norm per group: init, then checkpoints")
        results["weight_norms"] = dict(zip(names, norms))
        moved = weight_norms({k: model.params[k] - init[k] for k in init})    # ||W - W_init|| per group
        results["change_from_init"] = {g: moved[g] / norms[0][g] for g in moved}
        times["gradient flow + representation metrics"] = since(t)

    if "blimp" not in skip:
        import blimp
        t = now()
        bargs = base + ["--out", str(out), "--pairs-per-paradigm", str(blimp_n)]
        commands["blimp"] = "python blimp.py " + " ".join(bargs)
        print(f"== BLiMP: {commands['blimp']} ==")
        results["blimp"] = blimp.main(bargs)
        times[f"BLiMP ({blimp_n} pairs per paradigm; model + random init + unigram)"] = since(t)

    times["total"] = since(t_start)
    ctx = {"checkpoint": info["checkpoint"], "vocab": info["vocab"], "config": cfg.to_json(), "quick": q,
           "run_dir": run_dir, "train_log": read_train_log(run_dir / "metrics.jsonl"),
           "valid": valid, "mlm_batches": n_mlm, "hidden": cfg.hidden_size, "results": results,
           "commands": commands, "times": times, "total_s": times["total"][0]}
    (out / "evaluate_results.json").write_text(json.dumps({"results": results, "times": times, "commands": commands},
                                                          indent=2, default=float), encoding="utf-8")
    write_report(run_dir / "report.md", ctx)
    for k, (w, c) in times.items():
        print(f"time | {k:66s} | wall {w:7.1f} s | cpu {c:7.1f} s")
    key = []
    if "mlm" in results:
        key.append(f"MLM acc {results['mlm']['accuracy']:.4f} ppl {results['mlm']['perplexity']:.1f}")
    if "probe" in results:
        pr = results["probe"]; j = pr["layers"].index(pr["best_layer"])
        key.append(f"POS layer {pr['best_layer']} test {pr['trained']['test'][j]:.4f} (sel {pr['selectivity']['test'][j]:.3f})")
    if "sst2_pretrained" in results:
        key.append(f"SST-2 {results['sst2_pretrained']['dev_acc_mean']:.4f} vs random {results['sst2_random']['dev_acc_mean']:.4f}")
    if "blimp" in results:
        b = results["blimp"]
        key.append(f"BLiMP {100 * b['model']['overall']:.1f}% vs random {100 * b['random init']['overall']:.1f}% / "
                   f"unigram {100 * b['unigram']['overall']:.1f}%")
    print(f"report: {run_dir / 'report.md'} | " + " | ".join(key))
    return results


if __name__ == "__main__":
    main()
