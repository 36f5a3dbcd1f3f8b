"""Plugin problems are errors in these tests (strict mode); torch runs on one thread."""

from __future__ import annotations

import os

import torch

os.environ["GBDT2NN_STRICT_PLUGINS"] = "1"
# The tensors here are tiny: a second intra-op thread only adds spin-waiting, which slows the suite ten-fold
# when the machine is busy with other processes.
torch.set_num_threads(1)
