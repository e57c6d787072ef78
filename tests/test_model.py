"""Semantics of model.py: shapes and cache, padding, batch independence, positions, dtype, dropout,
the masked-rows path, save/load, bad input, the config table, loss at init and overfitting one batch."""
import fnmatch

import numpy as np
import pytest

import gradients as G
from config import activation_floats, get_config, param_table
from mlm import mlm_loss
from model import MiniBERT, to_hf_state_dict, HF_NAMES


def tiny(**overrides):
    return MiniBERT(get_config("tiny", **overrides), seed=0)


def batch(V, B=3, T=8, seed=0):
    r = np.random.default_rng(seed)
    ids = r.integers(5, V, size=(B, T))
    am = np.ones((B, T), np.int64)
    am[1, 5:] = 0
    am[2, 2:] = 0
    ids[am == 0] = 0
    return ids, am


def test_shapes_and_cache():
    model = tiny()
    c = model.config
    ids, am = batch(c.vocab_size)
    B, T = ids.shape
    logits, cache = model.forward(ids, am)
    assert logits.shape == (B, T, c.vocab_size)
    assert len(cache["hidden_states"]) == c.num_hidden_layers + 1
    assert all(h.shape == (B, T, c.hidden_size) for h in cache["hidden_states"])
    assert len(cache["attn_probs"]) == c.num_hidden_layers
    for p in cache["attn_probs"]:
        assert p.shape == (B, c.num_attention_heads, T, T)
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
        assert np.all(p[1, :, :, 5:] == 0) and np.all(p[2, :, :, 2:] == 0)   # padded keys get no attention
    h, ecache = model.encode(ids, am)
    np.testing.assert_array_equal(h, cache["hidden_states"][-1])
    assert all(a is not None for a in ecache["hidden_states"])


def test_masked_path_equals_full_path():
    model = tiny()
    ids, am = batch(model.config.vocab_size)
    mm = np.zeros(ids.shape, bool)
    mm[0, [1, 6]] = mm[1, 3] = mm[2, 0] = True
    full, _ = model.forward(ids, am)
    masked, cache = model.forward(ids, am, mm)
    assert masked.shape == (4, model.config.vocab_size)
    np.testing.assert_allclose(masked, full[mm], rtol=1e-5, atol=1e-6)          # row-major order of the True entries
    assert cache["hidden_states"][-1] is None and cache["hidden_states"][-2] is not None
    empty, _ = model.forward(ids, am, np.zeros(ids.shape, bool))
    assert empty.shape == (0, model.config.vocab_size)


def test_padding_does_not_change_real_positions():
    model = tiny()
    ids, am = batch(model.config.vocab_size)
    ids2 = ids.copy()
    ids2[am == 0] = np.random.default_rng(1).integers(5, model.config.vocab_size, size=int((am == 0).sum()))
    a, _ = model.forward(ids, am)
    b, _ = model.forward(ids2, am)
    real = am == 1
    np.testing.assert_allclose(a[real], b[real], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[~real], b[~real])


def test_samples_do_not_affect_each_other():
    model = tiny()
    ids, am = batch(model.config.vocab_size)
    together, _ = model.forward(ids, am)
    for b in range(ids.shape[0]):
        alone, _ = model.forward(ids[b:b + 1], am[b:b + 1])
        np.testing.assert_allclose(alone[0], together[b], rtol=1e-5, atol=1e-6)


def test_position_embeddings_broadcast_along_T():
    model = tiny()
    P, eps = model.params, model.config.layer_norm_eps
    ids = np.full((2, 5), 7)
    _, cache = model.forward(ids)
    h0 = cache["hidden_states"][0]
    x = P["emb.tok"][7] + P["emb.pos"][:5]                          # (T, H): row t gets E_pos[t]
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expect = (x - mu) / np.sqrt(var + eps) * P["emb.ln.gamma"] + P["emb.ln.beta"]
    np.testing.assert_allclose(h0[0], expect, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(h0[0], h0[1])                     # the same for every sample
    assert not np.allclose(h0[0, 0], h0[0, 1])                      # different for every position


def test_float32_default_and_float64_when_cast():
    model = MiniBERT(get_config("tiny", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1), seed=0)
    ids, am = batch(model.config.vocab_size)
    mm = am.astype(bool)
    for dtype in (np.float32, np.float64):
        model.params = {k: a.astype(dtype) for k, a in model.params.items()}
        logits, cache = model.forward(ids, am, mm, training=True, rng=np.random.default_rng(0))
        assert logits.dtype == dtype
        assert all(h.dtype == dtype for h in cache["hidden_states"][:-1])
        assert all(p.dtype == dtype for p in cache["attn_probs"])
        grads = G.backward(model, cache, mlm_loss(logits, ids[mm])[1])
        assert all(g.dtype == dtype for g in grads.values())
        assert _cache_dtypes(cache) == {np.dtype(dtype)}            # nothing upcast on the way


def _cache_float_arrays(cache):
    """Every float ndarray reachable through the cache's dicts, lists and tuples."""
    stack = [cache]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif isinstance(o, np.ndarray) and o.dtype.kind == "f":
            yield o


def _cache_dtypes(cache):
    return {a.dtype for a in _cache_float_arrays(cache)}


def test_backward_rejects_wrong_gradient_shapes():
    model = tiny()
    ids, am = batch(model.config.vocab_size)
    logits, cache = model.forward(ids, am, am.astype(bool))
    with pytest.raises(ValueError, match="dlogits"):
        G.backward(model, cache, np.zeros(ids.shape + (model.config.vocab_size,), np.float32))
    with pytest.raises(ValueError, match="encode"):
        G.encoder_backward(model, cache, np.zeros(ids.shape + (model.config.hidden_size,), np.float32))
    h, cache = model.encode(ids, am)
    with pytest.raises(ValueError, match="dh"):
        G.encoder_backward(model, cache, h[:, :-1])


def test_dropout_uses_the_rng_passed_in():
    model = MiniBERT(get_config("tiny", hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2), seed=0)
    ids, am = batch(model.config.vocab_size)
    run = lambda seed: model.forward(ids, am, training=True, rng=np.random.default_rng(seed))[0]
    np.testing.assert_array_equal(run(3), run(3))
    assert not np.allclose(run(3), run(4))
    eval_out = model.forward(ids, am)[0]
    np.testing.assert_array_equal(model.forward(ids, am, rng=np.random.default_rng(3))[0], eval_out)
    with pytest.raises(ValueError, match="rng"):
        model.forward(ids, am, training=True)


def test_loss_at_init_is_ln_V():
    model = MiniBERT(get_config("mini"), seed=0)
    V = model.config.vocab_size
    r = np.random.default_rng(0)
    ids = r.integers(5, V, size=(2, 64))
    mm = r.random(ids.shape) < 0.15
    logits, _ = model.forward(ids, mlm_mask=mm)
    loss, _ = mlm_loss(logits, ids[mm])
    assert abs(loss - np.log(V)) < 0.1


def test_tiny_overfits_one_batch():
    """loss < 0.05 within 300 AdamW steps (a minimal AdamW, as in optimizer.py)."""
    model = tiny()
    V = model.config.vocab_size
    r = np.random.default_rng(0)
    ids = r.integers(5, V, size=(4, 8))
    mm = r.random(ids.shape) < 0.3
    labels = ids[mm]
    inputs = np.where(mm, 4, ids)                                   # [MASK]
    m = {k: np.zeros_like(a) for k, a in model.params.items()}
    v = {k: np.zeros_like(a) for k, a in model.params.items()}
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-6
    for step in range(1, 301):
        logits, cache = model.forward(inputs, mlm_mask=mm)
        loss, dlogits = mlm_loss(logits, labels)
        if loss < 0.05:
            break
        grads = G.backward(model, cache, dlogits)
        for k, p in model.params.items():
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
            p -= lr * (m[k] / (1 - b1 ** step)) / (np.sqrt(v[k] / (1 - b2 ** step)) + eps)
    assert loss < 0.05, (step, loss)


def test_save_load_roundtrip(tmp_path):
    model = tiny(hidden_act="relu")
    model.save(tmp_path / "m.npz")
    loaded = MiniBERT.load(tmp_path / "m.npz")
    assert loaded.config == model.config
    assert list(loaded.params) == list(model.params)
    ids, am = batch(model.config.vocab_size)
    np.testing.assert_array_equal(loaded.forward(ids, am)[0], model.forward(ids, am)[0])


def test_load_rejects_mismatched_checkpoint(tmp_path):
    model = tiny()
    params = dict(model.params)
    params["emb.pos"] = params["emb.pos"][:3]
    np.savez(tmp_path / "bad.npz", __config__=np.array(model.config.to_json()), **params)
    with pytest.raises(ValueError, match="emb.pos"):
        MiniBERT.load(tmp_path / "bad.npz")
    del params["emb.pos"]
    np.savez(tmp_path / "missing.npz", __config__=np.array(model.config.to_json()), **params)
    with pytest.raises(ValueError, match="missing"):
        MiniBERT.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "noconfig.npz", **model.params)
    with pytest.raises(ValueError, match="__config__"):
        MiniBERT.load(tmp_path / "noconfig.npz")


@pytest.mark.parametrize("ids, match", [
    (np.array([[1.0, 2.0]]), "integer"),
    (np.array([1, 2, 3]), "2-D"),
    (np.array([[1, 13]]), r"\[0, 13\)"),
    (np.array([[-1, 2]]), r"\[0, 13\)"),
    (np.zeros((1, 9), np.int64), "max_position_embeddings"),
])
def test_bad_input_ids_raise(ids, match):
    with pytest.raises(ValueError, match=match):
        tiny().forward(ids)


def test_bad_mask_shapes_raise():
    model = tiny()
    ids = np.zeros((2, 4), np.int64)
    with pytest.raises(ValueError, match="attention_mask"):
        model.forward(ids, attention_mask=np.ones((2, 5)))
    with pytest.raises(ValueError, match="mlm_mask"):
        model.forward(ids, mlm_mask=np.ones((4,), bool))
    with pytest.raises(ValueError, match="BertConfig"):
        MiniBERT({"vocab_size": 13})


@pytest.mark.parametrize("preset", ["tiny", "mini", "larger"])
def test_param_table_equals_real_arrays(preset):
    config = get_config(preset)
    model = MiniBERT(config, seed=0)
    claimed = set()
    for name, patterns, count in param_table(config):
        keys = {k for k in model.params if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
        assert not keys & claimed, name
        claimed |= keys
        assert sum(model.params[k].size for k in keys) == count, name
    assert claimed == set(model.params)


def _cache_floats(cache, params):
    """Elements of the distinct buffers the cache keeps alive, not counting the params."""
    param_ids = {id(a) for a in params.values()}
    seen, total = set(), 0
    for root in _cache_float_arrays(cache):
        while isinstance(root.base, np.ndarray):                  # a view: count its buffer once
            root = root.base
        if id(root) not in seen and id(root) not in param_ids:
            seen.add(id(root))
            total += root.size
    return total


def test_activation_budget_matches_the_cache():
    config = get_config("mini", vocab_size=1000)
    model = MiniBERT(config, seed=0)
    r = np.random.default_rng(0)
    B, T = 4, config.max_position_embeddings
    ids = r.integers(5, 1000, size=(B, T))
    mm = np.zeros(B * T, bool)
    mm[r.choice(B * T, size=round(0.15 * B * T), replace=False)] = True
    mm = mm.reshape(B, T)
    logits, cache = model.forward(ids, mlm_mask=mm, training=True, rng=r)
    kept = _cache_floats(cache, model.params) + logits.size         # + logits (dlogits overwrite them: mlm_loss)
    assert abs(kept / activation_floats(config, B, 0.15) - 1) < 0.05


def test_to_hf_state_dict_layout():
    model = tiny()
    sd = to_hf_state_dict(model.params)
    assert len(sd) == len(model.params)
    assert sd["bert.encoder.layer.1.intermediate.dense.weight"].shape == (16, 8)     # (out, in)
    np.testing.assert_array_equal(sd["bert.encoder.layer.0.attention.self.query.weight"],
                                  model.params["layer0.attn.Wq"].T)
    assert sd["bert.embeddings.word_embeddings.weight"] is model.params["emb.tok"]
    assert {k.split(".", 1)[1] for k in model.params if k.startswith("layer")} <= set(HF_NAMES)


def test_all_padding_row_stays_finite():
    """MASK_VALUE is finite: a sequence that is all padding gives uniform attention, not NaN."""
    model = tiny()
    ids = np.zeros((2, 4), np.int64)
    am = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    logits, cache = model.forward(ids, am)
    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(cache["attn_probs"][0][1], 0.25, rtol=1e-5)


def test_save_hf_files_without_torch(tmp_path):
    """export_hf writes safetensors with NumPy only; reading it back gives the same arrays."""
    from export_hf import read_safetensors, save_hf
    model = tiny()
    (tmp_path / "vocab_in.txt").write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    out = save_hf(model, tmp_path / "hf", tmp_path / "vocab_in.txt")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    tensors = read_safetensors(out / "model.safetensors")
    sd = to_hf_state_dict(model.params)
    for k, a in sd.items():
        np.testing.assert_array_equal(tensors[k], a)
    assert np.all(tensors["bert.embeddings.token_type_embeddings.weight"] == 0)
    np.testing.assert_array_equal(tensors["cls.predictions.decoder.bias"], model.params["mlm.bias"])
