# A PyTorch job for scripts/gpu-check.sh: a known tensor on the GPU and a counter.
# Prints `checksum X` once, then `N X` every tick: N counts on, X is the tensor's sum
# recomputed on the GPU (it must stay the same across a checkpoint and restore).
import sys
import time

import torch

torch.manual_seed(1234)
t = torch.randn(2048, 2048, device="cuda")
print(f"checksum {t.double().sum().item():.6f}", flush=True)
i = 0
while True:
    print(f"{i} {t.double().sum().item():.6f}", flush=True)
    i += 1
    time.sleep(0.2)
