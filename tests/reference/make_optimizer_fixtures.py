#!/usr/bin/env python3
"""Reference numbers for ranktune's LR schedule, AdamW and gradient clipping, from the libraries users compare with.

Writes tests/reference/fixtures/lr_schedule.json (Hugging Face transformers' schedulers) and
tests/reference/fixtures/adamw.json (torch.optim.AdamW with two weight-decay groups and
torch.nn.utils.clip_grad_norm_). Needs torch and transformers; the outputs are committed, so tests do not.

Every initial value and gradient is a bfloat16-representable float32, so the same fixture also checks the fp32
master-weight path (bf16 parameters and gradients in, fp32 master out) without any rounding of its inputs.
"""
import json
import pathlib

import torch
import transformers
from transformers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

OUT = pathlib.Path(__file__).resolve().parent / "fixtures"


def tensor_json(t):
    return {"shape": list(t.shape), "data": [float(x) for x in t.detach().double().flatten().tolist()]}


def schedule_lrs(make, lr, total):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(opt)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])  # the lr the next optimizer.step() uses
        opt.step()
        sched.step()
    return lrs


def lr_fixture():
    lr, cases = 3e-4, []
    for warmup, total in [(5, 30), (0, 12), (10, 10), (1, 7)]:
        for ratio in [0.0, 0.1]:
            cases.append({
                "decay": "cosine", "warmup_steps": warmup, "total_steps": total, "min_lr_ratio": ratio, "lr": lr,
                "lrs": schedule_lrs(lambda o: get_cosine_with_min_lr_schedule_with_warmup(
                    o, warmup, total, min_lr_rate=ratio), lr, total)})
        cases.append({
            "decay": "linear", "warmup_steps": warmup, "total_steps": total, "min_lr_ratio": 0.0, "lr": lr,
            "lrs": schedule_lrs(lambda o: get_linear_schedule_with_warmup(o, warmup, total), lr, total)})
        cases.append({
            "decay": "constant", "warmup_steps": warmup, "total_steps": total, "min_lr_ratio": 0.0, "lr": lr,
            "lrs": schedule_lrs(lambda o: get_constant_schedule_with_warmup(o, warmup), lr, total)})
    return {"generator": "transformers " + transformers.__version__, "cases": cases}


def bf16_exact(t):
    return t.to(torch.bfloat16).to(torch.float32)


def adamw_run(init, grads, lrs, skip, max_norm, hp):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lrs[0], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    steps = []
    for i, lr in enumerate(lrs):
        for name, p in params.items():
            p.grad = None if (i, name) in skip else grads[i][name].clone()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm) if max_norm > 0 else None
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        steps.append({"norm": None if norm is None else float(norm),
                      "params": {k: tensor_json(p) for k, p in params.items()}})
    state = {}
    for name, p in params.items():
        s = opt.state[p]
        state[name] = {"exp_avg": tensor_json(s["exp_avg"]), "exp_avg_sq": tensor_json(s["exp_avg_sq"]),
                       "step": float(s["step"])}
    return {"max_norm": max_norm, "steps": steps, "state": state}


def adamw_fixture():
    g = torch.Generator().manual_seed(20240611)
    shapes = {"layers.0.w": (4, 3), "layers.0.norm": (3,), "embed": (5, 2), "head.bias": (2,)}
    init = {k: bf16_exact(torch.randn(s, generator=g)) for k, s in shapes.items()}
    lrs = [1e-2, 3e-2, 2e-2, 5e-3, 1e-2, 7e-3]
    # Gradients of growing size so that clipping at 1.0 is active on some steps and not on others.
    grads = [{k: bf16_exact(torch.randn(s, generator=g) * (0.2 + 0.4 * i)) for k, s in shapes.items()}
             for i in range(len(lrs))]
    skip = {(2, "embed"), (3, "layers.0.norm")}  # no gradient: torch skips the update and the step count
    hp = {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
    return {
        "generator": "torch " + torch.__version__, "hyper": hp, "lrs": lrs,
        "skip": [[i, n] for i, n in sorted(skip)],
        "init": {k: tensor_json(v) for k, v in init.items()},
        "grads": [{k: tensor_json(v) for k, v in step.items()} for step in grads],
        "clipped": adamw_run(init, grads, lrs, skip, 1.0, hp),
        "unclipped": adamw_run(init, grads, lrs, skip, 0.0, hp),
    }


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lr_schedule.json").write_text(json.dumps(lr_fixture(), indent=1) + "\n")
    (OUT / "adamw.json").write_text(json.dumps(adamw_fixture(), indent=1) + "\n")
    print("wrote", OUT / "lr_schedule.json", OUT / "adamw.json")


if __name__ == "__main__":
    main()
