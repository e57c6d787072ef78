"""How fast is the training step? train.py's own step (forward + backward + AdamW, on the worker threads)
timed on synthetic ids, next to the same step in PyTorch eager and a matmul floor.

    ours          train.train_step: forward, backward and AdamW split into ms per step (median of the steps)
    torch eager   tests/torch_bert.py, the same model, clip + torch.optim.AdamW, on the same threads
    matmul floor  every GEMM of the step timed alone on one core, summed, divided by the threads: what the
                  step would cost if nothing but its matmuls ran, perfectly parallel
Ours and torch alternate in rounds inside one process, so both see the same machine load.

Usage:
    python benchmark.py --batch-size 32             # ms/step (fwd/bwd/opt), GFLOP/s vs matmul floor, vs torch
    python benchmark.py --batch-size 8 32 128       # each size as above, then a summary (128 = 4 x 32 rows)
    python benchmark.py --batch-size 8 --threads 1  # one thread
    python benchmark.py --batch-size 32 --profile   # where the time goes (cProfile, one thread)
    python benchmark.py --fwd-bwd 8 32              # forward + backward alone, at B=8 and B=32
    python train.py --benchmark --batch-size 32     # the same as the first line (the old spelling)

Expect (mini, float32, T=64, 30% masking, 2 threads, a quiet 2-core machine; README "Training speed"): B=32
152.4 ms per step (57.8 fwd / 82.0 bwd / 12.1 AdamW), torch eager 173.2 ms (0.88x), matmul floor 74.6 ms (2.04x),
peak RSS 255 MB; B=8 57.9 ms (0.71x torch, 3.27x the floor); B=128 (4 x 32) 571.1 ms (0.98x, 1.92x). Several
sizes take about a minute and end with a summary table. The last line is the figures as JSON.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import gradients
import mlm
from config import PRESETS, ArgumentParser, UserError, at_least, cli, get_config
from model import MiniBERT
from optimizer import AdamW
from train import CHECKS as TRAIN_CHECKS, build_parser as train_parser, make_micro_batch, train_step
from workers import Workers, blas_kernel, peak_rss_mb, set_blas_threads, tune_malloc

REPO = Path(__file__).resolve().parent


# ---- the floor: every matmul of one step ----

def gemm_shapes(config, B, T, n_masked, m_queries=None):
    """Every matmul of one training step as (batch, M, K, N, transpose_a), in the model's own shapes: the
    encoder on B*T rows, except the last layer's queries (Q, attention, Wo: the n masked rows, padded to
    m_queries per sequence in the attention), its FFN and the MLM head, which run on the n masked rows."""
    H, I, V, A, L = (config.hidden_size, config.intermediate_size, config.vocab_size,
                     config.num_attention_heads, config.num_hidden_layers)
    D, R = H // A, B * T
    shapes = []

    def linear(rows, k, n):                                         # forward, dx = dout W^T, dW = x^T dout
        shapes.extend([(1, rows, k, n, False), (1, rows, n, k, False), (1, k, rows, n, True)])
    for i in range(L):
        last = i == L - 1
        Mq = (m_queries or T) if last else T                        # query rows per sequence
        if last:
            linear(R, H, 2 * H)                                     # [Wk | Wv] on all rows
            linear(n_masked, H, H)                                  # Wq on the masked rows
            linear(n_masked, H, H)                                  # Wo
        else:
            linear(R, H, 3 * H)                                     # [Wq | Wk | Wv]: one fused GEMM
            linear(R, H, H)                                         # Wo
        shapes.extend([(B * A, Mq, D, T, False), (B * A, Mq, T, D, False)])  # scores, ctx
        shapes.extend([(B * A, Mq, D, T, False), (B * A, T, Mq, D, True),    # dpd, dv
                       (B * A, Mq, T, D, False), (B * A, T, Mq, D, True)])   # dq, dk
        rows = n_masked if i == L - 1 else R
        linear(rows, H, I)                                          # W1
        linear(rows, I, H)                                          # W2
    linear(n_masked, H, H)                                          # mlm.Wt
    shapes.extend([(1, n_masked, H, V, False), (1, n_masked, V, H, False), (1, V, n_masked, H, True)])  # decoder
    return shapes


def matmul_floor(shapes, threads, repeats=10):
    """(seconds, flops): every GEMM shape timed alone on one core (the fastest of `repeats`, float32, CPU
    time), summed, divided by `threads`: the step's matmuls perfectly split over the cores. Stricter than
    multi-threaded BLAS (which never scales perfectly), and it stays meaningful on a machine shared with
    other jobs, where BLAS threads that spin-wait for each other measure the load, not the matmuls."""
    set_blas_threads(1)
    rng = np.random.default_rng(0)
    total_s, flops = 0.0, 0
    for (b, m, k, n, ta) in shapes:
        a = rng.standard_normal((b, k, m) if ta else (b, m, k), dtype=np.float32)
        a = a.transpose(0, 2, 1) if ta else a
        w = rng.standard_normal((b, k, n), dtype=np.float32)
        if b == 1:
            a, w = a[0], w[0]
        best = float("inf")
        for _ in range(repeats):
            t = time.thread_time()
            a @ w
            best = min(best, time.thread_time() - t)
        total_s += best
        flops += 2 * b * m * k * n
    return total_s / threads, flops



# ---- the comparison: torch eager, a profile, the timed rounds ----

def torch_stepper(config, params, threads, lr=1e-3, clip=1.0):
    """The same training step in plain PyTorch (tests/torch_bert.py): eager, float32, clip + torch.optim.AdamW
    with the same parameter groups. Returns step(input_ids, labels) -> (fwd_s, bwd_s, opt_s), or None."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")            # idle OpenMP threads sleep: on a shared
    try:                                                            # machine spinning ones slow torch ~5x
        import torch
    except ImportError:
        return None
    sys.path.insert(0, str(REPO / "tests"))
    import torch_bert
    torch.set_num_threads(threads)
    tm = torch_bert.make_torch_model(config, params)
    topt = torch_bert.make_optimizer(tm, lr=lr)
    tm.train()

    def step(input_ids, labels):
        mask = labels != mlm.IGNORE_INDEX
        ids_t, mask_t, y_t = torch.from_numpy(input_ids), torch.from_numpy(mask), torch.from_numpy(labels[mask])
        t0 = time.perf_counter()
        loss = torch_bert.mlm_loss_torch(tm(ids_t, mlm_mask=mask_t), y_t)
        t1 = time.perf_counter()
        topt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(tm.parameters(), clip)
        topt.step()
        return t1 - t0, t2 - t1, time.perf_counter() - t2
    return step


def profile_step(model, opt, inputs, args, workers):
    """cProfile of the step on one thread with thread CPU time (robust to other processes): the functions
    with the most own time, in ms per step."""
    import cProfile
    import pstats
    set_blas_threads(1)                                             # all the work on this one thread
    pr = cProfile.Profile(time.thread_time)
    pr.enable()
    for micro in inputs:
        train_step(model, opt, micro, args.lr, args.clip, workers)
    pr.disable()
    st = pstats.Stats(pr)
    rows = sorted(((v[2], k) for k, v in st.stats.items()), reverse=True)[:15]
    total = sum(v[2] for v in st.stats.values())
    print(f"profile (1 thread, CPU time): {1e3 * total / len(inputs):.1f} ms/step")
    for own, (file, line, fn) in rows:
        print(f"  {1e3 * own / len(inputs):7.1f} ms  {Path(file).name}:{line}({fn})" if file != "~" else
              f"  {1e3 * own / len(inputs):7.1f} ms  {fn}")


def time_step(config, B, mask_prob=0.15, repeats=10, seed=0):
    """Median seconds of forward + MLM loss + backward (training mode, float32) at B x T with an mlm_mask."""
    model, rng = MiniBERT(config, seed=seed), np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, size=(B, config.max_position_embeddings))
    mlm_mask = rng.random(ids.shape) < mask_prob
    times = []
    for _ in range(repeats + 1):                                    # the first run warms up
        t0 = time.perf_counter()
        logits, cache = model.forward(ids, mlm_mask=mlm_mask, training=True, rng=rng)
        loss, dlogits = mlm.mlm_loss(logits, ids[mlm_mask], overwrite=True)
        gradients.backward(model, cache, dlogits)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))



def benchmark(args):
    """Time train_step (the training code path) on synthetic ids, and the same step in PyTorch, in
    alternating rounds (both see the same machine load); report medians over the timed steps.
    One micro-batch of --batch-size rows per step unless --accum is given (torch then takes all rows at once)."""
    config = get_config(args.preset, hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    B, T, V = args.batch_size, config.max_position_embeddings, config.vocab_size
    model = MiniBERT(config, seed=args.seed)
    opt = AdamW(model.params, lr=args.lr, weight_decay=args.weight_decay)
    threads = 1 if args.profile else min(args.threads, B)
    workers = Workers(threads, 1 if args.profile else max(1, args.threads // threads))
    rng = np.random.default_rng(args.seed)
    tok_info = {"vocab_size": V, "special_ids": [0, 1, 2, 3, 4], "mask_id": 4, "is_continuation": None}
    warm, n, rounds = 3, args.bench_steps, 2
    inputs = []
    for i in range(warm + n):
        ids = rng.integers(5, V, size=(B * args.accum, T))
        ids[:, 0], ids[:, -1] = 2, 3                                # [CLS] ... [SEP], as PackedBatches makes them
        inputs.append([make_micro_batch(ids[j * B:(j + 1) * B], rng, tok_info, args, workers.n)
                       for j in range(args.accum)])
    if args.profile:
        train_step(model, opt, inputs[0], args.lr, args.clip, workers)
        return profile_step(model, opt, inputs[warm:], args, workers)
    flat = [(np.concatenate([s[0] for m in micro for s in m]), np.concatenate([s[1] for m in micro for s in m]))
            for micro in inputs]
    n_masked = float(np.mean([(lab != mlm.IGNORE_INDEX).sum() for _, lab in flat])) / args.accum
    m_queries = float(np.mean([(lab != mlm.IGNORE_INDEX).sum(1).max() for micro in inputs for m in micro
                               for _, lab, _ in m]))                # the last layer's padded queries per sequence
    tstep, rss = None, None
    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    for r in range(rounds):
        for i, micro in enumerate(inputs):
            timer = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
            c0 = time.process_time()
            train_step(model, opt, micro, args.lr, args.clip, workers, timer=timer)
            if i >= warm:
                ours.append(list(timer.values()))
                ours_cpu.append(time.process_time() - c0)
        if r == 0:
            rss = peak_rss_mb()                                     # ours alone: torch then runs in this process
            tstep = None if args.no_torch else torch_stepper(config, model.params, threads, lr=args.lr, clip=args.clip)
        if tstep is not None:
            for i, (input_ids, labels) in enumerate(flat):
                c0 = time.process_time()
                t = tstep(input_ids, labels)
                if i >= warm:
                    theirs.append(t)
                    theirs_cpu.append(time.process_time() - c0)
    workers.close()
    floor_s, flops = matmul_floor(gemm_shapes(config, B, T, int(round(n_masked)), int(round(m_queries))), threads)
    floor_ms, flops = 1e3 * floor_s * args.accum, flops * args.accum
    med = lambda rows: [1e3 * float(np.median(c)) for c in zip(*rows)] + [1e3 * float(np.median([sum(r) for r in rows]))]
    f, b, o, ms_step = med(ours)
    tok_s = B * args.accum * T / (ms_step / 1e3)
    gf = lambda ms: flops / (ms / 1e3) / 1e9
    kernel = blas_kernel()
    print(f"benchmark: {args.preset}, float32, B={B} x accum {args.accum}, T={T}, mask {args.mask_prob:.0%} "
          f"(~{n_masked:.0f} masked rows per micro-batch), {threads} threads, median of {rounds} x {n} steps, "
          f"BLAS {kernel} (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})")
    cpu = lambda xs: 1e3 * float(np.median(xs))
    print(f"{'':12s} | {'ms/step':>8s} | {'forward':>8s} | {'backward':>8s} | {'optimizer':>9s} | {'tokens/s':>8s} | "
          f"GFLOP/s | CPU ms/step (all threads)")
    print(f"{'numpy':12s} | {ms_step:8.1f} | {f:8.1f} | {b:8.1f} | {o:9.1f} | {tok_s:8.0f} | {gf(ms_step):7.1f} | "
          f"{cpu(ours_cpu):8.1f}")
    result = {"preset": args.preset, "logical_batch": B * args.accum, "batch_size": B, "accum": args.accum,
              "seq_len": T, "threads": threads, "blas_kernel": kernel,
              "ms_per_step": round(ms_step, 2), "forward_ms": round(f, 2), "backward_ms": round(b, 2),
              "optimizer_ms": round(o, 2), "tokens_per_s": round(tok_s, 1), "gflops": round(gf(ms_step), 2),
              "floor_ms": round(floor_ms, 2), "floor_ratio": round(ms_step / floor_ms, 3), "peak_rss_mb": round(rss, 1),
              "cpu_ms_per_step": round(cpu(ours_cpu), 2), "load_avg_1min": round(os.getloadavg()[0], 2)}
    if theirs:
        tf, tb, to, t_step = med(theirs)
        print(f"{'torch eager':12s} | {t_step:8.1f} | {tf:8.1f} | {tb:8.1f} | {to:9.1f} | "
              f"{B * args.accum * T / (t_step / 1e3):8.0f} | {gf(t_step):7.1f} | {cpu(theirs_cpu):8.1f}")
        result.update({"torch_ms_per_step": round(t_step, 2), "torch_ratio": round(ms_step / t_step, 3),
                       "torch_cpu_ms_per_step": round(cpu(theirs_cpu), 2)})
    print(f"{'matmul floor':12s} | {floor_ms:8.1f} | {'':8s} | {'':8s} | {'':9s} | {'':8s} | {gf(floor_ms):7.1f}")
    print(f"numpy / matmul floor: {result['floor_ratio']:.2f}x" +
          (f" | numpy / torch: {result['torch_ratio']:.2f}x" if "torch_ratio" in result else "") +
          f" | peak RSS {rss:.0f} MB | load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(json.dumps(result))
    return result


def kernel_env(kernel):
    """The environment of a child run under OpenBLAS kernel `kernel`: None = this environment as it is;
    'auto' = OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE both unset (OpenBLAS picks the kernel for the CPU, as on
    a user's laptop); a core name (Haswell, SkylakeX, ...) = OPENBLAS_CORETYPE=name, L2 size unset."""
    env = dict(os.environ)
    if kernel is not None:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
        if kernel != "auto":
            env["OPENBLAS_CORETYPE"] = kernel
    return env


def strip_flag(argv, flag):
    """argv without `flag` and the values after it (up to the next --option)."""
    out, skip = [], False
    for a in argv:
        if a == flag or a.startswith(flag + "="):
            skip = a == flag
            continue
        if skip and not a.startswith("--"):
            continue
        skip = False
        out.append(a)
    return out


def benchmark_sizes(args, argv, sizes):
    """Several logical batch sizes in one command (--batch-size 8 32 128): each size runs benchmark() in a
    fresh child process (its own peak RSS, no torch memory left over from the size before), then one summary
    table and, last, one JSON line with every result. A logical batch of at most 32 rows is one micro-batch
    (as with a single --batch-size); a larger one is accumulated from micro-batches of train.py's default
    size (32 rows), as a training run does it, with fewer timed steps."""
    bad = [B for B in sizes if B > 32 and B % 32]
    if bad:
        raise UserError(f"--batch-size {bad[0]}: a batch above 32 rows must be a multiple of the 32-row "
                        f"micro-batch; use e.g. {32 * max(1, bad[0] // 32)}.")
    results = []
    argv = strip_flag(argv, "--kernels")                            # each child runs under one kernel
    for kernel in args.kernels or [None]:
        env = kernel_env(kernel)
        for B in sizes:
            micro = min(B, 32)                                      # train.py's default micro-batch
            accum, steps = B // micro, args.bench_steps if B <= 32 else max(4, args.bench_steps * 32 // B)
            cmd = [sys.executable, str(REPO / "benchmark.py"), *argv,    # the last --batch-size given wins
                   "--batch-size", str(micro), "--accum", str(accum), "--bench-steps", str(steps)]
            out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, encoding="utf-8", env=env)
            print(out.stdout, end="", flush=True)
            if out.returncode != 0:
                raise UserError(f"the benchmark at --batch-size {B} failed (exit status {out.returncode}); see above.")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            results[-1]["openblas_coretype"] = env.get("OPENBLAS_CORETYPE", "unset")
    r0 = results[0]
    print(f"\nsummary: {r0['preset']}, float32, T={r0['seq_len']}, {r0['threads']} threads for ours and torch, "
          f"matmul floor = the step's GEMMs on one core / threads")
    print(f"{'batch':>13s} | {'BLAS kernel':>20s} | {'ours ms':>8s} | {'torch ms':>8s} | {'ours/torch':>10s} | "
          f"{'floor ms':>8s} | {'ours/floor':>10s} | {'tokens/s':>8s} | {'CPU ms':>8s} | peak RSS")
    for r in results:
        name = f"B={r['logical_batch']}" + (f" ({r['accum']}x{r['batch_size']})" if r["accum"] > 1 else "")
        torch_ms, ratio = ((f"{r['torch_ms_per_step']:8.1f}", f"{r['torch_ratio']:10.2f}") if "torch_ratio" in r
                           else (f"{'-':>8s}", f"{'-':>10s}"))
        print(f"{name:>13s} | {r['blas_kernel']:>20s} | {r['ms_per_step']:8.1f} | {torch_ms} | {ratio} | "
              f"{r['floor_ms']:8.1f} | {r['floor_ratio']:10.2f} | {r['tokens_per_s']:8.0f} | "
              f"{r['cpu_ms_per_step']:8.1f} | {r['peak_rss_mb']:.0f} MB")
    print(json.dumps({"benchmark": results}))
    return results


# ---- command line ----

def build_parser():
    """The benchmark's flags; the recipe's (lr, weight decay, clip, masking, dropout) default to train.py's."""
    d = vars(train_parser().parse_args([]))
    count = at_least(1)
    p = ArgumentParser(description="Time Mini-BERT's training step next to PyTorch eager and a matmul floor.")
    p.add_argument("--preset", default="mini", choices=sorted(PRESETS), help="model size (config.py)")
    p.add_argument("--batch-size", type=count, nargs="+", default=None,
                   help="rows of T tokens per micro-batch (default 32, as train.py); several values: logical "
                        "batches timed one after the other, e.g. 8 32 128 (above 32 rows: accumulated 32-row "
                        "micro-batches, as train.py), then a summary table")
    p.add_argument("--accum", type=count, default=1, help="micro-batches per step (torch takes all rows at once)")
    p.add_argument("--threads", type=count, default=os.cpu_count() or 1, help="worker threads (and torch threads)")
    p.add_argument("--bench-steps", type=count, default=20, help="timed steps per round (after 3 warm-up steps)")
    p.add_argument("--kernels", nargs="+", default=None, metavar="KERNEL",
                   help="run every size under each OpenBLAS kernel, side by side: 'auto' = OPENBLAS_CORETYPE and "
                        "OPENBLAS_L2_SIZE unset (the kernel OpenBLAS picks for this CPU, as a user gets it), or a "
                        "core name such as Haswell or SkylakeX (OPENBLAS_CORETYPE=NAME); e.g. --kernels auto Haswell")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
    p.add_argument("--profile", action="store_true", help="cProfile the step on one thread instead")
    p.add_argument("--fwd-bwd", type=count, nargs="+", metavar="B", default=None,
                   help="only time forward + MLM loss + backward at these batch sizes (median of 10)")
    for flag in ("lr", "weight_decay", "clip", "mask_prob", "dropout", "seed"):
        p.add_argument("--" + flag.replace("_", "-"), type=TRAIN_CHECKS[flag], default=d[flag],
                       help=f"as in train.py (default {d[flag]})")
    return p


@cli
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    sizes = args.batch_size or [32]                                 # train.py's default micro-batch
    if (len(sizes) > 1 or args.kernels) and not args.fwd_bwd:
        return benchmark_sizes(args, argv, sizes)
    args.batch_size = sizes[0]
    args.whole_word_mask = False                                    # synthetic ids have no word pieces
    if args.fwd_bwd:
        config = get_config(args.preset)
        for B in args.fwd_bwd:
            ms = 1e3 * time_step(config, B)
            print(f"{args.preset} | B={B} T={config.max_position_embeddings} | forward+backward {ms:.0f} ms")
        return None
    tune_malloc()
    return benchmark(args)


if __name__ == "__main__":
    main()
