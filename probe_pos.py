"""Linear part-of-speech probe: what does each layer of a frozen Mini-BERT know about word classes?

For every layer l = 0 (embeddings) .. L, a softmax classifier p(tag | x) = softmax(x W + b) is trained on
the frozen representation x (H,) of each word (its first WordPiece, or the mean of its pieces), with our
own linear/softmax backward and AdamW, early-stopped on dev. Controls in the same run (a number without a
control teaches nothing):
  - majority tag, and the most frequent tag of each word form (a lookup table: no context at all);
  - the same probe on a randomly initialised model of the same config (what architecture alone gives);
  - Hewitt & Liang (2019) control task: every word type gets a random tag, fixed by a seed, drawn from the
    train tag distribution. selectivity = task accuracy - control accuracy: high when the probe reads the
    tag out of the representation rather than memorising word identities.
Sentences longer than T pieces are cut into overlapping windows; each word is scored in exactly one window
(where it has the most context), and the script checks that words scored == words in the file.

Usage:
    python probe_pos.py --checkpoint runs/mini                    # UPOS on UD English-EWT, all layers
    python probe_pos.py --checkpoint runs/mini --max_sentences 2000 --xpos --pooling mean

Expect (full EWT, mini): "words scored 204577 == words in file 204577: True" (269 train sentences need
windows at T=64); about 70 s on 2 cores. Baselines (test): majority tag 0.164, most frequent tag per word
0.862. A 600-step checkpoint (held-out MLM accuracy 0.09) gives best-layer test 0.688 vs random init 0.654
and control 0.649 (selectivity 0.04); the README has the 60-minute checkpoint's figures.
Writes OUT/probe_results.json and OUT/probe_by_layer.png; the last line is the best layer's test accuracy.
"""
# B batch, T sequence, H hidden, L layers, C classes (tags), N words
import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from checkpoint import load_checkpoint, random_init_like
from config import ArgumentParser, UserError, at_least, cli, existing_file, positive
from download import dataset_path


# ---- windows: every word scored exactly once ----

def word_windows(n_pieces, budget):
    """Split a sentence into windows of at most `budget` pieces, aligned to word boundaries.
    n_pieces: pieces per word (each >= 1, <= budget). Returns [(ctx_lo, lo, hi, ctx_hi)] word indices:
    the window holds words [ctx_lo, ctx_hi) and scores words [lo, hi); the [lo, hi) ranges partition the
    sentence. Each scored chunk fills about half the budget; the rest is context split between both sides."""
    n = len(n_pieces)
    if sum(n_pieces) <= budget:
        return [(0, 0, n, n)]
    out, lo = [], 0
    while lo < n:
        hi, used = lo + 1, n_pieces[lo]
        while hi < n and used + n_pieces[hi] <= budget // 2:        # scored chunk: about half the budget
            used += n_pieces[hi]; hi += 1
        ctx_lo, ctx_hi = lo, hi
        while True:                                                 # grow the context left and right in turn
            grew = False
            if ctx_lo > 0 and used + n_pieces[ctx_lo - 1] <= budget and (lo - ctx_lo) <= (ctx_hi - hi):
                ctx_lo -= 1; used += n_pieces[ctx_lo]; grew = True
            if ctx_hi < n and used + n_pieces[ctx_hi] <= budget:
                used += n_pieces[ctx_hi]; ctx_hi += 1; grew = True
            elif ctx_lo > 0 and used + n_pieces[ctx_lo - 1] <= budget:
                ctx_lo -= 1; used += n_pieces[ctx_lo]; grew = True
            if not grew:
                break
        out.append((ctx_lo, lo, hi, ctx_hi))
        lo = hi
    return out


def word_pieces(tok, words, max_pieces):
    """Pieces of each word: [[id, ...], ...]; a word that yields no piece becomes [UNK], and one longer
    than max_pieces is cut (it still gets scored, from its first pieces)."""
    ids, word_ids = tok.encode_words(words, add_special_tokens=False)
    pieces = [[] for _ in words]
    for i, w in zip(ids, word_ids):
        if w is not None:
            pieces[w].append(int(i))
    return [(p or [tok.unk_id])[:max_pieces] for p in pieces]


def build_windows(tok, sentences, T):
    """-> (windows, n_split): each window is (ids list, [(word index in corpus, [positions of its pieces])])."""
    windows, base, n_split = [], 0, 0
    for words in sentences:
        pieces = word_pieces(tok, words, T - 2)
        spans = word_windows([len(p) for p in pieces], T - 2)
        n_split += len(spans) > 1
        for ctx_lo, lo, hi, ctx_hi in spans:
            ids, scored = [tok.cls_id], []
            for w in range(ctx_lo, ctx_hi):
                if lo <= w < hi:
                    scored.append((base + w, list(range(len(ids), len(ids) + len(pieces[w])))))
                ids.extend(pieces[w])
            windows.append((ids + [tok.sep_id], scored))
        base += len(words)
    return windows, n_split


# ---- frozen features ----

def extract_features(model, windows, n_words, layers, pooling="first", batch_size=64, desc="features"):
    """Run the frozen model over all windows; a word's feature is its first piece's hidden state (or the
    mean over its pieces). -> (len(layers), n_words, H) float32, and the number of words scored."""
    from data import pad_batch
    H = model.config.hidden_size
    feats = np.zeros((len(layers), n_words, H), dtype=np.float32)   # 12.5k sentences, 4 layers: ~630 MB
    counts = np.zeros(n_words, dtype=np.int64)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i][0]))   # similar lengths: little padding
    for s in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        batch = [windows[i] for i in order[s:s + batch_size]]
        ids, mask = pad_batch([w[0] for w in batch], pad_id=0)               # (B, Tb)
        _, cache = model.encode(ids, attention_mask=mask)
        Tb = ids.shape[1]
        rows, flat = [], []
        for b, (_, scored) in enumerate(batch):
            for word, pos in scored:
                pos = pos[:1] if pooling == "first" else pos
                rows.extend([word] * len(pos)); flat.extend(b * Tb + p for p in pos)
        rows, flat = np.array(rows), np.array(flat)
        for j, l in enumerate(layers):
            h = cache["hidden_states"][l].reshape(-1, H)                     # (B*Tb, H)
            np.add.at(feats[j], rows, h[flat])
        np.add.at(counts, rows, 1)
    scored = int((counts > 0).sum())
    feats /= np.maximum(counts, 1)[None, :, None]
    return feats, scored


# ---- the probe: linear + softmax, our own backward, AdamW ----

def train_probe(Xtr, ytr, Xdev, ydev, n_classes, seed=0, lr=3e-3, batch_size=512, max_epochs=20, patience=2):
    """logits = X W + b (N, C); loss = cross-entropy; early stopping on dev accuracy.
    -> (best params, best dev accuracy, epochs run)."""
    from gradients import linear_backward
    from mlm import mlm_loss
    from model import linear_forward
    from optimizer import AdamW
    rng = np.random.default_rng(seed)
    H = Xtr.shape[1]
    params = {"W": (0.01 * rng.standard_normal((H, n_classes))).astype(np.float32),
              "b": np.zeros(n_classes, dtype=np.float32)}
    opt = AdamW(params, lr=lr, weight_decay=0.0)
    best, best_acc, bad, epoch = None, -1.0, 0, 0
    for epoch in range(1, max_epochs + 1):
        perm = rng.permutation(len(Xtr))
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            logits, cache = linear_forward(Xtr[idx], params["W"], params["b"])   # (B, C)
            _, dlogits = mlm_loss(logits, ytr[idx])                             # (probs - onehot) / B
            _, dW, db = linear_backward(dlogits, cache)
            opt.step({"W": dW, "b": db})
        acc = probe_accuracy(params, Xdev, ydev)
        if acc > best_acc:
            best, best_acc, bad = {k: v.copy() for k, v in params.items()}, acc, 0
        else:
            bad += 1
            if bad >= patience:
                break
    return best, best_acc, epoch


def probe_accuracy(params, X, y, batch_size=8192):
    correct = 0
    for s in range(0, len(X), batch_size):
        correct += int(((X[s:s + batch_size] @ params["W"] + params["b"]).argmax(-1) == y[s:s + batch_size]).sum())
    return correct / max(len(X), 1)


# ---- word-level baselines ----

def majority_and_lookup(train_words, train_tags, words, tags):
    """Majority tag, and the most frequent train tag of each (lowercased) form, majority for unseen forms."""
    majority = Counter(train_tags).most_common(1)[0][0]
    per_word = {}
    for w, t in zip(train_words, train_tags):
        per_word.setdefault(w.lower(), Counter())[t] += 1
    table = {w: c.most_common(1)[0][0] for w, c in per_word.items()}
    tags = np.array(tags)
    acc_major = float((tags == majority).mean())
    acc_lookup = float((np.array([table.get(w.lower(), majority) for w in words]) == tags).mean())
    return acc_major, acc_lookup


def control_tags(all_words, train_tags, seed):
    """Hewitt & Liang control task: each word type (lowercased) gets a tag drawn from the train tag
    distribution, once, fixed by `seed`. -> {type: tag id}"""
    rng = np.random.default_rng(seed)
    counts = np.bincount(train_tags)
    types = sorted({w.lower() for w in all_words})
    return dict(zip(types, rng.choice(len(counts), size=len(types), p=counts / counts.sum()).tolist()))


def layer_list(text):
    """argparse type for --layers: comma-separated layer numbers, e.g. 0,3 (checked against the model later)."""
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated layer numbers such as 0,3, got {text!r}") from None
    if min(layers) < 0 or len(set(layers)) != len(layers):
        raise argparse.ArgumentTypeError(f"must be distinct layer numbers >= 0, got {text!r}")
    return layers


@cli
def main(argv=None):
    p = ArgumentParser(description="Linear POS probe per layer, with majority, lookup, random-init "
                                   "and control-task baselines.")
    p.add_argument("--checkpoint", required=True, help="run folder written by train.py, or a .npz checkpoint")
    p.add_argument("--vocab", default=None, type=existing_file, help="vocab.txt (default: found next to the checkpoint)")
    p.add_argument("--train", default=None, type=existing_file,
                   help="CoNLL-U train file (default: UD English-EWT in the data dir)")
    p.add_argument("--dev", default=None, type=existing_file)
    p.add_argument("--test", default=None, type=existing_file)
    p.add_argument("--max_sentences", type=at_least(1), default=None,
                   help="use the first N train sentences (dev/test: N/4)")
    p.add_argument("--layers", default=None, type=layer_list,
                   help="comma-separated layers, e.g. 0,3 (default: all, 0 = embeddings)")
    p.add_argument("--xpos", action="store_true", help="probe the PTB tags (XPOS) instead of UPOS")
    p.add_argument("--pooling", default="first", choices=["first", "mean"], help="word = first piece, or mean")
    p.add_argument("--epochs", type=at_least(1), default=20, help="max probe epochs (early stopping on dev)")
    p.add_argument("--lr", type=positive, default=3e-3)
    p.add_argument("--seed", type=at_least(0), default=0, help="probe init/shuffle, random-init model and control task")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint dir>/eval)")
    args = p.parse_args(argv)
    t0 = time.time()
    from data import read_conllu
    model, tok, info = load_checkpoint(args.checkpoint, args.vocab)
    cfg = model.config
    layers = list(range(cfg.num_hidden_layers + 1)) if args.layers is None else args.layers
    if max(layers) > cfg.num_hidden_layers:
        raise UserError(f"--layers {max(layers)}: {info['checkpoint']} has layers 0 (embeddings) to "
                        f"{cfg.num_hidden_layers}.")
    field = "xpos" if args.xpos else "upos"
    splits = {}
    for name, n_max in (("train", args.max_sentences), ("dev", None if args.max_sentences is None else
                         max(1, args.max_sentences // 4)), ("test", None if args.max_sentences is None else
                         max(1, args.max_sentences // 4))):
        path = Path(getattr(args, name) or dataset_path("ud_ewt_" + name))
        splits[name] = read_conllu(path)[:n_max]
        if not splits[name]:
            raise UserError(f"{path} holds no CoNLL-U sentence; pass --{name} a .conllu file.")
    out = Path(args.out) if args.out else info["run_dir"] / "eval"
    out.mkdir(parents=True, exist_ok=True)
    tagset = sorted({t for s in splits["train"] for t in s[field]})
    tag_id = {t: i for i, t in enumerate(tagset)}
    print(f"probe: {field.upper()} ({len(tagset)} tags), layers {layers}, pooling {args.pooling}, "
          f"{', '.join(f'{k} {len(v)} sentences' for k, v in splits.items())}")
    print("expect: a few minutes; the trained curve should sit above random-init and above the lookup baseline")

    words = {k: [w for s in v for w in s["words"]] for k, v in splits.items()}
    y = {k: np.array([tag_id.get(t, -1) for s in v for t in s[field]]) for k, v in splits.items()}   # -1: tag unseen in train
    ctrl_table = control_tags(words["train"] + words["dev"] + words["test"], y["train"], args.seed)
    yc = {k: np.array([ctrl_table[w.lower()] for w in words[k]]) for k in splits}
    res = {"checkpoint": str(info["checkpoint"]), "field": field, "pooling": args.pooling, "layers": layers,
           "tags": tagset, "sentences": {k: len(v) for k, v in splits.items()},
           "words": {k: len(v) for k, v in words.items()}, "baselines": {}, "words_scored": {},
           "sentences_split_into_windows": {}}
    for k in ("dev", "test"):
        maj, look = majority_and_lookup(words["train"], y["train"], words[k], y[k])
        res["baselines"].setdefault("majority", {})[k] = maj
        res["baselines"].setdefault("most_frequent_tag_per_word", {})[k] = look

    windows = {}
    for k, v in splits.items():
        windows[k], res["sentences_split_into_windows"][k] = build_windows(tok, [s["words"] for s in v],
                                                                         cfg.max_position_embeddings)
    for variant, m in (("trained", model), ("random_init", random_init_like(model, args.seed))):
        feats = {}
        for k in splits:
            feats[k], scored = extract_features(m, windows[k], len(words[k]), layers, args.pooling,
                                                desc=f"{variant} {k}")
            if variant == "trained":
                res["words_scored"][k] = scored
                print(f"{k}: words scored {scored} == words in file {len(words[k])}: {scored == len(words[k])} "
                      f"({res['sentences_split_into_windows'][k]} sentences longer than T={cfg.max_position_embeddings} "
                      f"split into windows)")
        tasks = [(variant, y)] + ([("control", yc)] if variant == "trained" else [])
        for name, labels in tasks:
            accs = {"dev": [], "test": [], "epochs": []}
            for j, l in enumerate(tqdm(layers, desc=f"probe {name}", leave=False)):
                keep = labels["train"] >= 0
                params, dev_acc, ep = train_probe(feats["train"][j][keep], labels["train"][keep], feats["dev"][j],
                                                  labels["dev"], len(tagset), args.seed, args.lr, max_epochs=args.epochs)
                accs["dev"].append(dev_acc)
                accs["test"].append(probe_accuracy(params, feats["test"][j], labels["test"]))
                accs["epochs"].append(ep)
                print(f"{name:11s} layer {l} | dev {dev_acc:.4f} | test {accs['test'][-1]:.4f} | {ep} epochs")
            res[name] = accs
        del feats
    res["selectivity"] = {k: [a - c for a, c in zip(res["trained"][k], res["control"][k])] for k in ("dev", "test")}
    best = int(np.argmax(res["trained"]["dev"]))
    res["best_layer"] = layers[best]
    res["wall_s"] = round(time.time() - t0, 1)

    from metrics import plot_probe_by_layer
    plot_probe_by_layer({"trained (test)": res["trained"]["test"], "random init (test)": res["random_init"]["test"],
                         "control task (test)": res["control"]["test"]}, out / "probe_by_layer.png",
                        {"majority tag": res["baselines"]["majority"]["test"],
                         "most frequent tag per word": res["baselines"]["most_frequent_tag_per_word"]["test"]},
                        title=f"{field.upper()} probe by layer ({args.pooling} piece)")
    (out / "probe_results.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    print(f"baselines (test): majority {res['baselines']['majority']['test']:.4f} | most frequent tag per word "
          f"{res['baselines']['most_frequent_tag_per_word']['test']:.4f}")
    print(f"wrote {out / 'probe_results.json'} and {out / 'probe_by_layer.png'} in {res['wall_s']:.0f} s")
    print(f"{field.upper()} probe: best layer {layers[best]} | test {res['trained']['test'][best]:.4f} | random init "
          f"{res['random_init']['test'][best]:.4f} | control {res['control']['test'][best]:.4f} | selectivity "
          f"{res['selectivity']['test'][best]:.4f}")
    return res


if __name__ == "__main__":
    main()
