#!/usr/bin/python3
"""Scripts the TorchScript skeleton of Fashion-MNIST's C++ model (examples/fashion_mnist/model.cc).

Run at build time with Debian's python3-torch (the torch version of the libtorch the C++ side
links): skeleton.py OUT.pt. Export (serving/export.h) loads this file and copies the trained C++
module's parameters into it by name, so the names, shapes and forward() below must stay those of
FashionCnn: conv1, conv2, fc1, fc2, and the same ops in the same order.
"""
import sys

import torch
import torch.nn.functional as F


class FashionCnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = torch.nn.Linear(32 * 7 * 7, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 16 x 14 x 14
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 32 x 7 x 7
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: skeleton.py OUT.pt", file=sys.stderr)
        return 2
    torch.manual_seed(0)  # the skeleton's own values are overwritten; fixed for reproducible builds
    torch.jit.script(FashionCnn().eval()).save(sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
