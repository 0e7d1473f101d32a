"""hazardseg: semantic segmentation and zero-shot pixel anomaly detection for driving scenes."""

import os as _os

__version__ = "0.1.0"

# PyTorch's Linux wheels use libgomp, whose threads spin 300,000 iterations at every barrier
# before sleeping. When other processes share the cores (data workers, a second job), the
# spinning threads take the cores the others need and training on 2 cores fell from ~58 to
# 3-18 images/s (benchmarks/bench_train_threads.py). A short spin keeps the quiet speed and
# degrades gracefully. libgomp reads it when it is loaded, so this must run before torch is
# imported; a value the user set (or OMP_WAIT_POLICY) is kept.
if "GOMP_SPINCOUNT" not in _os.environ and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "1000"
