#!/usr/bin/env python3
"""Golden values for Norma's optimizers and LR schedulers, computed by PyTorch.

Writes tests/fixtures/optim_golden.json, read by tests/optim_test.cpp and
tests/lr_scheduler_test.cpp.

  optimizers: three float32 parameters and ten gradients (one parameter has no
    gradient on steps 4 and 8, so it is skipped there), then the parameters
    after each of the ten steps for each configuration below. The C++ test
    builds each optimizer from the recorded options.
  schedulers: the lr of each of two param groups (base lrs 0.1 and 0.01) at
    construction and after each of 30 steps (OneCycleLR also the momentum or
    beta1). The C++ test builds the same schedulers by name; keep the two in step.

    /usr/bin/python3 scripts/gen_optim_fixtures.py   # needs python3-torch (install-deps.sh --dev)
"""
import json
import os
import re
import sys
import tempfile
import warnings

try:
    import torch
except ImportError:
    sys.exit("gen_optim_fixtures.py: needs PyTorch; install python3-torch (scripts/install-deps.sh --dev) "
             "and run it with Debian's /usr/bin/python3")

from torch.optim import lr_scheduler as S

SEED = 20240
STEPS = 10
SCHED_STEPS = 30
SHAPES = [(2, 3), (3,), (2, 2)]
SKIPPED = {1: (3, 7)}  # parameter 1 has no gradient on steps 4 and 8 (0-based 3 and 7)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "optim_golden.json")


def values(t):
    """Row-major values, each float32 printed with 9 significant digits (exact round trip)."""
    return [float(f"{x:.9g}") for x in t.detach().flatten().tolist()]


# name -> (class, options for the whole optimizer, per-group overrides or None for one group)
# Groups split the parameters into [0, 2] and [1].
OPTIMIZERS = {
    "sgd": ("SGD", dict(lr=0.1), None),
    "sgd_momentum": ("SGD", dict(lr=0.1, momentum=0.9), None),
    "sgd_nesterov": ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True), None),
    "sgd_weight_decay": ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.05), None),
    "sgd_dampening": ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5), None),
    "adam": ("Adam", dict(lr=0.01), None),
    "adam_weight_decay": ("Adam", dict(lr=0.01, weight_decay=0.1), None),
    "adamw": ("AdamW", dict(lr=0.01, weight_decay=0.1), None),
    "adam_amsgrad": ("Adam", dict(lr=0.01, amsgrad=True), None),
    "adamw_amsgrad": ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True), None),
    "adamw_groups": ("AdamW", dict(lr=0.01, weight_decay=0.1),
                     [dict(), dict(lr=0.03, weight_decay=0.0, betas=(0.8, 0.99))]),
}


def make_optimizer(kind, opts, groups, params):
    cls = getattr(torch.optim, kind)
    opts = dict(opts, foreach=False)  # the single-tensor path Norma follows
    if groups is None:
        return cls(params, **opts)
    return cls([dict(params=[params[0], params[2]], **groups[0]), dict(params=[params[1]], **groups[1])], **opts)


def run_optimizer(kind, opts, groups, init, grads):
    params = [torch.tensor(v, dtype=torch.float32).reshape(s).requires_grad_() for v, s in zip(init, SHAPES)]
    opt = make_optimizer(kind, opts, groups, params)
    out = []
    for step in range(STEPS):
        for i, p in enumerate(params):
            g = grads[step][i]
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float32).reshape(SHAPES[i])
        opt.step()
        out.append([values(p) for p in params])
    return out


def lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def sgd_two_groups(momentum=0.9):
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    return torch.optim.SGD([dict(params=[a]), dict(params=[b], lr=0.01)], lr=0.1, momentum=momentum)


def adam_two_groups():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    return torch.optim.Adam([dict(params=[a]), dict(params=[b], lr=0.01)], lr=0.1)


# name -> builder returning (optimizer, scheduler); the C++ test mirrors each one.
def _sequential(opt, subs, milestones):
    return S.SequentialLR(opt, subs, milestones=milestones)


SCHEDULERS = {
    "step": lambda o: S.StepLR(o, step_size=7, gamma=0.5),
    "multistep": lambda o: S.MultiStepLR(o, milestones=[5, 12, 12, 20], gamma=0.3),
    "linear": lambda o: S.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=8),
    "linear_default": lambda o: S.LinearLR(o),
    "cosine": lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
    "onecycle": lambda o: S.OneCycleLR(o, max_lr=[0.5, 0.05], total_steps=SCHED_STEPS),
    "onecycle_three_phase_linear": lambda o: S.OneCycleLR(o, max_lr=0.01, total_steps=SCHED_STEPS, pct_start=0.25,
                                                          anneal_strategy="linear", three_phase=True),
    "warmup_cosine": lambda o: _sequential(o, [S.LinearLR(o, start_factor=0.1, total_iters=5),
                                               S.CosineAnnealingLR(o, T_max=25)], [5]),
    "sequential_three": lambda o: _sequential(o, [S.LinearLR(o, start_factor=0.5, total_iters=5),
                                                  S.StepLR(o, step_size=4, gamma=0.5),
                                                  S.MultiStepLR(o, milestones=[3, 6], gamma=0.5)], [10, 18]),
    "cosine_then_linear": lambda o: _sequential(o, [S.CosineAnnealingLR(o, T_max=10),
                                                    S.LinearLR(o, start_factor=0.5, total_iters=5)], [12]),
    "chained": lambda o: S.ChainedScheduler([S.LinearLR(o, start_factor=0.2, total_iters=5),
                                             S.StepLR(o, step_size=7, gamma=0.5)]),
}
ADAM_SCHEDULERS = {"onecycle_three_phase_linear"}


def run_scheduler(name):
    opt = adam_two_groups() if name in ADAM_SCHEDULERS else sgd_two_groups()
    sched = SCHEDULERS[name](opt)
    key = "beta1" if name in ADAM_SCHEDULERS else "momentum"

    def momenta():
        return [g["betas"][0] if key == "beta1" else g["momentum"] for g in opt.param_groups]

    rec = {"lr": [sched.get_last_lr()], key: [momenta()]}
    for _ in range(SCHED_STEPS):
        opt.step()
        sched.step()
        rec["lr"].append(sched.get_last_lr())
        rec[key].append(momenta())
    if not name.startswith("onecycle"):
        del rec[key]
    return rec


def to_json(doc):
    """Indented JSON with each innermost list kept on one line (as scripts/gen_fixtures.py)."""
    text = json.dumps(doc, indent=1)
    return re.sub(r"\[[^\[\]{}\"]*\]", lambda m: "[" + " ".join(m.group(0)[1:-1].split()) + "]", text) + "\n"


def main():
    # PyTorch warns about SequentialLR's step(0) (its deprecated epoch argument); that is the behaviour recorded.
    warnings.simplefilter("ignore", UserWarning)
    torch.manual_seed(SEED)
    init = [values(torch.randn(s)) for s in SHAPES]
    # Gradient scale falls after step 5 so that amsgrad's running max matters.
    grads = []
    for step in range(STEPS):
        scale = 1.0 if step < 5 else 0.1
        grads.append([None if step in SKIPPED.get(i, ()) else values(torch.randn(s) * scale)
                      for i, s in enumerate(SHAPES)])

    doc = {
        "generator": "scripts/gen_optim_fixtures.py",
        "torch": torch.__version__,
        "seed": SEED,
        "shapes": [list(s) for s in SHAPES],
        "params": init,
        "grads": grads,
        "optimizers": {},
        "schedulers": {},
    }
    for name, (kind, opts, groups) in OPTIMIZERS.items():
        entry = {"class": kind, "options": {k: v for k, v in opts.items()}}
        if groups is not None:
            entry["groups"] = [{"params": [0, 2], **groups[0]}, {"params": [1], **groups[1]}]
        entry["steps"] = run_optimizer(kind, opts, groups, init, grads)
        doc["optimizers"][name] = entry
    with torch.no_grad():
        for name in SCHEDULERS:
            doc["schedulers"][name] = run_scheduler(name)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(OUT), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(to_json(doc))
    os.replace(tmp, OUT)
    print(f"wrote {os.path.relpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
