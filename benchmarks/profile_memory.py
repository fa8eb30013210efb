"""Peak RSS of the real training loop (``tinyllm.distill.train``, optimizer included) under
settings you name, one process per setting so each peak is its own. A sampler thread reads
VmRSS every 20 ms and keeps the peak per phase: model load, each step's forward, its
backward + optimizer step, and the validation-loss passes. Also prints s/step, so the memory
savings can be weighed against their speed (compare rows of one run only).

    python benchmarks/profile_memory.py --steps 3 \\
        --setting 'base={gradient_checkpointing: false, malloc_trim: false}' \\
        --setting 'ckpt={gradient_checkpointing: true, malloc_trim: false}' \\
        --setting 'ckpt+trim={gradient_checkpointing: true, malloc_trim: true}' \\
        --setting 'label-only={alphas: {}}'

Each ``--setting NAME=MAPPING`` overrides keys of params.yaml's ``distill`` section with a YAML
flow mapping (no setting: params.yaml as it is). It trains on ``data/trainset`` (the trainset
stage's output) from ``models/base``, or with ``--benchmarks`` on examples built from ``data/``
for the setting's own teachers (no validation loss then).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import yaml
from _common import ROOT, machine, table


def _rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def profile(
    overrides: dict, steps: int, trainset: str, model: str, save: str | None = None, benchmarks: list | None = None
) -> dict:
    """Train ``steps`` steps in this process; return the peak RSS per phase and s/step."""
    phase, peaks = ["start"], {}

    def sample():
        while True:
            p = phase[0]
            peaks[p] = max(peaks.get(p, 0.0), _rss_gb())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    import tinyllm.distill as distill
    from tinyllm.config import DistillConfig, from_dict, load_params
    from tinyllm.student import load_student
    from tinyllm.trainset import load_trainset

    params = load_params(ROOT / "params.yaml")["distill"] | overrides | {"steps": steps}
    cfg = from_dict(DistillConfig, params, "distill")
    teachers = distill.active_teachers(cfg.alphas)
    if benchmarks:  # straight from the caches: any teachers, these benchmarks, no validation loss
        from tinyllm.trainset import build_examples

        data = ROOT / "data"
        examples, _ = build_examples(
            data / "prepared", data / "rationales", benchmarks, teachers, cfg.train_per_benchmark, 0, cfg.drop_flags
        )
        valid = []
    else:  # the trainset stage's output (built for params.yaml's teachers)
        examples, _ = load_trainset(ROOT / trainset, teachers)
        valid = load_trainset(ROOT / trainset, teachers, "valid")[0]
    phase[0] = "load"
    student = load_student(ROOT / model)
    step = [0]
    losses = type(student).losses

    def marked_losses(self, model, batch, *a, **kw):  # forward; backward + optimizer follow it
        if model.training:
            step[0] += 1
            phase[0] = f"step {step[0]} forward"
        out = losses(self, model, batch, *a, **kw)
        phase[0] = f"step {step[0]} backward+opt" if model.training else f"step {step[0]} valid loss"
        return out

    type(student).losses = marked_losses
    t = time.perf_counter()
    result = distill.train(student, examples, cfg, progress=False, valid_examples=valid)
    wall = time.perf_counter() - t
    if save:  # what the distill stage does next
        from tinyllm.student import save_student

        phase[0] = "save"
        save_student(student.model, student.tok, ROOT / save, {"profile": overrides})
    phase[0] = "end"
    time.sleep(0.05)
    return {"peaks": peaks, "s_per_step": wall / steps, "tokens_per_s": result["tokens_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--trainset", default="data/trainset")
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--setting", action="append", default=[], help="NAME={key: value, ...} (distill params)")
    ap.add_argument("--benchmarks", nargs="+", help="build examples of these benchmarks from data/ instead")
    ap.add_argument("--save", help="also save the student to this folder afterwards (as the stage does)")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # child: JSON overrides
    ap.add_argument("--phases", action="store_true", help="print the peak of every phase too")
    args = ap.parse_args()
    if args.only is not None:
        over = json.loads(args.only)
        print(json.dumps(profile(over, args.steps, args.trainset, args.model, args.save, args.benchmarks)))
        return
    settings = {}
    for s in args.setting or ["params.yaml="]:
        name, _, kv = s.partition("=")
        settings[name] = yaml.safe_load(kv) or {}
        if not isinstance(settings[name], dict):
            raise SystemExit(f"--setting {s!r}: expected NAME={{key: value, ...}}")
    print(f"machine: {machine()}")
    print(f"real distill loop (AdamW included), {args.steps} steps of params.yaml's distill section, per-row overrides")
    rows = []
    for name, over in settings.items():
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--trainset", args.trainset]
        cmd += ["--save", args.save] if args.save else []
        cmd += ["--benchmarks", *args.benchmarks] if args.benchmarks else []
        out = subprocess.run([*cmd, "--model", args.model, "--only", json.dumps(over)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        peaks = r["peaks"]
        if args.phases:
            print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in peaks.items()))
        rows.append(
            {
                "setting": name,
                "overrides": json.dumps(over) if over else "-",
                "s/step": f"{r['s_per_step']:.1f}",
                "tokens/s": f"{r['tokens_per_s']:.0f}",
                "peak RSS GB": f"{max(peaks.values()):.2f}",
                "peak in": max(peaks, key=peaks.get),
            }
        )
    print(table(rows, ["setting", "overrides", "s/step", "tokens/s", "peak RSS GB", "peak in"]))


if __name__ == "__main__":
    main()
