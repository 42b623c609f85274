#!/usr/bin/python3
"""Scripts the model that torchscript_train trains in C++, and saves it as TorchScript.

Run at build time with Debian's python3-torch (the same torch version as the libtorch the C++
side links): make_model.py OUT.pt. The model is a small MLP for a regression task; its input
width is kept as an attribute (in_features) so the trainer needs no separate configuration.
"""
import sys

import torch


class Mlp(torch.nn.Module):
    in_features: int

    def __init__(self, in_features: int = 16, hidden: int = 64):
        super().__init__()
        self.in_features = in_features
        self.fc1 = torch.nn.Linear(in_features, hidden)
        self.fc2 = torch.nn.Linear(hidden, hidden)
        self.out = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return self.out(x)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: make_model.py OUT.pt", file=sys.stderr)
        return 2
    torch.manual_seed(0)  # the same initial weights at every build
    torch.jit.script(Mlp()).save(sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
