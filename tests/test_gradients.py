"""Finite-difference checks (float64) of every backward in gradients.py, and of the whole model on `tiny`.

Primitives: max relative error <= 1e-8. Composite layers and the whole model: <= 1e-6 at sampled
coordinates (the key bias bk has an analytically zero gradient: checked in absolute terms).
"""
import numpy as np
import pytest

import gradcheck as gc
import gradients as G
import model as M

SHAPES = [(4,), (2, 3)]   # leading shapes: a 2-D and a 3-D input


@pytest.mark.parametrize("shape", SHAPES)
def test_linear_backward(shape):
    assert gc.check_linear(shape) <= 1e-8


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_backward(shape):
    assert gc.check_layernorm(shape) <= 1e-8


@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_backward(shape):
    assert gc.check_gelu(shape) <= 1e-8


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_backward(shape):
    assert gc.check_relu(shape) <= 1e-8


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_backward(shape):
    assert gc.check_softmax(shape) <= 1e-8


@pytest.mark.parametrize("shape", SHAPES)
def test_dropout_backward(shape):
    assert gc.check_dropout(shape) <= 1e-8


def test_dropout_backward_is_identity_in_eval():
    x = np.arange(6.0).reshape(2, 3)
    out, cache = M.dropout_forward(x, 0.5, None)
    assert out is x and cache is None and G.dropout_backward(x, cache) is x


@pytest.mark.parametrize("shape", SHAPES)
def test_residual_backward(shape):
    assert gc.check_residual(shape) <= 1e-8


@pytest.mark.parametrize("shape", SHAPES)
def test_embedding_backward(shape):
    assert gc.check_embedding(shape) <= 1e-8


def test_embedding_backward_adds_into_given_gradient():
    """dW= (the tied decoder's gradient): the scatter-add lands in it, same sum as zeros + scatter + dW."""
    r = np.random.default_rng(0)
    W, ids = r.standard_normal((7, 3)), r.integers(0, 7, size=(4, 5))
    out, cache = M.embedding_forward(ids, W)
    dout, dW_other = r.standard_normal(out.shape), r.standard_normal(W.shape)
    expected = G.embedding_backward(dout, cache) + dW_other
    np.testing.assert_allclose(G.embedding_backward(dout, cache, dW_other.copy()), expected, rtol=1e-13, atol=1e-13)


def test_attention_backward():
    assert gc.check_attention(p_drop=0.0) <= 1e-8
    assert gc.check_attention(p_drop=0.2) <= 1e-8          # dropout on the probabilities, fixed rng


def test_embeddings_backward():
    assert gc.check_embeddings() <= 1e-6


def test_attention_sublayer_backward():
    assert gc.check_attention_sublayer() <= 1e-6


def test_attention_sublayer_backward_with_selected_rows():
    """The last layer's MLM path: queries at rows 0, 2 (sequence 0) and 4 (sequence 1), padded per sequence."""
    assert gc.check_attention_sublayer(rows=[0, 2, 4]) <= 1e-6


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_ffn_sublayer_backward(act):
    assert gc.check_ffn_sublayer(act=act) <= 1e-6


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_mlm_head_backward(act):
    assert gc.check_mlm_head(act=act) <= 1e-6


def test_mlm_loss_gradient():
    assert gc.check_mlm_loss() <= 1e-8


def _check_model(errors):
    for k, e in errors.items():
        assert e <= (1e-12 if k.endswith(".bk") else 1e-6), (k, e)


def test_backward_whole_model():
    """Every key of grads, padding in the batch, fixed mlm_mask, eval mode."""
    model = gc.tiny_model(seed=0)
    errors = gc.model_gradcheck(model, gc.tiny_batch(model.config), seed=0)
    assert set(errors) == set(model.params)
    _check_model(errors)


def test_backward_whole_model_with_dropout():
    """training=True: every finite-difference evaluation draws the same masks from default_rng(11)."""
    model = gc.tiny_model(seed=1, dropout=0.2)
    _check_model(gc.model_gradcheck(model, gc.tiny_batch(model.config, seed=1), dropout_seed=11, seed=1))


def test_backward_whole_model_relu():
    model = gc.tiny_model(seed=3, act="relu")     # a seed whose sampled coordinates stay off relu's kinks
    _check_model(gc.model_gradcheck(model, gc.tiny_batch(model.config, seed=3), seed=3))


def test_encoder_backward():
    model = gc.tiny_model(seed=3, dropout=0.1)
    errors = gc.model_gradcheck(model, gc.tiny_batch(model.config, seed=3), dropout_seed=5, seed=3,
                                encoder_only=True)
    assert set(errors) == {k for k in model.params if not k.startswith("mlm.")}
    _check_model(errors)


def test_backward_keys_shapes_dtypes_float32():
    model = M.MiniBERT(gc.get_config("tiny"), seed=0)
    ids, am, mm, labels = gc.tiny_batch(model.config)
    for mlm_mask in (None, mm):
        logits, cache = model.forward(ids, am, mlm_mask)
        y = labels if mlm_mask is not None else np.where(am == 1, ids, -100)
        grads = G.backward(model, cache, gc.mlm_loss(logits, y)[1])
        assert list(grads) == list(model.params)
        for k, a in model.params.items():
            assert grads[k].shape == a.shape and grads[k].dtype == np.float32, k


def test_masked_path_gradients_equal_full_path():
    """Running the last FFN + head on the masked rows only is exact: same grads as the full (B, T, V) path."""
    model = gc.tiny_model(seed=4)
    ids, am, mm, labels = gc.tiny_batch(model.config, seed=4)
    logits, cache = model.forward(ids, am, mm)
    g_masked = G.backward(model, cache, gc.mlm_loss(logits, labels)[1])
    full_labels = np.full(ids.shape, -100)
    full_labels[mm] = labels
    logits, cache = model.forward(ids, am)
    g_full = G.backward(model, cache, gc.mlm_loss(logits, full_labels)[1])
    for k in model.params:
        np.testing.assert_allclose(g_masked[k], g_full[k], rtol=1e-10, atol=1e-14, err_msg=k)


def test_gradients_main_prints_table(capsys):
    G.main([])
    out = capsys.readouterr().out
    assert "layernorm" in out and out.strip().endswith("all ok")


def test_blocked_gelu_equals_the_formula_across_block_edges():
    """gelu_forward/backward run in blocks of model.BLOCK elements: an array of 2.5 blocks, float64, must give
    the one-pass formulas exactly (up to rounding), at every block edge included."""
    import model as M
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, M.BLOCK // 2)) * 3                 # 2.5 blocks
    dout = rng.standard_normal(x.shape)
    out, cache = M.gelu_forward(x)
    phi = 0.5 * (1 + np.tanh(M.GELU_C * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(out, x * phi, rtol=1e-13, atol=1e-15)
    dx = G.gelu_backward(dout, cache)
    dudx = M.GELU_C * (1 + 3 * 0.044715 * x ** 2)
    np.testing.assert_allclose(dx, dout * (phi + x * 2 * phi * (1 - phi) * dudx), rtol=1e-12, atol=1e-14)


def test_blocked_mlm_loss_equals_the_formula_across_blocks():
    """mlm_loss works on blocks of rows (mlm.BLOCK_ELEMENTS logits): with 3.5 blocks of rows, float64, the loss
    and dlogits equal the one-pass softmax cross-entropy, with and without overwrite."""
    import mlm
    V = 512
    n = 7 * mlm.BLOCK_ELEMENTS // (2 * V)                            # 3.5 blocks of rows
    rng = np.random.default_rng(4)
    z = rng.standard_normal((n, V)) * 4
    y = rng.integers(0, V, n)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    want = np.exp(logp)
    want[np.arange(n), y] -= 1
    want /= n
    for overwrite in (False, True):
        zz = z.copy()
        loss, dz = mlm.mlm_loss(zz, y, overwrite=overwrite)
        assert abs(loss - (-logp[np.arange(n), y].mean())) < 1e-12
        np.testing.assert_allclose(dz, want, rtol=1e-11, atol=1e-15)
        assert (dz is zz or np.shares_memory(dz, zz)) == overwrite  # overwrite: dlogits in the logits' array
