"""Run by torchrun in tests/test_distributed.py: every rank but 0 exits straight after its last
broadcast (the batch-norm statistics, as at the end of training) while rank 0 is still busy,
which is what a rank with nothing left to train does."""

import time

import torch

from gmvae.train import distributed

world, _ = distributed.setup("cpu")
net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16))
torch.nn.parallel.DistributedDataParallel(net)(torch.randn(8, 4)).sum().backward()
distributed.share_buffers(net, world)
if world.is_main:
    time.sleep(1)  # writing the results
distributed.teardown()
