"""Credentials never reach a stored file or a log line (issue 12 items 12 and 13).

``tinyllm.redact`` is the one place that masks them; the teacher backend (error bodies), the
source downloader (URLs) and MLflow tracking (the tracking URI, tinyllm.tracking) call it. The
end-to-end check with a server that echoes its request headers is in test_teachers_openai.py.
"""

import pytest

from tinyllm.redact import MASK, redact, redact_uri

KEY = "sk-live-0123456789abcdefghijKLMNOP"


@pytest.mark.parametrize(
    "uri, want",
    [
        ("http://alice:s3cret@mlflow.example:5000", f"http://alice:{MASK}@mlflow.example:5000"),
        ("postgresql://mlflow:pw%40x@db:5432/mlflow", f"postgresql://mlflow:{MASK}@db:5432/mlflow"),
        ("https://ghp_tok3n@github.com/o/r.tar.gz", f"https://{MASK}@github.com/o/r.tar.gz"),
        ("https://host/release.tar.gz?token=abc123&x=1", f"https://host/release.tar.gz?token={MASK}&x=1"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////work/main/mlflow.db", "sqlite:////work/main/mlflow.db"),  # byte-identical when clean
        ("../shared/benchmarks/tinyllm-release", "../shared/benchmarks/tinyllm-release"),
    ],
)
def test_redact_uri(uri, want):
    # guards: a tracking URI with user:password was printed in the log (item 13)
    assert redact_uri(uri) == want


@pytest.mark.parametrize(
    "text, leaked",
    [
        ('{"headers": {"Authorization": "Bearer abcdef123456"}}', "abcdef123456"),
        ("authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("POST /v1?api_key=k-12345678 failed", "k-12345678"),
        ('{"api_key": "k-12345678", "x-api-key": "zz-87654321"}', "87654321"),
        ("openai key sk-proj-AbCdEf0123456789 rejected", "AbCdEf0123456789"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI"),
        ("connect to postgresql://u:hunter2@db/x failed", "hunter2"),
    ],
)
def test_redact_masks_credentials_in_free_text(text, leaked):
    # guards: raw error bodies with keys were stored in the cache and printed (item 12)
    out = redact(text)
    assert leaked not in out and MASK in out


def test_redact_masks_a_known_secret_anywhere_and_keeps_plain_text():
    # guards: a key echoed in an unusual field (no recognisable key name) still goes
    assert redact("echo: my-custom-key-value-42", secrets=("my-custom-key-value-42",)) == f"echo: {MASK}"
    plain = "HTTP 500 from http://127.0.0.1:8000/v1: max_tokens=48 too large"
    assert redact(plain) == plain and redact(None) is None


def test_fetch_never_stores_or_prints_a_token_of_the_source_url(tmp_path):
    # guards: data.source = a tarball URL carrying a token was logged and stored verbatim in
    # data/raw/SOURCE.json (a DVC output)
    import functools
    import json
    import shutil
    import subprocess
    import sys
    import tarfile
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path

    import yaml
    from test_sources import make_release

    root = Path(__file__).resolve().parents[1]
    for name in ("stages", "src"):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    release = make_release(tmp_path / "rel" / "TinyLLM-x")
    (tmp_path / "www").mkdir()
    with tarfile.open(tmp_path / "www" / "release.tar.gz", "w:gz") as t:
        t.add(release, arcname="TinyLLM-x")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        p = yaml.safe_load((root / "params.yaml").read_text())
        url = f"http://127.0.0.1:{httpd.server_address[1]}/release.tar.gz?token=hunter2secret"
        p["data"].update(source=url, benchmarks=["arc"])
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
        res = subprocess.run(
            [sys.executable, "stages/fetch.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert res.returncode == 0, res.stderr[-2000:]
    assert "release.tar.gz?token=" in res.stderr and "hunter2secret" not in res.stdout + res.stderr
    stored = json.loads((tmp_path / "data" / "raw" / "SOURCE.json").read_text())["source"]
    assert stored.endswith(f"token={MASK}")


def test_a_prefix_or_suffix_of_a_secret_is_masked_and_plain_text_is_kept():
    # fault 4: a body cut by the server keeps only the key's start (>= 8 characters)
    assert redact("echo " + KEY[:12], secrets=(KEY,)) == f"echo {MASK}"
    assert redact(KEY[-9:] + " trailing", secrets=(KEY,)) == f"{MASK} trailing"
    assert redact("echo " + KEY[:7] + "!", secrets=(KEY,)) == "echo " + KEY[:7] + "!"  # too short to say
    assert redact("max_tokens=48", secrets=(KEY,)) == "max_tokens=48"
