"""mlm.mask_tokens: BERT's 80/10/10 proportions (statistically), specials and padding never selected,
whole words masked together, fresh masks per call; mlm.word_ids_from_ids on packed rows; the fill-mask
demo (mlm.fill_mask, `python mlm.py --checkpoint`) on a tiny checkpoint, and its one-line errors."""
import json
from pathlib import Path

import numpy as np
import pytest

import mlm
from config import get_config
from mlm import IGNORE_INDEX, mask_tokens, word_ids_from_ids
from model import MiniBERT
from tokenizer import WordPieceTokenizer

V = 50
SPECIALS = [0, 1, 2, 3, 4]          # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID = 4


def packed_like(rng, B=32, T=64, pad_tail=True):  # -> (B, T) rows [CLS] ... [SEP] [PAD]*
    ids = rng.integers(5, V, size=(B, T))
    ids[:, 0] = 2
    ids[:, -1] = 3
    ids[:, 20] = 3                                       # a document boundary inside the row
    if pad_tail:
        ids[::4, -8:] = 0                                # some rows padded
    ids[1, 5] = 1                                        # an [UNK]
    return ids


def z_score(count, n, p):
    return (count - n * p) / np.sqrt(n * p * (1 - p))


def test_proportions_80_10_10():
    """selected ~ Bin(n_candidates, 0.15); among selected: [MASK] ~ 0.8; a random token equal to the
    original happens with prob 0.1/|allowed|, so 'unchanged' ~ 0.1 + 0.1/45 and 'changed' ~ 0.1 - 0.1/45."""
    rng = np.random.default_rng(0)
    n_cand = sel = msk = keep = rnd = 0
    allowed = V - len(SPECIALS)
    for _ in range(200):
        ids = packed_like(rng)
        inp, labels = mask_tokens(ids, rng, V, SPECIALS)
        s = labels != IGNORE_INDEX
        n_cand += int((~np.isin(ids, SPECIALS)).sum())
        sel += int(s.sum())
        msk += int((inp[s] == MASK_ID).sum())
        keep += int((inp[s] == ids[s]).sum())
        rnd += int(((inp[s] != ids[s]) & (inp[s] != MASK_ID)).sum())
    assert abs(z_score(sel, n_cand, 0.15)) < 4
    assert abs(z_score(msk, sel, 0.8)) < 4
    assert abs(z_score(keep, sel, 0.1 + 0.1 / allowed)) < 4
    assert abs(z_score(rnd, sel, 0.1 - 0.1 / allowed)) < 4
    assert msk + keep + rnd == sel


def test_specials_and_padding_never_selected_and_labels():
    rng = np.random.default_rng(1)
    for _ in range(50):
        ids = packed_like(rng)
        inp, labels = mask_tokens(ids, rng, V, SPECIALS, mask_prob=0.9)
        special = np.isin(ids, SPECIALS)
        assert np.all(labels[special] == IGNORE_INDEX)
        assert np.all(inp[special] == ids[special])                      # specials untouched
        s = labels != IGNORE_INDEX
        assert np.all(labels[s] == ids[s])                               # labels hold the original ids
        assert np.all(inp[~s] == ids[~s])                                # nothing else changes
        assert not np.isin(inp[s & (inp != MASK_ID)], SPECIALS).any()    # random tokens are never special
        assert inp.dtype == np.int64 and labels.dtype == np.int64 and inp.shape == ids.shape


def test_dynamic_fresh_mask_per_call_and_deterministic_for_a_seed():
    ids = packed_like(np.random.default_rng(2))
    rng = np.random.default_rng(3)
    a = mask_tokens(ids, rng, V, SPECIALS)[1]
    b = mask_tokens(ids, rng, V, SPECIALS)[1]
    assert not np.array_equal(a, b)
    c = mask_tokens(ids, np.random.default_rng(3), V, SPECIALS)[1]
    assert np.array_equal(a, c)
    x = ids.copy()
    mask_tokens(ids, rng, V, SPECIALS)
    assert np.array_equal(ids, x)                                        # input not modified


def test_one_dimensional_input():
    ids = packed_like(np.random.default_rng(4))[0]
    inp, labels = mask_tokens(ids, np.random.default_rng(0), V, SPECIALS, mask_prob=0.5)
    assert inp.shape == labels.shape == ids.shape


def test_word_ids_from_ids_on_a_packed_row():
    cont = np.zeros(V, dtype=bool)
    cont[40:] = True                                      # ids >= 40 play '##' pieces
    #            CLS  ##x  a   ##b ##c  SEP  d   e   ##f  SEP
    ids = np.array([[2, 41, 10, 42, 43, 3, 11, 12, 44, 3]])
    w = word_ids_from_ids(ids, cont, SPECIALS)
    assert w.tolist() == [[-1, 0, 1, 1, 1, -1, 2, 3, 3, -1]]   # cut word at the row start is its own word


def test_whole_word_masks_all_pieces_together():
    rng = np.random.default_rng(5)
    cont = np.zeros(V, dtype=bool)
    cont[35:] = True
    n_words = n_sel_words = 0
    for _ in range(100):
        ids = packed_like(rng)
        w = word_ids_from_ids(ids, cont, SPECIALS)
        inp, labels = mask_tokens(ids, rng, V, SPECIALS, whole_word=True, word_ids=w)
        s = labels != IGNORE_INDEX
        assert not s[w < 0].any()
        for b in range(ids.shape[0]):
            for k in range(w[b].max() + 1):
                pieces = s[b, w[b] == k]
                assert pieces.all() or not pieces.any()                  # all pieces or none
                n_words += 1
                n_sel_words += int(pieces.all())
    assert abs(z_score(n_sel_words, n_words, 0.15)) < 4


def test_whole_word_needs_word_ids():
    with pytest.raises(ValueError, match="word_ids"):
        mask_tokens(np.array([[2, 7, 3]]), np.random.default_rng(0), V, SPECIALS, whole_word=True)


# ---- fill-mask ----

FIX = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def tiny_ckpt(tmp_path):
    """A tiny random checkpoint + its vocab + a run.json with the vocab's hash, as train.py writes them."""
    tok = WordPieceTokenizer(FIX.joinpath("eval_vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
                             + ["capital", "of", "france", "paris"])
    run = tmp_path / "run"
    run.mkdir()
    tok.save(run / "vocab.txt")
    MiniBERT(get_config("tiny", vocab_size=tok.vocab_size, max_position_embeddings=12), seed=0).save(run / "best.npz")
    (run / "run.json").write_text(json.dumps({"vocab_file": str(run / "vocab.txt"), "vocab_hash": tok.vocab_hash()}),
                                  encoding="utf-8")
    return run, tok


def test_fill_mask_gives_the_softmax_at_each_mask(tiny_ckpt):
    run, tok = tiny_ckpt
    model = MiniBERT.load(run / "best.npz")
    ids, results = mlm.fill_mask(model, tok, "the capital of france is [MASK] , [MASK] .", top_k=4)
    assert [tok.ids_to_tokens[i] for i in ids] == ["[CLS]", "the", "capital", "of", "france", "is", "[MASK]",
                                                   "[UNK]", "[MASK]", ".", "[SEP]"]   # [MASK] kept whole
    logits, _ = model.forward(np.array([ids]))                      # all positions, no mlm_mask path
    z = logits[0].astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert [pos for pos, _ in results] == [6, 8]
    for pos, top in results:
        assert len(top) == 4
        probs = [q for _, q in top]
        assert probs == sorted(probs, reverse=True)
        best = np.argsort(-p[pos])[:4]
        assert [piece for piece, _ in top] == [tok.ids_to_tokens[i] for i in best]
        np.testing.assert_allclose(probs, p[pos, best], rtol=1e-5)


def test_fill_mask_command_prints_top_k_per_mask(tiny_ckpt, capsys):
    run, _ = tiny_ckpt
    mlm.main(["--checkpoint", str(run), "--top-k", "3", "the cat [MASK] on the [MASK] ."])
    lines = capsys.readouterr().out.splitlines()
    pieces = set((run / "vocab.txt").read_text(encoding="utf-8").split())
    assert lines[0].startswith(f"checkpoint {run / 'best.npz'} | 2 layers")
    assert lines[1] == "input: [CLS] the cat [MASK] on the [MASK] . [SEP]"
    assert lines[2] == "[MASK] 1 of 2 (position 3):" and lines[6] == "[MASK] 2 of 2 (position 6):"
    for line in lines[3:6] + lines[7:10]:
        rank, piece, prob = line.split()
        assert rank in ("1.", "2.", "3.") and piece in pieces and 0.0 < float(prob) < 1.0
    assert len(lines) == 10


@pytest.mark.parametrize("case, needle", [("no_mask", "no [MASK]"), ("lower_case", "capitals"),
                                          ("no_checkpoint", "--checkpoint"), ("vocab_size", "--vocab"),
                                          ("vocab_hash", "--vocab"), ("too_long", "shorten"), ("no_text", "[MASK]"),
                                          ("top_k", "--top-k")])
def test_fill_mask_errors_are_one_line(tiny_ckpt, tmp_path, capsys, case, needle):
    run, tok = tiny_ckpt
    argv = ["--checkpoint", str(run), "the cat [MASK] ."]
    if case == "no_mask":
        argv[-1] = "the cat sat ."
    elif case == "lower_case":
        argv[-1] = "the cat [mask] ."
    elif case == "no_checkpoint":
        argv[1] = str(tmp_path / "nowhere")
    elif case == "vocab_size":
        (tmp_path / "big.txt").write_text("\n".join(tok.ids_to_tokens + ["extra"]) + "\n", encoding="utf-8")
        argv += ["--vocab", str(tmp_path / "big.txt")]
    elif case == "vocab_hash":                                       # same size, another vocab
        (tmp_path / "other.txt").write_text("\n".join(tok.ids_to_tokens[:-1] + ["london"]) + "\n", encoding="utf-8")
        argv += ["--vocab", str(tmp_path / "other.txt")]
    elif case == "too_long":
        argv[-1] = "the cat " * 6 + "[MASK]"
    elif case == "no_text":
        argv = argv[:2]
    else:
        argv += ["--top-k", "0"]
    with pytest.raises(SystemExit):
        mlm.main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0] and captured.out == ""


def test_plain_demo_still_runs(capsys):
    mlm.main([])
    assert "loss 2.564949 | ln(V) 2.564949" in capsys.readouterr().out
