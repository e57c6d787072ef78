"""Evaluation suite on tiny fixtures: windows score every word once, the probe and the classifier head learn
and have correct gradients, the baselines are right on hand examples, and evaluate.py writes a full report
(or one clear error line) for a tiny checkpoint made in tmp_path. A few seconds in all."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import download
import evaluate
import finetune_sst2
import probe_pos
from config import get_config
from model import MiniBERT
from tokenizer import WordPieceTokenizer

FIX = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def tiny_run(tmp_path, monkeypatch):
    """A tiny checkpoint (T=12: the long fixture sentence needs windows) + vocab, and a data dir with the fixtures."""
    vocab = FIX / "eval_vocab.txt"
    tok = WordPieceTokenizer.load(vocab)
    run = tmp_path / "run"
    run.mkdir()
    MiniBERT(get_config("tiny", vocab_size=tok.vocab_size, max_position_embeddings=12), seed=0).save(run / "best.npz")
    shutil.copy(vocab, run / "vocab.txt")
    data = tmp_path / "data"
    for split in ("train", "dev", "test"):
        (data / "ud_english_ewt").mkdir(parents=True, exist_ok=True)
        shutil.copy(FIX / "eval_sample.conllu", data / "ud_english_ewt" / f"en_ewt-ud-{split}.conllu")
    (data / "sst2").mkdir()
    for split in ("train", "dev"):
        shutil.copy(FIX / "eval_sst2.tsv", data / "sst2" / f"{split}.tsv")
    (data / "wiki_en_2015").mkdir()
    rng = np.random.default_rng(0)
    words = tok.ids_to_tokens[5:15]
    text = "\n\n".join(" ".join(rng.choice(words, 400)) for _ in range(2))
    (data / "wiki_en_2015" / "wiki.valid.txt").write_text(text + "\n", encoding="utf-8")
    (data / "blimp").mkdir()
    for uid, field, pairs in (("adjunct_island", "syntax", [("the cat sat on a mat .", "the cat sat a mat on ."),
                                                            ("it was a good film .", "it a was good film .")]),
                              ("noun_agreement", "morphology", [("the film is very good .", "the film are very good .")])):
        rows = [{"sentence_good": g, "sentence_bad": b, "field": field, "UID": uid} for g, b in pairs]
        (data / "blimp" / f"{uid}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setenv("MINIBERT_DATA_DIR", str(data))
    return run, tok


# ---- windows ----

@pytest.mark.parametrize("seed", range(5))
def test_word_windows_partition_and_fit(seed):
    rng = np.random.default_rng(seed)
    n_pieces = rng.integers(1, 5, size=rng.integers(1, 60)).tolist()
    budget = 12
    spans = probe_pos.word_windows(n_pieces, budget)
    scored = [w for _, lo, hi, _ in spans for w in range(lo, hi)]
    assert scored == list(range(len(n_pieces)))                       # every word exactly once, in order
    for ctx_lo, lo, hi, ctx_hi in spans:
        assert ctx_lo <= lo < hi <= ctx_hi and sum(n_pieces[ctx_lo:ctx_hi]) <= budget


def test_features_score_every_word_once_and_match_direct_encode(tiny_run):
    run, tok = tiny_run
    model = MiniBERT.load(run / "best.npz")
    T = model.config.max_position_embeddings
    sents = [s["words"] for s in __import__("data").read_conllu(FIX / "eval_sample.conllu")] + [["\x07", "cat"]]
    windows, n_split = probe_pos.build_windows(tok, sents, T)
    n_words = sum(map(len, sents))
    assert n_split >= 1 and all(len(ids) <= T for ids, _ in windows)
    layers = list(range(model.config.num_hidden_layers + 1))
    feats, scored = probe_pos.extract_features(model, windows, n_words, layers)
    assert scored == n_words and feats.shape == (len(layers), n_words, model.config.hidden_size)
    ids, word_ids = tok.encode_words(sents[0])                          # fits in T: one window, no padding
    _, cache = model.encode(np.array([ids]))
    first = [word_ids.index(w) for w in range(len(sents[0]))]
    for l in layers:
        np.testing.assert_allclose(feats[l, :len(sents[0])], cache["hidden_states"][l][0, first], rtol=1e-5, atol=1e-6)
    fmean, _ = probe_pos.extract_features(model, windows, n_words, layers, pooling="mean")
    assert fmean.shape == feats.shape and not np.allclose(fmean, feats)   # 'unhappily' has 3 pieces


# ---- probe, baselines, control task ----

def test_probe_learns_separable_classes():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)).astype(np.float32) * 3
    y = rng.integers(0, 4, 600)
    X = (centers[y] + rng.normal(size=(600, 16))).astype(np.float32)
    params, dev_acc, _ = probe_pos.train_probe(X[:400], y[:400], X[400:], y[400:], 4, lr=1e-2)
    assert dev_acc > 0.95 and probe_pos.probe_accuracy(params, X[400:], y[400:]) == dev_acc


def test_word_baselines_and_control_task():
    train_w, train_t = ["a", "cat", "a", "dog", "The"], [0, 1, 0, 1, 0]
    maj, look = probe_pos.majority_and_lookup(train_w, train_t, ["the", "cat", "bird"], [0, 1, 2])
    assert maj == pytest.approx(1 / 3) and look == pytest.approx(2 / 3)   # 'the' via lowercase, 'bird' unseen
    t1 = probe_pos.control_tags(["A", "a", "cat"], np.array(train_t), seed=3)
    assert t1 == probe_pos.control_tags(["cat", "a"], np.array(train_t), seed=3) and set(t1) == {"a", "cat"}


# ---- SST-2 head and BoW floor ----

def test_head_backward_matches_finite_differences():
    from tests.gradcheck import num_grad, rel_error
    rng = np.random.default_rng(0)
    B, H, C = 3, 5, 2
    x = rng.normal(size=(B, H))
    head = {k: v.astype(np.float64) + 0.1 * rng.normal(size=v.shape) for k, v in
            finetune_sst2.head_init(H, C, rng, std=0.5).items()}
    dout = rng.normal(size=(B, C))
    drop_rng = lambda: np.random.default_rng(7)                        # the same dropout mask every call
    f = lambda: finetune_sst2.head_forward(x, head, 0.3, training=True, rng=drop_rng())[0]
    _, cache = finetune_sst2.head_forward(x, head, 0.3, training=True, rng=drop_rng())
    dx, grads = finetune_sst2.head_backward(dout, cache)
    assert rel_error(dx, num_grad(f, x, dout)) < 1e-8
    for k in head:
        assert rel_error(grads[k], num_grad(f, head[k], dout)) < 1e-8, k


def test_cls_forward_is_h0_of_encode():
    """Running the last FFN sublayer on the [CLS] rows only changes nothing at [CLS]."""
    from tests import gradcheck as gc
    model = gc.tiny_model(seed=0)
    ids, mask, _, _ = gc.tiny_batch(model.config)
    cls, cache = finetune_sst2.cls_forward(model, ids, mask)
    h, _ = model.encode(ids, attention_mask=mask)
    assert cls.shape == (3, model.config.hidden_size) and cache["rows"].tolist() == [0, 7, 14]
    np.testing.assert_allclose(cls, h[:, 0], rtol=1e-12, atol=1e-12)


def test_classifier_backward_through_the_encoder_matches_finite_differences():
    """loss = cross-entropy(head(cls_forward(ids))), padding, dropout on (the same masks every call): every
    grad of the encoder and head at sampled entries, float64, as tests/test_gradients.py checks the MLM model."""
    from mlm import mlm_loss
    from tests import gradcheck as gc
    model = gc.tiny_model(seed=2, dropout=0.2)
    ids, mask, _, _ = gc.tiny_batch(model.config, seed=2)
    r = np.random.default_rng(2)
    head = {k: 0.5 * r.standard_normal(v.shape) for k, v in finetune_sst2.head_init(model.config.hidden_size, 2, r).items()}
    y = np.array([1, 0, 1])

    def run(grads=False):
        rng = np.random.default_rng(11)                                 # the same dropout masks every call
        x, cache = finetune_sst2.cls_forward(model, ids, mask, training=True, rng=rng)
        logits, hcache = finetune_sst2.head_forward(x, head, 0.2, training=True, rng=rng)
        loss, dlogits = mlm_loss(logits, y)
        if not grads:
            return loss
        dx, g = finetune_sst2.head_backward(dlogits, hcache)
        return g | finetune_sst2.cls_backward(model, cache, dx)

    g = run(grads=True)
    params = {k: v for k, v in model.params.items() if not k.startswith("mlm.")} | head
    assert set(g) == set(params)
    for k, a in params.items():
        assert g[k].shape == a.shape and g[k].dtype == a.dtype, k
        idxs = [np.unravel_index(i, a.shape) for i in r.choice(a.size, size=min(4, a.size), replace=False)]
        ours = np.array([g[k][i] for i in idxs])
        if k.endswith(".bk"):                                           # softmax ignores a shift of all scores
            assert np.max(np.abs(g[k])) <= 1e-12, k
        else:
            assert gc.rel_error(ours, gc.num_grad_at(run, a, idxs)) <= 1e-6, k


def test_bow_floor_separates_a_toy_task():
    sents, y = finetune_sst2.read_tsv(FIX / "eval_sst2.tsv")
    assert len(sents) == 12 and y.tolist() == [1, 0] * 6
    assert finetune_sst2.bow_logreg(sents, y, sents, y, epochs=30, batch_size=4) == 1.0


# ---- the scripts end to end ----

def test_evaluate_quick_writes_report(tiny_run, capsys):
    run, _ = tiny_run
    res = evaluate.main(["--checkpoint", str(run), "--quick", "--mlm-batches", "1", "--sst2-samples", "12"])
    report = (run / "report.md").read_text(encoding="utf-8")
    for section in ("Held-out masked-token", "POS probe by layer", "SST-2", "Attention heatmaps",
                    "Gradient flow", "Overfitting one batch", "BLiMP minimal pairs", "Wall time"):
        assert section in report
    assert res["probe"]["words_scored"] == res["probe"]["words"]
    assert res["blimp"]["info"]["pairs"] == 3 and (run / "eval" / "blimp_by_field.png").is_file()
    assert "| **overall** | 2 | " in report and "5-gram 61.2, LSTM 69.8" in report
    assert (run / "eval" / "probe_by_layer.png").is_file() and (run / "eval" / "sst2_results.json").is_file()
    assert res["overfit"][-1] < 0.5 * res["overfit"][0]           # H=8 learns slowly; mini reaches ~0.01
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("report: ")


def test_finetune_predict_writes_predictions(tiny_run, tmp_path):
    run, _ = tiny_run
    res = finetune_sst2.main(["--checkpoint", str(run), "--max_samples", "0", "--epochs", "1", "--no-bow",
                              "--predict", str(FIX / "eval_sst2.tsv"), "--out", str(tmp_path / "o")])
    lines = (tmp_path / "o" / "predictions.tsv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 13 and 0.0 <= res["predict_acc"] <= 1.0
    assert res["dropout"] == 0.1


def test_finetune_turns_dropout_on_and_keeps_the_best_epoch(tiny_run):
    run, tok = tiny_run
    model = MiniBERT.load(run / "best.npz")
    assert model.config.hidden_dropout_prob == 0.0                    # the tiny preset trains without dropout
    sents, y = finetune_sst2.read_tsv(FIX / "eval_sst2.tsv")
    seqs, _ = finetune_sst2.encode(tok, sents, model.config.max_position_embeddings)
    hist, head = finetune_sst2.finetune(model, tok, (seqs, y), (seqs, y), seed=0, epochs=3, lr=1e-3, batch_size=4)
    assert model.config.hidden_dropout_prob == 0.1 and model.config.attention_probs_dropout_prob == 0.1
    assert len(hist["loss"]) == 9 and hist["best_dev_acc"] == max(hist["dev_acc"])
    acc = (finetune_sst2.predict(model, head, seqs).argmax(-1) == y).mean()
    assert acc == hist["best_dev_acc"]                                 # the best epoch's state was restored


def test_parallel_runs_equal_sequential_runs(tiny_run):
    """Two runs (pretrained seed 0, random init seed 1) in 2 spawn workers give exactly what they give one
    after the other in this process: every loss, every dev accuracy, every fine-tuned weight."""
    run, tok = tiny_run
    sents, y = finetune_sst2.read_tsv(FIX / "eval_sst2.tsv")
    seqs, _ = finetune_sst2.encode(tok, sents, 12)
    base = {"checkpoint": str(run / "best.npz"), "vocab": str(run / "vocab.txt"), "train": (seqs, y), "dev": (seqs, y),
            "epochs": 2, "dropout": 0.1, "batch_size": 4, "lr": 1e-3, "keep": True}
    tasks = [dict(base, init="pretrained", seed=0, desc="pretrained"), dict(base, init="random", seed=1, desc="random")]
    seq, par = finetune_sst2.run_tasks(tasks, jobs=1), finetune_sst2.run_tasks(tasks, jobs=2)
    assert seq[0][0]["loss"] != seq[1][0]["loss"]                       # two different runs
    for (h1, s1), (h2, s2) in zip(seq, par):
        assert h1["loss"] == h2["loss"] and h1["dev_acc"] == h2["dev_acc"] and len(h1["loss"]) == 6
        assert set(s1) == set(s2) and all(np.array_equal(s1[k], s2[k]) for k in s1)


def test_sweep_prints_a_table_and_writes_json(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    rows = finetune_sst2.main(["--checkpoint", str(run), "--sweep", "4:1e-3,6:3e-3", "--epochs", "2", "--jobs", "1",
                               "--out", str(tmp_path)])["sweep"]
    assert [(r["batch_size"], r["lr"]) for r in rows] == [(4, 1e-3), (6, 3e-3)]
    assert all(len(r["dev_acc_by_epoch"]) == 2 and r["best_dev_acc"] == max(r["dev_acc_by_epoch"]) for r in rows)
    assert json.loads((tmp_path / "sst2_sweep.json").read_text(encoding="utf-8"))[1]["runs"][0]["batch_size"] == 6
    assert (tmp_path / "sst2_sweep.png").is_file()
    out = capsys.readouterr().out.splitlines()
    assert "| 4 | 0.001 | " in "\n".join(out) and out[-1].startswith("sweep best: batch ")
    assert finetune_sst2.parse_sweep("32:1e-4, 128:3e-4") == [(32, 1e-4), (128, 3e-4)]
    for bad in ("32", "32:x", "0:1e-3", "32:0", ""):
        assert finetune_sst2.parse_sweep(bad) is None, bad


def test_finetune_with_random_init_runs_both_inits(tiny_run, tmp_path):
    run, _ = tiny_run
    res = finetune_sst2.main(["--checkpoint", str(run), "--with-random-init", "--seeds", "2", "--epochs", "1",
                              "--batch-size", "4", "--jobs", "1", "--no-bow", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "sst2_results.json").read_text(encoding="utf-8"))
    assert res["init"] == "pretrained" and res["random_init"]["init"] == "random"
    assert saved["random"]["dev_acc_per_seed"] == res["random_init"]["dev_acc_per_seed"]
    assert len(saved["pretrained"]["runs"]) == len(saved["random"]["runs"]) == 2
    assert saved["pretrained"]["runs"][0]["best_epoch"] == 1 and saved["random"]["batch_size"] == 4


@pytest.mark.parametrize("case", ["no_checkpoint", "vocab_mismatch", "no_dataset", "no_blimp"])
def test_errors_are_one_clear_line(tiny_run, tmp_path, monkeypatch, capsys, case):
    run, _ = tiny_run
    argv = ["--checkpoint", str(run), "--quick"]
    if case == "no_checkpoint":
        argv[1] = str(tmp_path / "nowhere")
    elif case == "vocab_mismatch":
        (tmp_path / "big_vocab.txt").write_text((FIX / "eval_vocab.txt").read_text(encoding="utf-8") + "extra\n",
                                               encoding="utf-8")
        argv += ["--vocab", str(tmp_path / "big_vocab.txt")]
    elif case == "no_blimp":                               # refused at once, before the other parts run
        shutil.rmtree(tmp_path / "data" / "blimp")
        monkeypatch.setattr(download, "REPO", tmp_path / "repo")
    else:
        monkeypatch.setenv("MINIBERT_DATA_DIR", str(tmp_path / "empty"))
        monkeypatch.setattr(download, "REPO", tmp_path / "repo")
    with pytest.raises(SystemExit):
        evaluate.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert {"no_checkpoint": "--checkpoint", "vocab_mismatch": "--vocab", "no_dataset": "download",
            "no_blimp": "python data.py download blimp"}[case] in err[0]
    if case == "no_blimp":
        assert "--skip blimp" in err[0] and not (run / "eval").exists()      # nothing ran


def test_overfit_only_needs_no_blimp(tiny_run, tmp_path, monkeypatch):
    run, _ = tiny_run
    shutil.rmtree(tmp_path / "data" / "blimp")
    monkeypatch.setattr(download, "REPO", tmp_path / "repo")
    curve = evaluate.main(["--checkpoint", str(run), "--overfit_one_batch"])["overfit"]
    assert len(curve) == 151


def test_read_train_log_when_last_row_is_a_heldout_eval(tmp_path):
    """train.py ends metrics.jsonl with an eval-only row (no 'loss'): the train fields come from the last
    step row, the held-out fields from the last eval row."""
    from evaluate import read_train_log
    rows = [{"step": 10, "loss": 6.5, "tokens": 100, "elapsed_s": 1.0},
            {"step": 20, "loss": 6.25, "tokens": 200, "elapsed_s": 2.0, "val_loss": 6.3, "val_acc": 0.1, "val_ppl": 544.6},
            {"step": 20, "val_loss": 6.2, "val_acc": 0.15, "val_ppl": 492.7}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    tl = read_train_log(tmp_path / "metrics.jsonl")
    assert (tl["step"], tl["loss"], tl["tokens"]) == (20, 6.25, 200)
    assert (tl["val_step"], tl["val_loss"], tl["val_acc"]) == (20, 6.2, 0.15)
