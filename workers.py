"""How the training step uses the machine: worker threads over the shards of a batch, one BLAS thread per
worker, glibc malloc settings for a loop that allocates the same large temporaries at every step, peak RSS.

None of this changes a single number the model computes: train.py's step gives the same loss with 1 thread
or 8 (the shards' gradients are summed in a fixed order). Read train.py for the algorithm; this file only
says where it runs.

Usage:
    python workers.py --threads 2        # a matmul over 2 worker threads, each with one BLAS thread

Expect: `BLAS: OpenBLAS SkylakeX` (the kernel OpenBLAS picked for this CPU; Haswell on AVX2-only CPUs), then
`openblas found: True | 2 workers: 4 shards of (256, 256) @ (256, 256) in 3.3 ms | peak RSS 37 MB`.
"""
import ctypes
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from config import ArgumentParser, at_least


_OPENBLAS = []   # [ctypes library or None], found once


def _openblas():
    """NumPy's bundled OpenBLAS (wheels ship scipy-openblas in numpy.libs/ or numpy/.dylibs/), or None."""
    if not _OPENBLAS:
        import glob
        libdir = Path(np.__file__).resolve().parent.parent
        lib = None
        for f in (glob.glob(str(libdir / "numpy.libs" / "*openblas*")) +
                  glob.glob(str(libdir / "numpy" / ".dylibs" / "*openblas*"))):
            try:
                lib = ctypes.CDLL(f)                                # the already loaded library: same handle
                break
            except OSError:
                continue
        _OPENBLAS.append(lib)
    return _OPENBLAS[0]


def _openblas_fn(suffix):
    """OpenBLAS's function `openblas_<suffix>` under the symbol names the NumPy wheels use, or None."""
    lib = _openblas()
    for name in (f"scipy_openblas_{suffix}64_", f"scipy_openblas_{suffix}", f"openblas_{suffix}64_", f"openblas_{suffix}"):
        if lib is not None and hasattr(lib, name):
            return getattr(lib, name)
    return None


def set_blas_threads(n):
    """Set OpenBLAS's thread count at run time (NumPy wheels bundle scipy-openblas). We run shards on our
    own threads, so each matmul should use one. Returns True if the library was found."""
    f = _openblas_fn("set_num_threads")
    if f is not None:
        f(int(n))
    return f is not None


AVX512_KERNELS = ("SKYLAKEX", "COOPERLAKE", "SAPPHIRERAPIDS")   # OpenBLAS kernels that use AVX-512


def blas_kernel():
    """The matmul kernel NumPy runs: OpenBLAS's own get_corename() (the kernel its DYNAMIC_ARCH build picked
    for this CPU at load time, or the one OPENBLAS_CORETYPE forced), e.g. 'OpenBLAS SkylakeX'."""
    f = _openblas_fn("get_corename")
    if f is None:
        return "not OpenBLAS (NumPy was built with another BLAS)"
    f.restype = ctypes.c_char_p
    return "OpenBLAS " + f().decode("ascii", "replace").strip()


def cpu_has_avx512():
    """True if NumPy's own CPU detection found AVX-512 (the Skylake-X set: F, CD, BW, DQ, VL)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:                                             # NumPy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats
        except ImportError:
            return False
    return bool(feats.get("AVX512_SKX"))


def blas_override_note():
    """One line when the environment forces a slower OpenBLAS kernel than this CPU runs (an override some
    machines set because old OpenBLAS builds crashed on their CPU; NumPy's current one does not need it),
    saying how to run without it; else None."""
    forced = os.environ.get("OPENBLAS_CORETYPE")
    kernel = blas_kernel()
    if not forced or not cpu_has_avx512() or not kernel.startswith("OpenBLAS"):
        return None
    if kernel.split()[-1].upper() in AVX512_KERNELS:
        return None
    return (f"note: OPENBLAS_CORETYPE={forced} forces the {kernel.split()[-1]} kernel, but this CPU has AVX-512 "
            f"(OpenBLAS's SkylakeX kernel: about 1.5x faster matmuls on mini's shapes); to run without the "
            f"override: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python {Path(sys.argv[0]).name} ... "
            f"(Windows: set OPENBLAS_CORETYPE= before the command)")


def tune_malloc():
    """Two glibc malloc settings for a loop that allocates the same large temporaries at every step:
    - one arena: otherwise every worker thread gets its own, each keeping its own freed memory
      (about 20 MB less peak RSS);
    - keep freed memory in the process instead of returning it to the kernel and faulting it back in,
      4 KB page by page, at the next step (measured here: ~4,000 page faults and ~10 ms of kernel time per
      B=32 step before, ~100 and ~1 ms after; peak RSS unchanged, since the next step reuses the memory)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-8, 1)                                     # M_ARENA_MAX = 1
            libc.mallopt(-3, 64 << 20)                              # M_MMAP_THRESHOLD: heap, not mmap, below 64 MB
            libc.mallopt(-1, 256 << 20)                             # M_TRIM_THRESHOLD: keep up to 256 MB free
        except (OSError, AttributeError):
            pass


class Workers:
    """`n` threads that run one function over shards of a batch (inline when n == 1). Each matmul runs on
    `blas_threads` threads inside its worker (default: 1 when n > 1, else all cores)."""

    def __init__(self, n, blas_threads=None):
        self.n = max(1, int(n))
        self.pool = ThreadPoolExecutor(self.n) if self.n > 1 else None
        set_blas_threads(blas_threads or (1 if self.n > 1 else (os.cpu_count() or 1)))

    def map(self, fn, items):
        if self.pool is None or len(items) == 1:
            return [fn(x) for x in items]
        return list(self.pool.map(fn, items))

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()
            set_blas_threads(os.cpu_count() or 1)                   # back to NumPy's default


def peak_rss_mb():
    """The most resident memory this process has used so far, in MB (NaN where the OS does not say)."""
    try:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024 if sys.platform != "darwin" else kb / 2 ** 20
    except ImportError:                                             # Windows
        return float("nan")


def main(argv=None):
    p = ArgumentParser(description="Run a few matmuls on worker threads (a demo of Workers).")
    p.add_argument("--threads", type=at_least(1), default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    found = set_blas_threads(1)
    print(f"BLAS: {blas_kernel()}")
    tune_malloc()
    workers = Workers(args.threads)
    rng = np.random.default_rng(0)
    shards = [rng.standard_normal((256, 256), dtype=np.float32) for _ in range(2 * workers.n)]
    t = time.perf_counter()
    outs = workers.map(lambda a: a @ a, shards)
    ms = 1e3 * (time.perf_counter() - t)
    workers.close()
    print(f"openblas found: {found} | {workers.n} workers: {len(outs)} shards of {shards[0].shape} @ "
          f"{shards[0].shape} in {ms:.1f} ms | peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
