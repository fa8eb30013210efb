"""Team sharing with real parts (issue 5; docs/sharing.md).

Repo A runs the shrunk pipeline once (tests/pipeline_copy.py) and pushes through
scripts/share.sh to (a) a local-directory DVC remote and (b) an S3 remote served by moto on
127.0.0.1; fresh `git clone`s then pull and must get byte-identical outputs, a no-op
`dvc repro` and the same evaluation. A corrupted or missing object in the remote must fail the
pull, naming the output. MLflow: the evaluate stage logs over HTTP to `make mlflow-ui` (SQLite)
and to a team server (PostgreSQL + proxied S3 artifacts); runs are read back over REST, and the
UI's runs page is rendered in headless Chromium.

Needs: the offline mirror (else skipped); `.venv-moto` (`make setup-moto`) for S3; PostgreSQL
binaries (`apt-get install -y postgresql`) and `/usr/bin/chromium` for their tests.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_copy import ROOT, base_env, git_commit, make_shrunk_repo, remove_if_passed, run  # noqa: E402

pytestmark = pytest.mark.slow

VENV = Path(sys.executable).parent.parent
MOTO_SERVER = ROOT / ".venv-moto" / "bin" / "moto_server"
CHROMIUM = Path("/usr/bin/chromium")
S3_CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
TIMINGS: dict[str, float] = {}  # printed at the end of the module (pytest -s) for docs/sharing.md


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A background server in its own process group (killed as a group: mlflow and make leave
    children behind otherwise)."""

    def __init__(self, cmd, cwd, env, log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_http(self, url: str, timeout: float) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return time.perf_counter() - t0
            except urllib.error.HTTPError:
                return time.perf_counter() - t0  # answering at all = up
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{url} not up after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=15)
                return
            except subprocess.TimeoutExpired:
                continue


def share(args, cwd, env, check=True):
    return run(["bash", str(ROOT / "scripts" / "share.sh"), *args], cwd, env, check=check)


def share_rc(args, cwd, env):
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "share.sh"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return res.returncode, res.stdout + res.stderr


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def timed(key, fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    TIMINGS[key] = round(time.perf_counter() - t0, 1)
    return out


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def scores(metrics: dict) -> dict:
    """The per-split accuracy blocks of eval.json (drops run-dependent scalars: wall time, RSS)."""
    out = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    assert out.get("valid"), metrics
    return out


SCRATCH: list[Path] = []  # this test's clones and remote copies (~1-2 GB each): see drop_scratch


def clone(origin, name: str, scratch: bool = True) -> Path:
    """A teammate's `git clone`; removed after the test when it passes (``scratch=False``: the
    caller removes it, e.g. a module fixture that outlives the test)."""
    d = origin.tmp / name
    run(["git", "clone", "-q", str(origin.bare), str(d)], origin.tmp, origin.env)
    if scratch:
        SCRATCH.append(d)
    return d


@pytest.fixture(autouse=True)
def drop_scratch(request):
    """Each test's clones go as soon as it passes: all kept, this module peaked at 21 GB."""
    failed = request.session.testsfailed
    yield
    remove_if_passed(request.session, failed, *SCRATCH)
    SCRATCH.clear()


def evaluate_pulled(d: Path, env, tmp: Path) -> dict:
    """Evaluate the pulled checkpoint without touching the clone's tracked outputs."""
    tmp.mkdir(parents=True, exist_ok=True)
    run(
        [
            sys.executable,
            "stages/evaluate.py",
            "--no-mlflow",
            "--metrics",
            str(tmp / "eval.json"),
            "--plot",
            str(tmp / "eval.csv"),
            "--predictions",
            str(tmp / "predictions"),
        ],
        d,
        env,
    )
    return json.loads((tmp / "eval.json").read_text())


def lock_md5(d: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((d / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)


def http_json(url: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def read_runs_over_rest(base: str, experiment: str = "tinyllm") -> list[dict]:
    q = urllib.parse.urlencode({"experiment_name": experiment})
    exp = http_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?{q}")["experiment"]
    runs = http_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})
    return exp["experiment_id"], runs.get("runs", [])


def mlflow_server_cmd(backend: str, artifacts: str, port: int) -> list[str]:
    return [
        str(VENV / "bin" / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def read_artifact_over_rest(base: str, run_json: dict, path: str) -> bytes:
    """A run's artifact through the server's proxy (``mlflow-artifacts:/<exp>/<run>/artifacts``),
    the way the UI and a teammate's client read it."""
    uri = run_json["info"]["artifact_uri"]
    assert uri.startswith("mlflow-artifacts:"), uri
    rel = uri.split(":", 1)[1].lstrip("/")
    with urllib.request.urlopen(f"{base}/api/2.0/mlflow-artifacts/artifacts/{rel}/{path}", timeout=120) as r:
        return r.read()


def assert_run_matches_metrics(run_json: dict, d: Path, base: str) -> None:
    """The run read over REST carries metrics/eval.json: each accuracy as a percent metric, the
    whole file (n, CIs, rules, timings) as its eval.json artifact, and the lineage."""
    from tinyllm.tracking import split_metrics

    metrics = {m["key"]: m["value"] for m in run_json["data"].get("metrics", [])}
    results = json.loads((d / "metrics" / "eval.json").read_text())
    # per split and benchmark, read back through the MLflow names (accuracy/<split>/<b>, percent)
    expected = {
        f"{split}.{b}": round(100 * m["accuracy"], 2)
        for split, per in results.items()
        if isinstance(per, dict)
        for b, m in per.items()
        if isinstance(m, dict) and "accuracy" in m
    }
    got = {f"{split}.{b}": 100 * m["accuracy"] for split, per in split_metrics(metrics).items() for b, m in per.items()}
    assert expected and got == pytest.approx(expected)
    assert metrics["accuracy/valid/average"] == round(100 * results["valid"]["average"]["accuracy"], 2)
    # the exact numbers and the bookkeeping (n, CIs, wall time, RSS) travel as the artifact
    assert json.loads(read_artifact_over_rest(base, run_json, "eval.json")) == results
    tags = {t["key"]: t["value"] for t in run_json["data"].get("tags", [])}
    assert tags["dvc.md5.models/student"] == lock_md5(d, "distill", "models/student")


# ----------------------------------------------------------------------------- fixtures

# every output of the distill stage (all DVC-cached: the run-cache can restore them)
DISTILL_OUTS = ("models/student", "metrics/mlflow_run.json", "metrics/train.json", "metrics/train_log.tsv")


@pytest.fixture(scope="module")
def origin(request, tmp_path_factory, mirror):
    """Repo A: the shrunk pipeline run once, a local remote configured and committed, pushed;
    a bare git repo plays the team's git server."""
    failed = request.session.testsfailed
    tmp = tmp_path_factory.mktemp("sharing")
    a = tmp / "a"
    a.mkdir()
    make_shrunk_repo(a, mirror, extra_files=("Makefile", ".gitignore"), extra_dirs=("scripts",))
    env = base_env(MLFLOW_TRACKING_URI=f"sqlite:///{a}/mlflow.db")
    for k in list(env):  # the teammate flow must not depend on the developer's AWS setup
        if k.startswith("AWS_"):
            del env[k]
    timed("repro_shrunk", run, ["dvc", "repro"], a, env)
    remote = tmp / "remote-local"
    share(["remote-local", str(remote)], a, env)
    git_commit(a, env, "shrunk pipeline run + local remote")
    bare = tmp / "origin.git"
    run(["git", "clone", "-q", "--bare", str(a), str(bare)], tmp, env)
    run(["git", "remote", "add", "origin", str(bare)], a, env)
    out = timed("push_local", share, ["push"], a, env)
    sizes = {
        p: du(a / p)
        for p in ("data/raw", "data/prepared", "data/rationales", "models/base", "models/student", "eval/predictions")
    }
    TIMINGS["remote_local_bytes"] = du(remote)
    ns = SimpleNamespace(
        tmp=tmp,
        a=a,
        env=env,
        bare=bare,
        remote=remote,
        push_out=out,
        sizes=sizes,
        metrics=json.loads((a / "metrics" / "eval.json").read_text()),
    )
    yield ns
    print("\nsharing timings (s) / sizes (bytes):", json.dumps({**TIMINGS, **sizes}, indent=1))
    remove_if_passed(request.session, failed, tmp)


@pytest.fixture(scope="module")
def moto(origin):
    """moto's S3 server on 127.0.0.1 (own venv: it needs a newer boto3 than dvc-s3 allows)."""
    if not MOTO_SERVER.exists():
        pytest.skip(f"{MOTO_SERVER} missing: run `make setup-moto` (creates .venv-moto)")
    port = free_port()
    srv = Server(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], origin.tmp, os.environ.copy(), origin.tmp / "moto.log"
    )
    try:
        srv.wait_http(f"http://127.0.0.1:{port}/", 60)
        import boto3

        url = f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        for bucket in ("tinyllm-dvc", "tinyllm-mlflow"):
            s3.create_bucket(Bucket=bucket)
        yield SimpleNamespace(url=url, s3=s3)
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- DVC remotes


def check_teammate_clone(origin, d: Path, env: dict, tag: str) -> None:
    """What a teammate must see after pulling: nothing to rerun, byte-identical checkpoint,
    the same evaluation numbers as the original run."""
    out = run(["dvc", "repro"], d, env)
    assert "Running stage" not in out, out  # guards: a missing/mismatched output -> hours of rerun
    assert run(["dvc", "status", "--json"], d, env).strip().endswith("{}")
    st = origin.a / "models" / "student" / "model.safetensors"
    assert md5(d / "models" / "student" / "model.safetensors") == md5(st)
    got = timed(f"evaluate_pulled_{tag}", evaluate_pulled, d, env, origin.tmp / f"eval-{tag}")
    assert scores(got) == scores(origin.metrics)


def test_push_reports_everything_in_local_remote(origin):
    # guards: a push that skips the run-cache or an output (the share script checks status --cloud)
    assert "pushed to 'local'" in origin.push_out
    assert (origin.remote / "runs").is_dir() and any((origin.remote / "runs").rglob("*")), "run-cache not pushed"
    cfg = (origin.a / ".dvc" / "config").read_text()
    assert "verify = true" in cfg and str(origin.remote) in cfg  # teammates get the verifying remote


def test_local_remote_fresh_clone_pull_then_repro_is_noop(origin):
    d = clone(origin, "clone-local")
    out = timed("pull_local", share, ["pull"], d, origin.env)
    assert "output(s) match their recorded hashes" in out
    check_teammate_clone(origin, d, origin.env, "local")


def test_local_remote_repro_pull_alternative(origin):
    # `dvc repro --pull` (no separate pull) must also end with nothing rerun
    d = clone(origin, "clone-repro-pull")
    out = timed("repro_pull_local", run, ["dvc", "repro", "--pull"], d, origin.env)
    assert "Running stage" not in out, out
    assert md5(d / "models" / "student" / "model.safetensors") == md5(
        origin.a / "models" / "student" / "model.safetensors"
    )


def test_s3_remote_fresh_clone_pull_then_repro_is_noop(origin, moto):
    env = {**origin.env, **S3_CREDS}
    share(["remote-s3", "s3://tinyllm-dvc/cache", moto.url], origin.a, env)
    cfg = (origin.a / ".dvc" / "config").read_text()
    # guards: credentials committed to git (they belong in AWS_* or .dvc/config.local)
    assert "endpointurl" in cfg and S3_CREDS["AWS_SECRET_ACCESS_KEY"] not in cfg
    git_commit(origin.a, env, "S3 remote")
    run(["git", "push", "-q", "origin", "HEAD"], origin.a, env)
    timed("push_s3", share, ["push", "-r", "s3"], origin.a, env)
    keys = [
        o["Key"]
        for p in moto.s3.get_paginator("list_objects_v2").paginate(Bucket="tinyllm-dvc")
        for o in p.get("Contents", [])
    ]
    assert any(k.startswith("cache/runs/") for k in keys), "run-cache not in S3"
    d = clone(origin, "clone-s3")
    assert "s3" in run(["dvc", "remote", "default"], d, env)
    timed("pull_s3", share, ["pull"], d, env)
    check_teammate_clone(origin, d, env, "s3")


def _dir_entry_object(a: Path, remote: Path, out_path: str, relpath: str) -> Path:
    """The object in `remote` that holds file `relpath` of directory output `out_path`."""
    stage = {"models/student": "distill", "data/prepared": "prepare"}[out_path]
    dir_md5 = lock_md5(a, stage, out_path)
    manifest = json.loads((a / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2] / dir_md5[2:]).read_text())
    h = next(e["md5"] for e in manifest if e["relpath"] == relpath)
    return remote / "files" / "md5" / h[:2] / h[2:]


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_damaged_remote_object_fails_pull_naming_the_output(origin, damage):
    """A flipped object (student weights) or a deleted one (a prepared split) in the remote: the
    pull must fail, name that output and only that one, and never leave a wrong file."""
    bad = origin.tmp / f"remote-{damage}"
    shutil.copytree(origin.remote, bad)
    SCRATCH.append(bad)
    if damage == "corrupt":
        target, rel = "models/student", "model.safetensors"
        obj = _dir_entry_object(origin.a, bad, target, rel)
        obj.chmod(0o644)  # cache/remote objects are read-only
        raw = bytearray(obj.read_bytes())
        raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)  # same size, different bytes
        obj.write_bytes(bytes(raw))
    else:
        target, rel = "data/prepared", "arc/valid.jsonl"
        obj = _dir_entry_object(origin.a, bad, target, rel)
        obj.unlink()
    d = clone(origin, f"clone-{damage}")
    run(["dvc", "remote", "modify", "--local", "local", "url", str(bad)], d, origin.env)
    rc, out = share_rc(["pull", "-r", "local", "models/student", "data/prepared", "data/raw"], d, origin.env)
    assert rc != 0, out
    named = out.split("FAILED", 1)[-1]
    assert target in named, out  # the error names the damaged output...
    assert "data/raw" not in named  # ...and not the intact one
    f = d / target / rel
    good = origin.a / target / rel
    assert not f.exists() or md5(f) == md5(good), "a wrong file landed in the workspace"


def test_verify_catches_a_silently_corrupted_workspace(origin):
    # DVC 3.67 with verify off pulls a corrupt object without error and `dvc status` stays clean;
    # the share script's re-hash must catch it (guards: verify_outputs trusting DVC's state db)
    d = clone(origin, "clone-verify")
    share(["pull", "-r", "local", "models/student"], d, origin.env)
    w = d / "models" / "student" / "config.json"
    w.chmod(0o644)
    w.write_text(w.read_text().replace("{", "{ ", 1))
    rc, out = share_rc(["verify", "models/student"], d, origin.env)
    assert rc == 1 and "models/student: file config.json does not match" in out, out


def test_experiment_shared_with_exp_push_pull(origin):
    """Teammate B runs an experiment and pushes it; teammate C pulls and applies it."""
    b = clone(origin, "clone-exp-b")
    env = {**origin.env, "MLFLOW_TRACKING_URI": f"sqlite:///{b}/mlflow.db"}
    share(["pull", "-r", "local"], b, env)
    out = timed(
        "exp_run_eval_only",
        run,
        ["dvc", "exp", "run", "-n", "shared-exp", "-S", "evaluate.max_per_benchmark=2"],
        b,
        env,
    )
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    # reusing pulled outputs: only the changed stage reruns (and check_params, which validates every
    # params change in a second; its output is constant, so nothing downstream of it reruns)
    assert ran == {"check_params", "evaluate"}, out
    b_metrics = json.loads((b / "metrics" / "eval.json").read_text())
    run(["dvc", "exp", "push", "-r", "local", "origin", "shared-exp"], b, env)
    c = clone(origin, "clone-exp-c")
    assert "shared-exp" in run(["dvc", "exp", "list", "origin"], c, env)
    run(["dvc", "exp", "pull", "-r", "local", "origin", "shared-exp"], c, env)
    run(["dvc", "exp", "apply", "shared-exp"], c, env)
    assert json.loads((c / "metrics" / "eval.json").read_text()) == b_metrics
    preds = (c / "eval" / "predictions" / "valid" / "arc.jsonl").read_text().splitlines()
    assert len(preds) == 2  # the experiment's cached output, not main's (3 questions)
    assert yaml.safe_load((c / "params.yaml").read_text())["evaluate"]["max_per_benchmark"] == 2


# ----------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="module")
def ui_server(request, origin):
    """`make mlflow-ui` (the README's command) in a teammate clone, and one pipeline run whose
    evaluate stage logs to it over HTTP."""
    failed = request.session.testsfailed
    d = clone(origin, "clone-mlflow", scratch=False)  # outlives the first test that uses it
    # distill's outputs (the model, its metrics and MLflow run file: all DVC-cached) + the questions
    share(["pull", "-r", "local", *DISTILL_OUTS, "data/prepared"], d, origin.env)
    port = free_port()
    srv = Server(
        ["make", "mlflow-ui", f"MLFLOW_PORT={port}", f"VENV={VENV}"], d, origin.env, origin.tmp / "mlflow-ui.log"
    )
    try:
        TIMINGS["mlflow_ui_health"] = round(srv.wait_http(f"http://127.0.0.1:{port}/health", 180), 1)
        env = {**origin.env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
        out = timed("repro_evaluate_http", run, ["dvc", "repro", "--force", "--single-item", "evaluate"], d, env)
        assert "Running stage 'evaluate'" in out
        yield SimpleNamespace(d=d, port=port, base=f"http://127.0.0.1:{port}")
    finally:
        srv.stop()
    remove_if_passed(request.session, failed, d)


def test_mlflow_run_logged_over_http_reads_back_through_rest(ui_server):
    d = ui_server.d
    _, runs = read_runs_over_rest(ui_server.base)
    assert len(runs) == 1  # guards: the stage ignoring MLFLOW_TRACKING_URI (would log to sqlite)
    r = runs[0]
    assert_run_matches_metrics(r, d, ui_server.base)
    # the run records where its artifacts live: proxied by the server, stored under mlartifacts/
    assert r["info"]["artifact_uri"].startswith("mlflow-artifacts:")
    stored = list((d / "mlartifacts").rglob("eval.json"))
    assert len(stored) == 1 and stored[0].read_text() == (d / "metrics" / "eval.json").read_text()


def test_mlflow_ui_runs_page_lists_run_ids_in_chromium(ui_server, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    exp_id, runs = read_runs_over_rest(ui_server.base)
    url = f"{ui_server.base}/#/experiments/{exp_id}/runs"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome'}",
        "--virtual-time-budget=15000",
        "--window-size=1600,1000",
        "--dump-dom",
        url,
    ]
    t0 = time.perf_counter()
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
    TIMINGS["chromium_dump_dom"] = round(time.perf_counter() - t0, 1)
    (tmp_path / "runs.html").write_text(dom)
    for r in runs:  # guards: a UI command that serves another store or a page without the runs
        assert r["info"]["run_id"] in dom, f"run id not in the rendered runs page ({len(dom)} chars)"


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture
def postgres():
    """A private PostgreSQL cluster on 127.0.0.1 (trust auth), removed afterwards."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install -y postgresql)")
    root = Path(tempfile.mkdtemp(prefix="tinyllm-pg-", dir="/tmp"))  # postgres must reach it
    root.chmod(0o755)
    data, sock = root / "data", root / "sock"
    data.mkdir()
    sock.mkdir()
    as_pg = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        import pwd

        pw = pwd.getpwnam("postgres")
        for p in (data, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        as_pg = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    env = base_env()
    try:
        run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], root, env)
        run(
            [
                *as_pg,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(sock / "postgres.log"),
                "-w",
                "-o",
                f"-p {port} -k {sock} -c listen_addresses=127.0.0.1",
                "start",
            ],
            root,
            env,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_team_server_postgres_backend_proxied_s3_artifacts(origin, moto, postgres):
    """The documented team setup: PostgreSQL store, artifacts proxied to S3; the client sets
    only MLFLOW_TRACKING_URI (no AWS credentials)."""
    d = clone(origin, "clone-team")
    # distill's outputs (the model, its metrics and MLflow run file: all DVC-cached) + the questions
    share(["pull", "-r", "local", *DISTILL_OUTS, "data/prepared"], d, origin.env)
    port = free_port()
    server_env = {
        **origin.env,
        **S3_CREDS,
        "MLFLOW_S3_ENDPOINT_URL": moto.url,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    srv = Server(
        mlflow_server_cmd(postgres, "s3://tinyllm-mlflow/artifacts", port),
        d,
        server_env,
        origin.tmp / "mlflow-team.log",
    )
    try:
        TIMINGS["mlflow_pg_health"] = round(srv.wait_http(f"http://127.0.0.1:{port}/health", 180), 1)
        client_env = {k: v for k, v in origin.env.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
        client_env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
        out = run(["dvc", "repro", "--force", "--single-item", "evaluate"], d, client_env)
        assert "Running stage 'evaluate'" in out
        _, runs = read_runs_over_rest(f"http://127.0.0.1:{port}")
        assert len(runs) == 1
        assert_run_matches_metrics(runs[0], d, f"http://127.0.0.1:{port}")
        assert runs[0]["info"]["artifact_uri"].startswith("mlflow-artifacts:")
        keys = [o["Key"] for o in moto.s3.list_objects_v2(Bucket="tinyllm-mlflow").get("Contents", [])]
        run_id = runs[0]["info"]["run_id"]
        # guards: artifacts written to a local dir of the server instead of the team bucket
        assert any(run_id in k and k.endswith("eval.json") for k in keys), keys
    finally:
        srv.stop()
