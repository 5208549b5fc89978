"""Write N rows of two random columns to a CSV file (the samples of hello_samples)."""

import sys

import numpy as np

n, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
np.savetxt(path, rng.random((n, 2)), delimiter=",", fmt="%.4f")
