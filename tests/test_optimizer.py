"""AdamW against hand-computed numbers and torch.optim.AdamW; the LR schedule; gradient clipping."""
import math

import numpy as np
import pytest

from optimizer import AdamW, clip_grad_norm, lr_at


def rel_error(a, b):
    return np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))


def test_one_step_hand_computed():
    # p = 2, g = 0.5, lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-6, wd = 0.01, t = 1:
    # m = 0.1*0.5 = 0.05, v = 0.001*0.25 = 2.5e-4, m_hat = 0.05/0.1 = 0.5, v_hat = 2.5e-4/0.001 = 0.25
    # adam = m_hat / (sqrt(v_hat) + eps) = 0.5 / 0.500001 = 0.999998000004
    # weight (2-D):  p = 2 - 0.1 * (0.999998000004 + 0.01*2) = 1.8980001999996
    # bias   (1-D):  p = 2 - 0.1 * 0.999998000004             = 1.9000001999996   (no decay)
    params = {"W": np.full((2, 2), 2.0), "b": np.full(2, 2.0)}
    grads = {"W": np.full((2, 2), 0.5), "b": np.full(2, 0.5)}
    opt = AdamW(params, lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    opt.step(grads)
    np.testing.assert_allclose(opt.m["W"], 0.05, rtol=1e-15)
    np.testing.assert_allclose(opt.v["W"], 2.5e-4, rtol=1e-12)
    np.testing.assert_allclose(params["W"], 1.8980001999996, rtol=1e-14)
    np.testing.assert_allclose(params["b"], 1.9000001999996, rtol=1e-14)
    assert opt.decays("W") and not opt.decays("b")


def test_second_step_uses_bias_correction_t2():
    # step 2 with g = 0.5 again: m = 0.095, v = 4.9975e-4, bc1 = 0.19, bc2 = 0.001999
    # m_hat = 0.5, v_hat = 0.25 (a constant gradient gives the same normalised step): p1 - lr * 0.999998000004
    params = {"b": np.array([2.0])}
    opt = AdamW(params, lr=0.1, weight_decay=0.0)
    for _ in range(2):
        opt.step({"b": np.array([0.5])})
    np.testing.assert_allclose(params["b"], 2.0 - 2 * 0.1 * 0.5 / (0.5 + 1e-6), rtol=1e-13)


def test_lr_override_and_state_roundtrip():
    rng = np.random.default_rng(0)
    p1 = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    p2 = {k: v.copy() for k, v in p1.items()}
    o1, o2 = AdamW(p1, lr=1e-2), AdamW(p2, lr=1e-2)
    gs = [{k: rng.standard_normal(v.shape) for k, v in p1.items()} for _ in range(6)]
    for g in gs[:3]:
        o1.step(g, lr=3e-3)
        o2.step(g, lr=3e-3)
    state = o1.state_dict()
    o3 = AdamW({k: v.copy() for k, v in p1.items()}, lr=1.0)
    o3.load_state_dict(state)
    for g in gs[3:]:
        o2.step(g)
        o3.step(g)
    for k in p1:
        np.testing.assert_array_equal(o2.params[k], o3.params[k])


def test_threaded_step_equals_loop():
    """step(map_fn=pool.map) updates row blocks concurrently; the result is the loop's, bit for bit."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(2)
    p1 = {"E": rng.standard_normal((3000, 100)).astype(np.float32), "b": rng.standard_normal(100).astype(np.float32)}
    p2 = {k: v.copy() for k, v in p1.items()}
    o1, o2 = AdamW(p1, lr=1e-3), AdamW(p2, lr=1e-3)
    assert len(o2._blocks["E"]) > 1
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in p1.items()}
            o1.step(g)
            o2.step(g, map_fn=pool.map)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])


def test_torch_adamw_10_steps_float64():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    shapes = {"emb.tok": (11, 6), "layer0.attn.Wq": (6, 6), "layer0.attn.bq": (6,), "emb.ln.gamma": (6,)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    decay = [tparams[k] for k in shapes if len(shapes[k]) >= 2]
    no_decay = [tparams[k] for k in shapes if len(shapes[k]) < 2]
    topt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=1e-3, betas=(0.9, 0.999), eps=1e-6)
    opt = AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    for step in range(10):
        lr = lr_at(step, 1e-3, warmup=3, total=10, schedule="cosine", min_lr=1e-4)
        grads = {k: rng.standard_normal(s) for k, s in shapes.items()}
        opt.step(grads, lr=lr)
        for group in topt.param_groups:
            group["lr"] = lr
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        topt.step()
    for k in shapes:
        assert rel_error(params[k], tparams[k].detach().numpy()) <= 1e-12, k


def test_lr_schedule_branches():
    # 1) warmup is linear and reaches max_lr at the last warmup step
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    # 3) linear decay: halfway between warmup and total -> halfway between max and min
    assert lr_at(55, 1.0, 10, 100, "linear", 0.1) == pytest.approx(0.55)
    assert lr_at(55, 1.0, 10, 100, "cosine", 0.1) == pytest.approx(0.55)
    assert lr_at(10, 1.0, 10, 100, "cosine", 0.1) == pytest.approx(1.0)
    # 2) the floor after total
    assert lr_at(100, 1.0, 10, 100, "cosine", 0.1) == 0.1
    assert lr_at(10 ** 6, 1.0, 10, 100, "linear", 0.0) == 0.0
    with pytest.raises(ValueError):
        lr_at(50, 1.0, 10, 100, "step")


def test_clip_grad_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = clip_grad_norm(g, max_norm=1.0)
    assert norm == pytest.approx(5.0)
    total = math.sqrt(sum(float((x ** 2).sum()) for x in g.values()))
    assert total == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(g["a"], [0.6, 0.0], rtol=1e-6)
    g2 = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(g2, max_norm=1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(g2["a"], [0.3, 0.4])   # below the threshold: untouched
