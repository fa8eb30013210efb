"""Teacher generation speed on this machine: naive vs batched transformers vs llama.cpp, + roofline.

    python benchmarks/bench_teachers.py [--model /tmp/smol] [--n 64] [--max-new-tokens 32]

Same N prompts for every path: the default teacher's prompts (teacher forcing, 2 random
in-context examples with released FLAN-T5 rationales, chat template) on the first N OpenBookQA
train questions. Prints a table of tokens/s (new tokens / wall time of the generation calls) with
ratios to the naive path, and the decode roofline: bytes of weights read per generated token vs
this machine's measured memory bandwidth. Not a test: timings on shared VMs vary 2-3x between
runs; compare ratios within one run. Exit 0 unless something errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def prompts_for(n: int, release: Path, k: int):
    """(questions, TeacherPrompts) of the default teacher on the first n obqa train questions."""
    from tinyllm.benchmarks import load_split
    from tinyllm.rationales import import_released
    from tinyllm.teachers.icl import ExampleSelector
    from tinyllm.teachers.prompts import build_prompt

    train = load_split(release, "obqa", "train")
    flan = import_released(release, "obqa", "train", train)["flan_t5_xl"]
    rats = {r["id"]: r["rationale"] for r in flan if r["status"] == "ok"}
    pool = [(q, rats[q["id"]]) for q in train if q["id"] in rats]
    sel = ExampleSelector(pool, k=k, strategy="random", seed=0, benchmark="obqa")
    qs = train[:n]
    return qs, [build_prompt(q, sel.select(q), teacher_forcing=True, fmt="chat", max_words=80) for q in qs]


def bandwidth_gbs(mb: int = 512, reps: int = 5) -> float:
    """Best-of-``reps`` copy bandwidth (bytes read + written per second), numpy, one large array."""
    import numpy as np

    a = np.ones(mb * (1 << 20) // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def naive(model_dir: str, prompts, max_new: int) -> tuple[int, float]:
    """What a first attempt does: fp32, one prompt at a time, model.generate per prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    toks, secs = 0, 0.0
    for p in prompts:
        text = tok.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
        secs += time.perf_counter() - t
        toks += out.shape[1] - enc["input_ids"].shape[1]
    return toks, secs


def batched(model_dir: str, prompts, qs, max_new: int, batch_size: int, precision: str) -> tuple[int, float, float]:
    """The ``transformers`` teacher backend end to end (sorting, batching, cache writes)."""
    from tinyllm.teachers.backends import make_backend
    from tinyllm.teachers.config import teacher_config

    cfg = teacher_config(
        "bench",
        {
            "backend": "transformers",
            "model": model_dir,
            "max_new_tokens": max_new,
            "batch_size": batch_size,
            "precision": precision,
            "icl": {"k": 0, "source": None},
        },
    )
    be = make_backend(cfg)
    be.resolve_format()
    be._load_model()  # load outside the timed region, as for the other paths
    order = sorted(range(len(prompts)), key=lambda i: be.prompt_length(prompts[i]))
    toks, secs = 0, 0.0
    for s in range(0, len(order), batch_size):
        batch = [prompts[i] for i in order[s : s + batch_size]]
        t = time.perf_counter()
        gens = be.generate_batch(batch)
        secs += time.perf_counter() - t
        toks += sum(g.new_tokens for g in gens)
    nparams = sum(p.numel() for p in be.model.parameters())
    return toks, secs, nparams


def llama_cpp(gguf: Path, prompts, max_new: int) -> tuple[int, float] | str:
    import importlib.util
    import subprocess

    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python not installed"
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys;from llama_cpp import Llama;"
            "Llama(model_path=sys.argv[1],n_ctx=64,verbose=False).create_completion('Hi',max_tokens=2)",
            str(gguf),
        ],
        capture_output=True,
        timeout=120,
    )
    if probe.returncode != 0:
        return f"llama_cpp crashes on this CPU (exit {probe.returncode}); rebuild with the README flags"
    from tinyllm.teachers.backends import make_backend
    from tinyllm.teachers.config import teacher_config

    cfg = teacher_config(
        "bench",
        {
            "backend": "llama_cpp",
            "model": str(gguf),
            "max_new_tokens": max_new,
            "n_threads": os.cpu_count(),
            "icl": {"k": 0, "source": None},
        },
    )
    be = make_backend(cfg)
    be.resolve_format()
    toks, secs = 0, 0.0
    for p in prompts:
        t = time.perf_counter()
        (g,) = be.generate_batch([p])
        secs += time.perf_counter() - t
        if g.error:
            raise RuntimeError(g.error)
        toks += g.new_tokens
    be.close()
    return toks, secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        default=os.environ.get("TEACHER_MODEL_DIR", "/tmp/smol"),
        help="converted SmolLM2 folder (made from the GGUF when missing)",
    )
    ap.add_argument("--release", default=str(ROOT.parent / "shared/benchmarks/tinyllm-release"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--k", type=int, default=2, help="in-context examples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    from tinyllm.offline_models import locate_gguf, materialize_student

    gguf = locate_gguf("smollm2-135m-instruct")
    model_dir = args.model
    if not (Path(model_dir) / "config.json").exists():
        model_dir = tempfile.mkdtemp(prefix="smol-")
        print(f"converting {gguf.name} to {model_dir} (about a minute) ...", flush=True)
        materialize_student("gguf-pypi:smollm2-135m-instruct", Path(model_dir))
    qs, prompts = prompts_for(args.n, Path(args.release), args.k)
    print(
        f"{len(prompts)} prompts, {args.k} in-context examples, greedy, max_new_tokens={args.max_new_tokens}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs",
        flush=True,
    )

    rows = []
    if not args.skip_naive:
        t, s = naive(model_dir, prompts, args.max_new_tokens)
        rows.append(("transformers naive (fp32, 1 at a time)", t, s))
    for prec in ("fp32", "bf16"):
        t, s, nparams = batched(model_dir, prompts, qs, args.max_new_tokens, args.batch_size, prec)
        rows.append((f"transformers backend ({prec}, batch {args.batch_size}, sorted)", t, s))
    lc = llama_cpp(gguf, prompts, args.max_new_tokens)
    if isinstance(lc, str):
        rows.append((f"llama.cpp ({lc})", 0, 0.0))
    else:
        rows.append(("llama.cpp (Q4_1 GGUF, 1 at a time)", *lc))

    base = rows[0][1] / rows[0][2] if rows and rows[0][2] else None
    print("\n| path | new tokens | seconds | tokens/s | vs first row |\n|---|---|---|---|---|")
    for name, t, s in rows:
        tps = t / s if s else 0.0
        ratio = f"{tps / base:.2f}x" if base and s else "-"
        print(f"| {name} | {t} | {s:.1f} | {tps:.1f} | {ratio} |")

    bw = bandwidth_gbs()
    weights = {"fp32": nparams * 4, "bf16": nparams * 2, "q4_1": gguf.stat().st_size}
    print(
        f"\nDecode roofline (memory bandwidth, numpy copy: {bw:.1f} GB/s). Each decode step reads every weight "
        f"once ({nparams / 1e6:.0f}M parameters; tied embeddings counted once); a batch of B shares that read."
    )
    print("| weights | bytes per step | roofline tokens/s at B=1 | at B=16 |\n|---|---|---|---|")
    for name, b in weights.items():
        print(f"| {name} | {b / 1e6:.0f} MB | {bw * 1e9 / b:.0f} | {16 * bw * 1e9 / b:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
