"""Each metric against a hand-computed case (the same cases `python metrics.py --test` prints), plus
properties that must hold for any input, and the plot helpers writing a PNG."""
import math

import numpy as np
import pytest

import metrics


@pytest.mark.parametrize("name,got,want", metrics.hand_cases(), ids=[c[0] for c in metrics.hand_cases()])
def test_hand_case(name, got, want):
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_cross_entropy_matches_mlm_loss():
    from mlm import mlm_loss
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11)) * 3
    labels = rng.integers(0, 11, size=(2, 5)); labels[0, 1] = labels[1, 3] = -100
    assert metrics.masked_cross_entropy(logits, labels) == pytest.approx(mlm_loss(logits, labels)[0], rel=1e-12)


def test_cka_invariances():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6))
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert metrics.linear_cka(X, 3.0 * X @ Q) == pytest.approx(1.0, rel=1e-10)
    assert 0.0 <= metrics.linear_cka(X, rng.normal(size=(50, 4))) < 0.5


def test_attention_entropy_bounds():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(7), size=(2, 3, 7))               # (B, A, T, T) rows sum to 1
    ent = metrics.attention_entropy([p, p])
    assert ent.shape == (2, 3) and np.all(ent >= 0) and np.all(ent <= math.log(7) + 1e-12)


def test_effective_rank_and_diversity_ranges():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 8))
    assert 1.0 <= metrics.effective_rank(X) <= 8.0
    assert metrics.token_diversity(np.ones((5, 3))) == pytest.approx(1.0)
    assert abs(metrics.token_diversity(rng.normal(size=(400, 64)))) < 0.05


def test_grad_norm_groups():
    g = {"emb.tok": np.ones((2, 2)), "layer0.attn.Wq": np.ones(4), "layer0.ffn.b1": np.zeros(3), "mlm.bias": np.ones(1)}
    total, groups = metrics.grad_norms(g)
    assert list(groups) == ["emb", "layer0", "mlm"]
    assert groups["layer0"] == pytest.approx(2.0) and total == pytest.approx(3.0)


def test_layer_cka_on_tiny_model():
    cfg_mod = pytest.importorskip("config")
    model_mod = pytest.importorskip("model")
    cfg = cfg_mod.get_config("tiny")
    ids = np.arange(2 * cfg.max_position_embeddings).reshape(2, -1) % cfg.vocab_size
    mask = np.ones_like(ids); mask[1, -3:] = 0
    _, cache = model_mod.MiniBERT(cfg, seed=0).encode(ids, attention_mask=mask)
    cka = metrics.layer_cka(cache["hidden_states"], mask)
    assert cka.shape == (cfg.num_hidden_layers + 1,) * 2
    np.testing.assert_allclose(np.diag(cka), 1.0, rtol=1e-5)
    np.testing.assert_allclose(cka, cka.T, rtol=1e-5)
    ent = metrics.attention_entropy(cache["attn_probs"], mask)
    assert ent.shape == (cfg.num_hidden_layers, cfg.num_attention_heads)


def test_plots_write_png(tmp_path):
    rng = np.random.default_rng(0)
    metrics.plot_attention_grid([rng.dirichlet(np.ones(3), (2, 3))], ["[CLS]", "hi", "[SEP]"], tmp_path / "a.png")
    metrics.plot_gradient_flow({"emb": 0.1, "layer0": 0.2}, tmp_path / "g.png")
    metrics.plot_probe_by_layer({"trained": [0.5, 0.6]}, tmp_path / "p.png", {"majority": 0.2})
    metrics.plot_weight_norms([1, 2], [{"emb": 1.0}, {"emb": 1.1}], tmp_path / "w.png")
    for f in "agpw":
        assert (tmp_path / f"{f}.png").stat().st_size > 1000
