#!/usr/bin/python3
"""Runs a TorchScript model in Debian's python3-torch, the way a Python user would load it.

jit_outputs.py MODEL.pt INPUT.f32 D0,D1,... OUTPUT.f32: reads a float32 little-endian input of
that shape, writes forward()'s float32 output, prints its shape.
"""
import sys

import torch


def main():
    model_path, input_path, shape, output_path = sys.argv[1:5]
    model = torch.jit.load(model_path)
    model.eval()
    with open(input_path, "rb") as f:
        x = torch.frombuffer(bytearray(f.read()), dtype=torch.float32)
    x = x.reshape([int(d) for d in shape.split(",")])
    with torch.no_grad():
        y = model(x).to(torch.float32).contiguous()
    with open(output_path, "wb") as f:
        f.write(y.numpy().tobytes())
    print(",".join(str(d) for d in y.shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
