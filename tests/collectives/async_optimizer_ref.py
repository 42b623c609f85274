"""Reference for ps_async_unit_test: torch.optim.SGD / Adam over the test's inputs.

usage: async_optimizer_ref.py CONFIG_JSON IN_DIR
Reads IN_DIR/params.bin (n float32) and IN_DIR/grads.bin (steps x n float32), runs the optimizer
of CONFIG_JSON (kind sgd|adam and its options) for `steps` steps, and writes IN_DIR/out.bin: the
parameters after each step (steps x n float32), then the final state (SGD with momentum: momentum_buffer;
Adam: exp_avg, exp_avg_sq).
"""
import json
import os
import sys

import torch


def main():
    cfg = json.loads(sys.argv[1])
    d = sys.argv[2]
    n, steps = cfg["n"], cfg["steps"]
    with open(os.path.join(d, "params.bin"), "rb") as f:
        p = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).clone()
    with open(os.path.join(d, "grads.bin"), "rb") as f:
        grads = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(steps, n)
    param = torch.nn.Parameter(p)
    if cfg["kind"] == "sgd":
        opt = torch.optim.SGD([param], lr=cfg["lr"], momentum=cfg["momentum"],
                              dampening=cfg["dampening"], weight_decay=cfg["weight_decay"],
                              nesterov=cfg["nesterov"])
    else:
        opt = torch.optim.Adam([param], lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]),
                               eps=cfg["eps"], weight_decay=cfg["weight_decay"])
    out = []
    for t in range(steps):
        param.grad = grads[t].clone()
        opt.step()
        out.append(param.detach().clone())
    state = opt.state[param]
    if cfg["kind"] == "sgd":
        if cfg["momentum"] != 0:
            out.append(state["momentum_buffer"])
    else:
        out.append(state["exp_avg"])
        out.append(state["exp_avg_sq"])
    with open(os.path.join(d, "out.bin"), "wb") as f:
        f.write(torch.cat(out).numpy().tobytes())


if __name__ == "__main__":
    main()
