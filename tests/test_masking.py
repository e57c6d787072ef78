"""mlm.mask_tokens: BERT's 80/10/10 proportions (statistically), specials and padding never selected,
whole words masked together, fresh masks per call; mlm.word_ids_from_ids on packed rows."""
import numpy as np
import pytest

from mlm import IGNORE_INDEX, mask_tokens, word_ids_from_ids

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
