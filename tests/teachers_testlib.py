"""Shared helpers of the teacher tests: tiny random models, toy benchmarks, openai-backend configs,
local HTTP servers."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import tiny_causal, tiny_seq2seq

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

WORDS = (
    "sun plant water heat metal spoon magnet iron gravity ball earth moon rock river cloud rain "
    "light shadow seed tree leaf animal fish bird energy food"
).split()


def toy_questions(benchmark: str = "obqa", split: str = "train", n: int = 12) -> list[dict]:
    """Normalised question records with distinct, word-based questions (for TF-IDF tests too)."""
    out = []
    for i in range(n):
        w1, w2, w3 = WORDS[i % len(WORDS)], WORDS[(3 * i + 1) % len(WORDS)], WORDS[(5 * i + 2) % len(WORDS)]
        choices = [f"the {w1}", f"a {w2}", f"some {w3}", f"no {w1} {i}"]
        label = i % 4
        out.append(
            {
                "id": f"{split}-{i}",
                "benchmark": benchmark,
                "split": split,
                "question": f"Why does the {w1} need {w2} and {w3}? (item {i})",
                "choices": choices,
                "answer": choices[label],
                "label": label,
            }
        )
    return out


def write_prepared(root: Path, benchmark: str, split: str, records: list[dict]) -> Path:
    path = Path(root) / benchmark / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_source_cache(root: Path, teacher: str, benchmark: str, records: list[dict]) -> None:
    """An 'ok' rationale per record, the shape the released-rationale importer writes."""
    path = Path(root) / teacher / benchmark / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "id": r["id"],
            "benchmark": benchmark,
            "split": "train",
            "teacher": teacher,
            "rationale": f"Because {r['answer']} fits the question about {r['question'].split()[3]}.",
            "status": "ok",
            "flags": [],
            "prompt": {"hash": "x"},
        }
        for r in records
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def build_tiny_causal(out: Path, seed: int = 0) -> Path:
    """A 2-layer random Llama + a BPE tokenizer trained here, with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [q["question"] + " " + " ".join(q["choices"]) for q in toy_questions(n=40)]
    tok.train_from_iterator(
        corpus * 5 + ["Question: Options: Answer: Rationale: Let's think step by step."] * 20, trainer
    )
    ft = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    ft.chat_template = CHATML
    model = tiny_causal(ft, seed, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048)
    model.save_pretrained(out)
    ft.save_pretrained(out)
    return out


def build_tiny_seq2seq(out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A 1-layer random T5 sharing the tiny tokenizer (no chat template: plain prompts)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = None
    tiny_seq2seq(tok, seed, d_kv=16, num_layers=1, num_heads=2).save_pretrained(out)
    tok.save_pretrained(out)
    (Path(out) / "chat_template.jinja").unlink(missing_ok=True)
    return out


def api_cfg(url: str, preset: dict | None = None, **kw):
    """The ``openai``-backend teacher config of the tests, serving ``url``: 3 quick retries, 2
    concurrent requests of 2 prompts; ``preset`` (e.g. ``ONE_TRY``) and ``kw`` override keys."""
    from tinyllm.teachers.config import teacher_config

    base = {
        "backend": "openai",
        "model": "teacher-x",
        "base_url": url,
        "icl": {"k": 0, "source": None},
        "max_new_tokens": 16,
        "batch_size": 2,
        "concurrency": 2,
        "max_retries": 3,
        "backoff_s": 0.01,
        "request_timeout_s": 10,
    }
    return teacher_config("api", {**base, **(preset or {}), **kw})


# One prompt at a time, one request each, no retry unless a test asks: every request is one the
# test counts or times.
ONE_TRY = {"model": "m", "max_new_tokens": 4, "batch_size": 1, "concurrency": 1, "max_retries": 0, "backoff_s": 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TimedServer:
    """127.0.0.1 server answering request ``n`` (0-based) with HTTP ``status(n)``: ``body`` (bytes),
    or a valid completion where 200. ``times``: when each request arrived (perf_counter)."""

    def __init__(self, status, body: bytes):
        self.times: list[float] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.times.append(time.perf_counter())
                code = status(len(outer.times) - 1)
                data = body if code != 200 else json.dumps(_completion()).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion():
    return {
        "id": "c",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Because."}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class ScriptedServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 that fails on purpose.

    ``script(n)`` gets the 0-based request number and returns an HTTP status; 200 answers a valid
    completion echoing the last user message's first line. ``requests`` counts calls.
    """

    def __init__(self, script):
        self.script, self.requests, self._lock = script, 0, threading.Lock()
        self.auth: str | None = None  # the last Authorization header seen
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.auth = self.headers.get("Authorization")
                with outer._lock:
                    n = outer.requests
                    outer.requests += 1
                status = outer.script(n)
                if status == 200:
                    last = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
                    reply = {
                        "id": f"c{n}",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {
                                    "role": "assistant",
                                    "content": f"It is so because {last.splitlines()[1]}.",
                                },
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17},
                    }
                    data = json.dumps(reply).encode()
                else:
                    data = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class RawServer:
    """A server on 127.0.0.1 whose handler is ``respond(handler, body: dict)``: for faults that
    ScriptedServer cannot script (a body dripped byte by byte, an error echoing the request headers)."""

    def __init__(self, respond):
        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                outer.requests += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    respond(self, body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def drip(handler, body, seconds: float = 30.0, every: float = 0.2) -> None:
    """200 headers at once, then a JSON body one byte every ``every`` s: no single read ever times out."""
    import time

    data = b" " * int(seconds / every) + b"{}"
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    for i in range(len(data)):
        handler.wfile.write(data[i : i + 1])
        handler.wfile.flush()
        time.sleep(every)


def echo_headers(status: int):
    """An error reply whose body repeats every request header (as some proxies and servers do)."""

    def respond(handler, body):
        headers = dict(handler.headers)  # the credential first, so no truncation of the body can hide it
        headers = {k: v for k, v in sorted(headers.items(), key=lambda kv: kv[0].lower() != "authorization")}
        data = json.dumps({"error": {"message": "bad request", "request_headers": headers}}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return respond
