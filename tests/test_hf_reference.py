"""Agreement with independent autograd references (optional deps: torch, transformers).

- transformers' BertForMaskedLM loaded from export_hf.save_hf: logits within 1e-5 (float32); in float64
  its autograd gradients of the MLM loss equal ours for every parameter to <= 1e-10 relative (bk: absolute).
- tests/torch_bert.py (the same model in plain PyTorch, also the benchmark.py baseline): same
  logits and float64 gradients, including the masked-rows path.

Usage:
    python tests/test_hf_reference.py    # prints the agreement figures

Expect: logits max |diff| 1.7e-06 (float32); float64 gradients max relative error 7.3e-12 over every
parameter (bk: both ~4e-17 absolute).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # when run as a script
import gradients as G  # noqa: E402
from config import get_config  # noqa: E402
from mlm import mlm_loss  # noqa: E402
from model import MiniBERT, to_hf_state_dict  # noqa: E402

torch = pytest.importorskip("torch")


def rel_error(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def _model(act="gelu"):
    """A small float32 model with params away from BERT's init, so that every gradient is sizeable."""
    config = get_config("tiny", vocab_size=50, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=10, hidden_act=act)
    model = MiniBERT(config, seed=0)
    r = np.random.default_rng(1)
    model.params = {k: ((1 + 0.1 * r.standard_normal(a.shape)) if k.endswith("gamma")
                        else 0.3 * r.standard_normal(a.shape)).astype(np.float32) for k, a in model.params.items()}
    return model


def _batch(V, B=3, T=9, seed=2):
    r = np.random.default_rng(seed)
    ids = r.integers(5, V, size=(B, T))
    am = np.ones((B, T), np.int64)
    am[1, 6:] = 0
    am[2, 3:] = 0
    ids[am == 0] = 0
    mm = (r.random((B, T)) < 0.4) & (am == 1)
    mm[0, 0] = True
    labels = np.full((B, T), -100)
    labels[mm] = r.integers(0, V, size=int(mm.sum()))
    return ids, am, mm, labels


def _ours_float64(model, ids, am, mm, labels):
    model.params = {k: a.astype(np.float64) for k, a in model.params.items()}
    logits, cache = model.forward(ids, am, mm)
    loss, dlogits = mlm_loss(logits, labels[mm])
    return loss, G.backward(model, cache, dlogits)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from export_hf import save_hf
    model = _model()
    out = save_hf(model, tmp_path_factory.mktemp("hf"))
    return model, out


def _load_hf(path):
    import transformers
    hf, info = transformers.BertForMaskedLM.from_pretrained(path, attn_implementation="eager",
                                                            output_loading_info=True)
    assert not any(info.values()), info                            # no missing, unexpected or mismatched keys
    return hf.eval()


def test_hf_logits_match_float32(hf_dir):
    model, path = hf_dir
    hf = _load_hf(path)
    ids, am, mm, _ = _batch(model.config.vocab_size)
    ours, _ = model.forward(ids, am)
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(am)).logits.numpy()
    assert ours.dtype == np.float32
    assert np.max(np.abs(ours - theirs)) <= 1e-5
    masked, _ = model.forward(ids, am, mm)                          # the (N, V) path
    assert np.max(np.abs(masked - theirs[mm])) <= 1e-5


def test_hf_gradients_match_float64(hf_dir):
    model, path = hf_dir
    hf = _load_hf(path).double()
    ids, am, mm, labels = _batch(model.config.vocab_size)
    m64 = MiniBERT(model.config)
    m64.params = dict(model.params)
    loss, grads = _ours_float64(m64, ids, am, mm, labels)
    out = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(am), labels=torch.from_numpy(labels))
    out.loss.backward()
    assert abs(out.loss.item() - loss) <= 1e-12 * abs(loss)
    theirs = {n: p.grad.numpy() for n, p in hf.named_parameters()}
    ours = to_hf_state_dict(grads)
    assert set(ours) == set(theirs) - {"bert.embeddings.token_type_embeddings.weight"}
    for name, g in ours.items():
        if name.endswith("attention.self.key.bias"):
            assert np.max(np.abs(g)) <= 1e-14 and np.max(np.abs(theirs[name])) <= 1e-14, name
        else:
            assert rel_error(g, theirs[name]) <= 1e-10, (name, rel_error(g, theirs[name]))


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_torch_bert_matches(act):
    from torch_bert import make_torch_model, grads_numpy, mlm_loss_torch
    model = _model(act)
    ids, am, mm, labels = _batch(model.config.vocab_size)
    tm = make_torch_model(model.config, model.params).eval()
    with torch.no_grad():
        theirs = tm(torch.from_numpy(ids), torch.from_numpy(am)).numpy()
    assert np.max(np.abs(model.forward(ids, am)[0] - theirs)) <= 1e-5
    loss, grads = _ours_float64(model, ids, am, mm, labels)
    tm = make_torch_model(model.config, model.params, dtype=torch.float64).eval()
    t_loss = mlm_loss_torch(tm(torch.from_numpy(ids), torch.from_numpy(am), torch.from_numpy(mm)),
                            torch.from_numpy(labels[mm]))
    t_loss.backward()
    assert abs(t_loss.item() - loss) <= 1e-12 * abs(loss)
    tg = grads_numpy(tm)
    for k in model.params:
        if k.endswith(".bk"):
            assert np.max(np.abs(grads[k])) <= 1e-14, k
        else:
            assert rel_error(grads[k], tg[k]) <= 1e-10, (k, rel_error(grads[k], tg[k]))


def test_torch_bert_train_step_runs():
    from torch_bert import make_torch_model, make_optimizer, train_step
    config = get_config("tiny", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    tm = make_torch_model(config)
    opt = make_optimizer(tm)
    ids, am, mm, labels = _batch(config.vocab_size, T=8)
    losses = [train_step(tm, opt, ids, labels[mm], am, mm) for _ in range(3)]
    assert all(np.isfinite(losses))


def main(argv=None):
    import argparse
    import tempfile
    argparse.ArgumentParser(description="Print the HF / torch agreement figures.").parse_args(argv)
    import transformers  # noqa: F401
    from export_hf import save_hf
    model = _model()
    ids, am, mm, labels = _batch(model.config.vocab_size)
    with tempfile.TemporaryDirectory() as d:
        save_hf(model, d)
        hf = _load_hf(d)
        with torch.no_grad():
            theirs = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(am)).logits.numpy()
        print(f"HF logits (float32): max |ours - HF| = {np.max(np.abs(model.forward(ids, am)[0] - theirs)):.1e} "
              f"(max |logit| {np.max(np.abs(theirs)):.1f})")
        hf = hf.double()
    m64 = MiniBERT(model.config)
    m64.params = dict(model.params)
    loss, grads = _ours_float64(m64, ids, am, mm, labels)
    out = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(am), labels=torch.from_numpy(labels))
    out.loss.backward()
    theirs = {n: p.grad.numpy() for n, p in hf.named_parameters()}
    ours = to_hf_state_dict(grads)
    errs = {n: rel_error(g, theirs[n]) for n, g in ours.items() if not n.endswith("key.bias")}
    worst = max(errs, key=errs.get)
    bk = max(max(np.max(np.abs(g)), np.max(np.abs(theirs[n]))) for n, g in ours.items() if n.endswith("key.bias"))
    print(f"HF float64: loss |diff| {abs(out.loss.item() - loss):.1e}; gradients max rel_error {errs[worst]:.1e} "
          f"({worst}) over {len(ours)} parameters; bk max |grad| {bk:.1e}")


if __name__ == "__main__":
    main()
