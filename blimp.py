"""BLiMP minimal pairs: does the model prefer the grammatical sentence of a pair (Warstadt et al. 2020)?

BLiMP holds 67 paradigms x 1,000 pairs, each a grammatical and an ungrammatical sentence that differ in one
point (agreement, islands, NPI licensing, ...). Each sentence gets its pseudo-log-likelihood (mlm.py,
Salazar et al. 2020): PLL(w) = sum_i log p(w_i | w with w_i masked). A pair is right when PLL(good) > PLL(bad);
a tie (equal scores, e.g. two sentences with the same pieces) counts as half a pair. A paradigm's accuracy
is over its pairs; a field's and the overall accuracy are the mean over paradigms (BLiMP's convention; with
1,000 pairs each it is also the mean over pairs). Controls on the same pairs (a number without a control
teaches nothing):
  - the random-init model of the same config (what the architecture gives without training);
  - the unigram prior alone: PLL = sum_i log p(w_i), p the add-0.5 piece frequencies of the run's training
    corpus (its prepared .bin; else of the wiki validation text): no context at all.
Published overall accuracies (BLiMP paper, Table 3) are printed next to ours: 5-gram 61.2, LSTM 69.8,
Transformer-XL 69.6, GPT-2 81.5, human 88.6 (those LMs score by full-sentence log-probability, not PLL).

Usage:
    python data.py download blimp                             # once: 67 files, 29 MB, into data/blimp
    python blimp.py --checkpoint runs/mini                    # all 67,000 pairs, both controls
    python blimp.py --checkpoint runs/mini --pairs-per-paradigm 50    # 3,350 pairs: about 2 minutes

Expect: a progress bar per model; per field and overall accuracy (%) of the model, the random-init model and
the unigram prior; the best and worst 5 paradigms; the anchors. Cost: each sentence of n pieces is n masked
copies, 1.77M for all 67,000 pairs; mini took 0.7 ms of CPU per copy here (26 s of CPU, user + system, for
37k copies on one thread, start-up included), so about 21 CPU-minutes per model: about 11 minutes per model
on 2 free cores (--threads 2, the default there), twice that with the random-init control on the same pairs
(--random-init-pairs 100 cuts the control to a tenth). A 1-step checkpoint (decoder bias = the unigram
prior, the rest random), 20 pairs per paradigm: overall 55.1% | random init 52.9% | unigram 52.4%.
Writes OUT/blimp_results.json and OUT/blimp_by_field.png; the last line is the overall accuracy.
"""
# S sentences, P pairs, V vocab
import json
import math
import os
import time
from pathlib import Path

import numpy as np

import download
from checkpoint import load_checkpoint, random_init_like
from config import ArgumentParser, UserError, at_least, cli, existing_dir, existing_file
from mlm import pseudo_log_likelihood

REPO = Path(__file__).resolve().parent
FIELDS = ("morphology", "syntax", "semantics", "syntax_semantics", "syntax/semantics")   # as in the files
ANCHORS = {"5-gram": 0.612, "LSTM": 0.698, "Transformer-XL": 0.696, "GPT-2": 0.815, "human": 0.886}
MODELS = ("model", "random init", "unigram")


# ---- data ----

def blimp_folder(data_dir=None):
    """The folder of BLiMP's <paradigm>.jsonl files: DIR/blimp or DIR itself with --data-dir DIR, else
    data dir/blimp as found by download.dataset_path. Missing: a UserError naming the download command."""
    if data_dir is None:
        return download.dataset_path("blimp").parent
    for d in (Path(data_dir) / "blimp", Path(data_dir)):
        if d.is_dir() and any(d.glob("*.jsonl")):
            return d
    raise UserError(f"no BLiMP .jsonl files in {data_dir} or {Path(data_dir) / 'blimp'}; run `python data.py "
                    f"download blimp --data-dir {data_dir}` (needs internet).")


def read_paradigms(folder, max_pairs=None):
    """[{uid, field, term, good: [str], bad: [str]}] for every *.jsonl in folder, by file name."""
    from data import read_blimp
    out = []
    for f in sorted(Path(folder).glob("*.jsonl")):
        rows = read_blimp(f, max_pairs)
        if rows:
            out.append({"uid": rows[0]["UID"], "field": rows[0]["field"], "term": rows[0]["linguistics_term"],
                        "good": [r["sentence_good"] for r in rows], "bad": [r["sentence_bad"] for r in rows]})
    if not out:
        raise UserError(f"the BLiMP files in {folder} hold no pair; download them again with "
                        f"`python data.py download blimp`.")
    return out


def encode_pairs(tok, paradigms, max_len):
    """Pieces of every pair, [CLS] ... [SEP]; a pair with a sentence longer than max_len is left out.
    -> (seqs: [good_0, bad_0, good_1, bad_1, ...], paradigm (P,) int, index within its paradigm (P,) int,
    number of pairs left out)"""
    seqs, par, idx, skipped = [], [], [], 0
    for j, p in enumerate(paradigms):
        for i, (g, b) in enumerate(zip(p["good"], p["bad"])):
            g, b = tok.encode(g), tok.encode(b)
            if max(len(g), len(b)) > max_len:
                skipped += 1
                continue
            seqs += [g, b]
            par.append(j)
            idx.append(i)
    return seqs, np.array(par, dtype=np.int64), np.array(idx, dtype=np.int64), skipped


# ---- scores and accuracy ----

def unigram_log_probs(tokens, vocab_size, special_ids):
    """log p(v) = log((count[v] + 0.5) / sum_u (count[u] + 0.5)), specials counted 0: mlm.log_prior (which is
    centred) shifted back so that sum_v p(v) = 1.   tokens: (N,) ints -> (V,) float64"""
    from mlm import log_prior
    lp = log_prior(tokens, vocab_size, special_ids).astype(np.float64)   # (V,)
    m = lp.max()
    return lp - (m + np.log(np.exp(lp - m).sum()))


def unigram_scores(seqs, logp):
    """score(w) = sum_i log p(w_i) over the pieces between [CLS] and [SEP], summed exactly (math.fsum), so two
    sentences with the same pieces in another order tie exactly.   -> (S,) float64"""
    return np.array([math.fsum(logp[np.asarray(s[1:-1])]) for s in seqs], dtype=np.float64)


def pair_credit(good, bad):
    """1 if score(good) > score(bad), 0.5 on a tie, 0 otherwise.   good, bad: (P,) -> (P,) float64"""
    return (good > bad) + 0.5 * (good == bad)


def summarize(paradigms, par, credit):
    """Accuracy per paradigm (mean credit of its pairs), per field and overall (means over paradigms; a
    paradigm with no pair scored is left out).   par, credit: (P,) -> {"paradigms", "fields", "overall"}"""
    acc = {}
    for j, p in enumerate(paradigms):
        c = credit[par == j]
        if len(c):
            acc[p["uid"]] = float(c.mean())
    field_of = {p["uid"]: p["field"] for p in paradigms}
    fields = {}
    for f in list(FIELDS) + sorted({p["field"] for p in paradigms} - set(FIELDS)):
        vals = [a for u, a in acc.items() if field_of[u] == f]
        if vals:
            fields[f] = float(np.mean(vals))
    return {"paradigms": acc, "fields": fields, "overall": float(np.mean(list(acc.values())))}


# ---- the unigram prior's counts ----

def prior_tokens(info, tok, prior_bin=None, out=None):
    """(tokens, where they come from) for the unigram control: --prior-bin; else the prepared .bin of the
    training corpus that run.json records (train.py's cache dir, default <repo>/data) if it was made with this
    vocab; else the wiki validation text, tokenized into out (cached, as evaluate.py does)."""
    from data import load_tokens, prepare, prepared_paths
    if prior_bin is not None:
        return load_tokens(prior_bin, tok)[0], f"{prior_bin} (--prior-bin)"
    try:
        run = json.loads((info["run_dir"] / "run.json").read_text(encoding="utf-8"))
        bin_path = prepared_paths(run["corpus"], run.get("args", {}).get("cache_dir") or REPO / "data")[0]
        return load_tokens(bin_path, tok)[0], f"{bin_path} (the run's training corpus)"
    except (OSError, ValueError, KeyError, TypeError):                # no run.json, no .bin, another vocab
        pass
    valid = download.dataset_path("wiki_valid")
    meta = prepare(valid, info["vocab"], out, num_workers=1, verbose=False)
    return load_tokens(meta["bin"])[0], f"{valid} (the run's training .bin was not found)"


# ---- report ----

def plot_fields(res, path):
    """Bars per field and overall: model, random init, unigram; lines at chance and the 5-gram anchor."""
    from metrics import plot_grouped_bars
    fields = list(res["model"]["fields"]) + ["overall"]
    series = {name: [100 * (res[name]["fields"].get(f, np.nan) if f != "overall" else res[name]["overall"])
                     for f in fields] for name in MODELS}
    plot_grouped_bars([f.replace("_", "\n") for f in fields], series, path,
                      {"chance 50": 50, f"5-gram {100 * ANCHORS['5-gram']:.1f}": 100 * ANCHORS["5-gram"]},
                      title="BLiMP accuracy by field (mean over paradigms)", ylabel="accuracy (%)")


def best_and_worst(acc, k=5):
    """The k paradigms of highest and of lowest accuracy ({uid: accuracy}), ties in name order."""
    return sorted(acc, key=lambda u: (-acc[u], u))[:k], sorted(acc, key=lambda u: (acc[u], u))[:k]


def anchors_line():
    return " | ".join(f"{k} {100 * v:.1f}" for k, v in ANCHORS.items())


def print_summary(res, paradigms):
    n_par = {f: sum(p["field"] == f for p in paradigms if p["uid"] in res["model"]["paradigms"]) for f in
             res["model"]["fields"]}
    print(f"{'field':<24} {'paradigms':>9} {'model':>7} {'random init':>12} {'unigram':>8}")
    for f in res["model"]["fields"]:
        print(f"{f:<24} {n_par[f]:>9} " + " ".join(f"{100 * res[m]['fields'].get(f, np.nan):>{w}.1f}"
                                                   for m, w in zip(MODELS, (7, 12, 8))))
    print(f"{'overall (mean over paradigms)':<34} " + " ".join(f"{100 * res[m]['overall']:>{w}.1f}"
                                                                for m, w in zip(MODELS, (7, 12, 8))))
    acc = res["model"]["paradigms"]
    best, worst = best_and_worst(acc)
    field_of = {p["uid"]: p["field"] for p in paradigms}
    for title, uids in (("best 5 paradigms", best), ("worst 5 paradigms", worst)):
        print(f"{title} (model | random init | unigram):")
        for uid in uids:
            print(f"  {uid + ' (' + field_of[uid] + ')':<60} {100 * acc[uid]:5.1f} | "
                  f"{100 * res['random init']['paradigms'].get(uid, np.nan):5.1f} | "
                  f"{100 * res['unigram']['paradigms'][uid]:5.1f}")
    print(f"anchors (BLiMP paper, overall %): {anchors_line()}")


@cli
def main(argv=None):
    p = ArgumentParser(description="BLiMP minimal pairs by pseudo-log-likelihood, with random-init and unigram "
                                   "controls.")
    p.add_argument("--checkpoint", required=True, help="run folder written by train.py, or a .npz checkpoint")
    p.add_argument("--vocab", default=None, type=existing_file,
                   help="vocab.txt (default: found next to the checkpoint)")
    p.add_argument("--data-dir", default=None, type=existing_dir,
                   help="folder holding blimp/*.jsonl (default: the data dirs of download.py)")
    p.add_argument("--pairs-per-paradigm", type=at_least(1), default=1000, help="the first N pairs of each paradigm")
    p.add_argument("--random-init-pairs", type=at_least(1), default=None,
                   help="score the random-init control on the first N pairs of each paradigm (default: the same pairs)")
    p.add_argument("--prior-bin", default=None, type=existing_file,
                   help="a prepared .bin to count the unigram prior on (default: the run's training corpus)")
    p.add_argument("--threads", type=at_least(1), default=os.cpu_count() or 1, help="worker threads")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint dir>/eval)")
    args = p.parse_args(argv)
    t0 = time.time()
    from workers import Workers, tune_malloc
    folder = blimp_folder(args.data_dir)                            # before any work: the data is there
    paradigms = read_paradigms(folder, args.pairs_per_paradigm)
    model, tok, info = load_checkpoint(args.checkpoint, args.vocab)
    out = Path(args.out) if args.out else info["run_dir"] / "eval"
    seqs, par, idx, skipped = encode_pairs(tok, paradigms, model.config.max_position_embeddings)
    if not len(par):
        raise UserError(f"every pair is longer than the model's T={model.config.max_position_embeddings} pieces.")
    n_ctrl = min(args.random_init_pairs or args.pairs_per_paradigm, args.pairs_per_paradigm)
    tokens, prior_desc = prior_tokens(info, tok, args.prior_bin, out)
    print(f"BLiMP: {len(paradigms)} paradigms from {folder}, {len(par):,} pairs ({args.pairs_per_paradigm} per "
          f"paradigm at most; {skipped} left out as longer than T={model.config.max_position_embeddings}); "
          f"{sum(len(s) - 2 for s in seqs):,} masked copies per model; random-init control on {n_ctrl} per "
          f"paradigm; unigram prior from {prior_desc}")
    print(f"expect: about {sum(len(s) - 2 for s in seqs) * 0.7e-3 / 60 / args.threads:.1f} minutes per model "
          f"for mini on {args.threads} free core(s) (0.7 ms of CPU per copy)")

    tune_malloc()                                                   # the same large temporaries every batch
    workers = Workers(args.threads, 1)
    credit = {}                                                     # name -> (pairs scored (P,) bool, credit)
    try:
        for name, m, keep in (("model", model, np.ones(len(par), bool)),
                              ("random init", random_init_like(model), idx < n_ctrl)):
            k = np.flatnonzero(keep)
            sel = np.stack([2 * k, 2 * k + 1], axis=1).reshape(-1)  # (2K,) good, bad of each kept pair
            pll = pseudo_log_likelihood(m, [seqs[i] for i in sel], tok.mask_id, tok.pad_id, map_fn=workers.map,
                                        progress=True)              # (2K,)
            credit[name] = (keep, pair_credit(pll[0::2], pll[1::2]))
            print(f"{name}: scored {len(k):,} pairs ({time.time() - t0:.0f} s so far)")
    finally:
        workers.close()
    uni = unigram_scores(seqs, unigram_log_probs(tokens, model.config.vocab_size, tok.special_ids))   # (S,)
    credit["unigram"] = (np.ones(len(par), bool), pair_credit(uni[0::2], uni[1::2]))

    res = {name: summarize(paradigms, par[keep], c) for name, (keep, c) in credit.items()}
    identical = sum(seqs[2 * k] == seqs[2 * k + 1] for k in range(len(par)))
    res["info"] = {
        "checkpoint": str(info["checkpoint"]), "vocab": str(info["vocab"]), "data": str(folder),
        "blimp_commit": download.BLIMP_COMMIT, "paradigms": len(paradigms), "pairs": int(len(par)),
        "pairs_per_paradigm": args.pairs_per_paradigm, "random_init_pairs_per_paradigm": n_ctrl,
        "pairs_left_out_longer_than_T": skipped, "unigram_prior_counts": prior_desc,
        "pairs_identical_after_tokenization": int(identical),
        "ties": {name: int((c == 0.5).sum()) for name, (_, c) in credit.items()},
        "tie_rule": "a tie (equal scores) counts as half a pair",
        "overall": "mean over paradigms of the accuracy over each paradigm's pairs",
        "fields_of_paradigms": {p["uid"]: p["field"] for p in paradigms},
        "anchors_overall": ANCHORS, "wall_s": round(time.time() - t0, 1)}
    print_summary(res, paradigms)
    out.mkdir(parents=True, exist_ok=True)
    print(f"ties (count half): {', '.join(f'{k} {v:,}' for k, v in res['info']['ties'].items())}; "
          f"{identical} pairs are identical after tokenization (uncased pieces)")
    plot_fields(res, out / "blimp_by_field.png")
    (out / "blimp_results.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    print(f"wrote {out / 'blimp_results.json'} and {out / 'blimp_by_field.png'} in {res['info']['wall_s']:.0f} s")
    print(f"BLiMP overall {100 * res['model']['overall']:.1f}% (mean over {len(res['model']['paradigms'])} "
          f"paradigms, {len(par):,} pairs) | random init {100 * res['random init']['overall']:.1f}% | unigram "
          f"{100 * res['unigram']['overall']:.1f}% | 5-gram 61.2, GPT-2 81.5, human 88.6")
    return res


if __name__ == "__main__":
    main()
