"""BLiMP minimal pairs on tiny fixtures written here: the batched pseudo-log-likelihood equals a copy-by-copy
loop and does not depend on batching or padding, a tiny model trained on one sentence prefers it to its
scrambled twin (the random-init model does not), the unigram control and the field means match hand
computations, and blimp.py runs end to end (or stops with one line naming the download). A few seconds."""
import json
import math

import numpy as np
import pytest

import blimp
import download
import mlm
from config import get_config
from gradients import backward
from model import MiniBERT
from optimizer import AdamW
from tokenizer import WordPieceTokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the cat sat on mat dog ran .".split()                      # 5 specials + 8 words = V 13, as in `tiny`
GOOD, BAD = "The cat sat on the mat.", "The mat sat on the cat."    # the same pieces: the unigram prior ties
MASK_ID = 4
CONFIG = get_config("tiny", max_position_embeddings=10)             # GOOD is 9 pieces with [CLS] and [SEP]


def rand_model(seed=0, dtype=np.float64):
    """A tiny model with weights far from the init (std 0.5), so that the log-probabilities differ a lot."""
    model = MiniBERT(get_config("tiny"), seed=seed)
    rng = np.random.default_rng(seed)
    model.params = {k: ((1 + 0.1 * rng.standard_normal(v.shape)) if k.endswith("gamma") else
                        0.5 * rng.standard_normal(v.shape)).astype(dtype) for k, v in model.params.items()}
    return model


def random_seqs(rng, n, lo=3, hi=8):
    """n sequences [CLS] w_1 .. w_k [SEP], k + 2 in [lo, hi], words from ids 5..12."""
    return [[2] + rng.integers(5, 13, size=L - 2).tolist() + [3] for L in rng.integers(lo, hi + 1, size=n)]


def brute_force_pll(model, seq):
    """sum_i log softmax(logits at i)[w_i], one forward per masked copy, all positions' logits, float64."""
    total = 0.0
    for i in range(1, len(seq) - 1):
        ids = np.array([seq])                                        # (1, T)
        ids[0, i] = MASK_ID
        z = model.forward(ids)[0][0, i].astype(np.float64)          # (V,)
        total += z[seq[i]] - z.max() - np.log(np.exp(z - z.max()).sum())
    return total


# ---- pseudo-log-likelihood ----

def test_pll_equals_a_copy_by_copy_loop():
    rng = np.random.default_rng(0)
    model = rand_model()
    seqs = random_seqs(rng, 12)
    got = mlm.pseudo_log_likelihood(model, seqs, MASK_ID, max_tokens=20)
    want = np.array([brute_force_pll(model, s) for s in seqs])
    assert np.all(want < -0.1)                                       # far from a trivial 0
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_pll_batches_cover_every_row_within_the_budget():
    lengths = np.sort(np.random.default_rng(1).integers(3, 40, size=500))
    for budget in (1, 50, 256, 10_000):
        batches = mlm.pll_batches(lengths, budget)
        assert [a for a, _ in batches] == [0] + [b for _, b in batches[:-1]] and batches[-1][1] == len(lengths)
        assert all(b - a == 1 or (b - a) * lengths[b - 1] <= budget for a, b in batches)
    assert len(mlm.pll_batches(lengths, 10_000)) < len(mlm.pll_batches(lengths, 256))


def test_pll_does_not_depend_on_batching_or_padding():
    """One copy per batch (no padding) vs all copies in one batch (lengths 3..8, so short copies are padded):
    the same scores, float32. Were the padding attended, the scores would move (checked on one copy)."""
    from workers import Workers
    rng = np.random.default_rng(2)
    model = rand_model(dtype=np.float32)
    seqs = random_seqs(rng, 20)
    alone = mlm.pseudo_log_likelihood(model, seqs, MASK_ID, max_tokens=1)
    lens = np.sort(np.repeat([len(s) for s in seqs], [len(s) - 2 for s in seqs]))
    assert len(mlm.pll_batches(lens, 10_000)) == 1 and lens[0] < lens[-1]   # one batch, padded rows
    together = mlm.pseudo_log_likelihood(model, seqs, MASK_ID, max_tokens=10_000)
    np.testing.assert_allclose(together, alone, rtol=2e-5)
    w = Workers(2, 1)
    try:                                                             # worker threads: the very same sums
        assert np.array_equal(mlm.pseudo_log_likelihood(model, seqs, MASK_ID, max_tokens=20, map_fn=w.map),
                              mlm.pseudo_log_likelihood(model, seqs, MASK_ID, max_tokens=20))
    finally:
        w.close()
    seen = []                                                        # the batches run: identical sequences once
    counting = lambda f, xs: [seen.append(b - a) or f((a, b)) for a, b in xs]
    dup = mlm.pseudo_log_likelihood(model, seqs + [list(seqs[3]), seqs[0]], MASK_ID, max_tokens=20, map_fn=counting)
    assert sum(seen) == sum(len(s) - 2 for s in {tuple(s) for s in seqs})
    assert dup[-2] == dup[3] and dup[-1] == dup[0]
    short = next(s for s in seqs if len(s) < 8)
    ids = np.array([short + [0] * (8 - len(short))])                 # padded to 8, [MASK] at 1
    ids[0, 1] = MASK_ID
    keep = (np.arange(8) < len(short))[None]
    z_masked = model.forward(ids, attention_mask=keep)[0][0, 1]
    z_attended = model.forward(ids)[0][0, 1]
    assert np.abs(z_masked - z_attended).max() > 1e-3


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("blimp_vocab")
    (d / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n", encoding="utf-8")
    return WordPieceTokenizer.load(d / "vocab.txt")


@pytest.fixture(scope="module")
def trained(tok):
    """The tiny model after 150 AdamW steps of MLM on one sentence, repeated: it has learned GOOD by heart."""
    ids = tok.encode(GOOD)                                           # [CLS] the cat sat on the mat . [SEP]
    assert len(ids) == 9 and tok.unk_id not in ids
    model = MiniBERT(CONFIG, seed=0)
    opt = AdamW(model.params, lr=1e-2, weight_decay=0.0)
    rng = np.random.default_rng(0)
    batch = np.tile(ids, (16, 1))                                    # (16, 9)
    for _ in range(150):
        inp, labels = mlm.mask_tokens(batch, rng, tok.vocab_size, tok.special_ids, mask_prob=0.3, mask_id=MASK_ID)
        sel = labels != -100
        logits, cache = model.forward(inp, mlm_mask=sel)
        _, dlogits = mlm.mlm_loss(logits, labels[sel])
        opt.step(backward(model, cache, dlogits))
    return model


def test_trained_model_prefers_the_good_sentence_and_the_controls_do_not(tok, trained):
    seqs = [tok.encode(GOOD), tok.encode(BAD)]
    assert sorted(seqs[0]) == sorted(seqs[1]) and seqs[0] != seqs[1]   # same pieces, another order
    good, bad = mlm.pseudo_log_likelihood(trained, seqs, MASK_ID)
    assert good - bad > 3.0                                          # nats; ~10 after 150 steps
    g0, b0 = mlm.pseudo_log_likelihood(MiniBERT(CONFIG, seed=0), seqs, MASK_ID)
    assert abs(g0 - b0) < 0.5                                        # before training: no preference to speak of
    logp = np.log(np.full(tok.vocab_size, 1 / tok.vocab_size))
    uni = blimp.unigram_scores(seqs, logp)
    assert uni[0] == uni[1] and blimp.pair_credit(uni[:1], uni[1:]) == 0.5   # an exact tie counts half


# ---- controls and aggregation by hand ----

def test_unigram_control_by_hand():
    tokens = np.array([5, 5, 5, 6, 2, 3, 0], dtype=np.uint16)        # counts: 5 -> 3, 6 -> 1, 7 -> 0, specials 0
    logp = blimp.unigram_log_probs(tokens, 8, [0, 1, 2, 3, 4])
    total = 4 + 0.5 * 8                                              # sum_v (count[v] + 0.5)
    np.testing.assert_allclose(logp[[5, 6, 7, 2]], np.log(np.array([3.5, 1.5, 0.5, 0.5]) / total), rtol=1e-7)
    assert math.isclose(np.exp(logp).sum(), 1.0, rel_tol=1e-12)      # (mlm.log_prior is float32: rtol 1e-7)
    seqs = [[2, 5, 6, 3], [2, 6, 5, 3], [2, 7, 3], [2, 5, 5, 5, 3]]
    want = [math.log(3.5 / 8) + math.log(1.5 / 8), None, math.log(0.5 / 8), 3 * math.log(3.5 / 8)]
    want[1] = want[0]
    got = blimp.unigram_scores(seqs, logp)
    np.testing.assert_allclose(got, want, rtol=1e-7)
    assert got[0] == got[1]                                          # exactly: fsum ignores the order
    assert blimp.pair_credit(got[[0, 2, 3]], got[[1, 0, 2]]).tolist() == [0.5, 0.0, 1.0]


def test_fields_and_overall_are_means_over_paradigms():
    paradigms = [{"uid": "a", "field": "morphology"}, {"uid": "b", "field": "morphology"},
                 {"uid": "c", "field": "syntax"}, {"uid": "d", "field": "semantics"}]
    par = np.array([0, 0, 0, 0, 1, 1, 2, 2])                         # d: every pair left out
    credit = np.array([1, 1, 1, 1, 0, 0.5, 1, 0])
    s = blimp.summarize(paradigms, par, credit)
    assert s["paradigms"] == {"a": 1.0, "b": 0.25, "c": 0.5}
    assert s["fields"] == {"morphology": 0.625, "syntax": 0.5}      # field order as in blimp.FIELDS
    assert math.isclose(s["overall"], (1 + 0.25 + 0.5) / 3)         # not the pair mean 5.5 / 8


# ---- blimp.py end to end ----

def write_paradigm(folder, uid, field, pairs):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"sentence_good": g, "sentence_bad": b, "field": field, "UID": uid, "linguistics_term": "t",
             "pairID": str(i)} for i, (g, b) in enumerate(pairs)]
    (folder / f"{uid}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def run(tmp_path, tok, trained):
    """A run folder as train.py leaves it (best.npz, vocab, run.json naming its prepared corpus) and BLiMP files."""
    import data
    run = tmp_path / "run"
    run.mkdir()
    trained.save(run / "best.npz")
    (run / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n", encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat.\n\nthe dog ran.\n", encoding="utf-8")
    data.prepare(corpus, run / "vocab.txt", tmp_path / "cache", num_workers=1, verbose=False)
    (run / "run.json").write_text(json.dumps({"corpus": str(corpus), "args": {"cache_dir": str(tmp_path / "cache")}}),
                                  encoding="utf-8")
    blimp_dir = tmp_path / "data" / "blimp"
    write_paradigm(blimp_dir, "learned_order", "syntax", [(GOOD, BAD), (GOOD, BAD)])
    write_paradigm(blimp_dir, "other_words", "morphology", [("The dog ran.", "The dog mat."),
                                                            ("The cat ran.", "Cat the ran."),
                                                            ("The dog sat.", "The dog sat on the on the.")])
    return run, tmp_path / "data"


def test_blimp_main_end_to_end(run, capsys):
    run_dir, data_dir = run
    res = blimp.main(["--checkpoint", str(run_dir), "--data-dir", str(data_dir), "--threads", "1"])
    out = capsys.readouterr().out.strip().splitlines()
    assert res["model"]["paradigms"]["learned_order"] == 1.0         # both pairs right
    assert res["unigram"]["paradigms"]["learned_order"] == 0.5       # ties: the same pieces
    assert set(res["model"]["fields"]) == set(res["random init"]["fields"]) == {"syntax", "morphology"}
    assert list(res["model"]["fields"]) == ["morphology", "syntax"]
    for name in blimp.MODELS:
        r = res[name]
        assert math.isclose(r["overall"], np.mean(list(r["paradigms"].values())))
    info = res["info"]
    assert info["pairs"] == 5 and info["pairs_left_out_longer_than_T"] == 0 and info["ties"]["unigram"] >= 2
    assert "the run's training corpus" in info["unigram_prior_counts"]
    saved = json.loads((run_dir / "eval" / "blimp_results.json").read_text(encoding="utf-8"))
    assert saved["model"] == res["model"] and (run_dir / "eval" / "blimp_by_field.png").is_file()
    assert any(l.startswith("anchors (BLiMP paper, overall %): 5-gram 61.2 | LSTM 69.8") for l in out)
    assert out[-1].startswith("BLiMP overall ") and "(mean over 2 paradigms, 5 pairs)" in out[-1]
    res1 = blimp.main(["--checkpoint", str(run_dir), "--data-dir", str(data_dir), "--pairs-per-paradigm", "1",
                       "--random-init-pairs", "1", "--threads", "2", "--out", str(run_dir / "one")])
    assert res1["info"]["pairs"] == 2 and res1["model"]["paradigms"]["learned_order"] == 1.0


def test_long_pairs_are_left_out_and_counted(run, capsys):
    run_dir, data_dir = run
    write_paradigm(data_dir / "blimp", "too_long", "semantics",
                   [("the cat sat on the mat and the dog ran.", "the cat.")])   # 13 pieces > T = 10
    res = blimp.main(["--checkpoint", str(run_dir), "--data-dir", str(data_dir), "--threads", "1"])
    assert res["info"]["pairs_left_out_longer_than_T"] == 1 and "too_long" not in res["model"]["paradigms"]
    assert "semantics" not in res["model"]["fields"]


def test_missing_data_names_the_download(run, tmp_path, monkeypatch, capsys):
    run_dir, _ = run
    monkeypatch.setenv("MINIBERT_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(download, "REPO", tmp_path / "repo")        # <repo>/data holds no blimp either
    with pytest.raises(SystemExit):
        blimp.main(["--checkpoint", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "python data.py download blimp" in err[0]
