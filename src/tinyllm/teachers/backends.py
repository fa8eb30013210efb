"""Teacher backends behind one interface: ``generate_batch(prompts) -> list[Generation]``.

- ``transformers``: a local folder, a hub id or a GGUF file (``gguf_file=``), causal or seq2seq;
  batched ``generate`` with left padding (the caller sorts prompts by ``prompt_length``).
- ``llama_cpp``: llama-cpp-python on a GGUF file (CPU); imported lazily, so it stays optional.
- ``openai``: any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, a hosted API) over
  HTTP with ``requests``; concurrent requests, timeouts, retries with exponential backoff.

A backend never raises for one bad request: it returns a ``Generation`` with ``error`` set, and
the caller writes a ``failed`` record. Loading errors (missing model, bad URL) do raise.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .config import TeacherConfig
from .prompts import TeacherPrompt

log = logging.getLogger(__name__)

# Plain-text teachers write the next exercise after their rationale; stop there.
PLAIN_STOP = ["\nQuestion:", "\n\nQuestion"]


@dataclass
class Generation:
    """One teacher reply. ``prompt_text``: the exact string fed to the model when the backend knows it."""

    text: str = ""
    new_tokens: int = 0
    finish_reason: str = "stop"  # stop | length | error
    seconds: float = 0.0  # this reply's share of the wall time
    error: str | None = None
    prompt_text: str | None = None


class Backend:
    """Interface. ``prompt_format`` resolves "auto"; the model itself loads on first use."""

    name = "base"
    # True: a reply does not depend on the other prompts of its batch (one request each); False:
    # batched decoding (padding, bf16 rounding) may change it, and a resumed run re-forms the batch.
    batch_invariant = True

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg

    def resolve_format(self) -> str:
        return "chat" if self.cfg.prompt_format == "auto" else self.cfg.prompt_format

    def prompt_length(self, prompt: TeacherPrompt) -> int:
        return len(prompt.key_text())

    def generate_batch(self, prompts: list[TeacherPrompt]) -> list[Generation]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def resolve_model_file(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None); ``gguf-pypi:<name>`` -> the installed, hash-checked file."""
    if model.startswith("gguf-pypi:"):
        from ..offline_models import locate_gguf

        path = locate_gguf(model.split(":", 1)[1])
        return str(path.parent), path.name
    if model.endswith(".gguf") and gguf_file is None:
        p = Path(model)
        return str(p.parent), p.name
    return model, gguf_file


# --------------------------------------------------------------------------- transformers


class TransformersBackend(Backend):
    name = "transformers"
    batch_invariant = False

    def __init__(self, cfg: TeacherConfig):
        super().__init__(cfg)
        self.model = self.tok = None
        self.seq2seq = None

    def _load_tokenizer(self):
        if self.tok is not None:
            return
        from transformers import AutoConfig, AutoTokenizer

        src, gguf = resolve_model_file(self.cfg.model, self.cfg.gguf_file)
        kw = {"gguf_file": gguf} if gguf else {}
        self._src, self._kw = src, kw
        mcfg = AutoConfig.from_pretrained(src, **kw)
        self.seq2seq = bool(getattr(mcfg, "is_encoder_decoder", False))
        self.tok = AutoTokenizer.from_pretrained(src, **kw)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        # Decoder-only batches are padded on the left so every row's last token is its prompt's
        # last token; the prompt's *start* is what gets cut when it is too long.
        self.tok.padding_side = "left" if not self.seq2seq else "right"
        self.tok.truncation_side = "left"

    def _load_model(self):
        if self.model is not None:
            return
        import torch

        from ..student import model_class, resolve_precision

        self._load_tokenizer()
        from transformers import AutoConfig

        mcfg = AutoConfig.from_pretrained(self._src, **self._kw)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        precision = resolve_precision(self.cfg.precision, device)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        t0 = time.perf_counter()
        self.model = model_class(mcfg).from_pretrained(self._src, dtype=dtype, **self._kw).to(device).eval()
        self.device = device
        log.info("loaded %s (%s, %s) in %.1fs", self.cfg.model, type(self.model).__name__, precision,
                 time.perf_counter() - t0)

    def resolve_format(self) -> str:
        if self.cfg.prompt_format != "auto":
            return self.cfg.prompt_format
        self._load_tokenizer()
        return "chat" if (not self.seq2seq and getattr(self.tok, "chat_template", None)) else "plain"

    def render(self, prompt: TeacherPrompt) -> str:
        """The exact string fed to the model (chat prompts go through the model's chat template)."""
        self._load_tokenizer()
        if prompt.format == "chat":
            return self.tok.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
        return prompt.text

    def prompt_length(self, prompt: TeacherPrompt) -> int:
        return len(self.tok(self.render(prompt), add_special_tokens=False)["input_ids"])

    def generate_batch(self, prompts: list[TeacherPrompt]) -> list[Generation]:
        import torch

        self._load_model()
        texts = [self.render(p) for p in prompts]
        # A chat template already holds its special tokens; plain prompts get the tokenizer's (BOS/EOS).
        add_special = prompts[0].format != "chat"
        enc = self.tok(texts, return_tensors="pt", padding=True, truncation=True,
                       max_length=self.cfg.max_input_tokens, add_special_tokens=add_special).to(self.device)
        gen_kw = dict(max_new_tokens=self.cfg.max_new_tokens, pad_token_id=self.tok.pad_token_id)
        if self.cfg.temperature > 0:
            torch.manual_seed(self.cfg.seed)
            gen_kw.update(do_sample=True, temperature=float(self.cfg.temperature), top_p=float(self.cfg.top_p))
        else:
            gen_kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        eos = {self.tok.eos_token_id, *_as_list(self.model.generation_config.eos_token_id)} - {None}
        gen_kw["eos_token_id"] = sorted(eos)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**enc, **gen_kw)  # (batch, prompt_len + new) or (batch, new) for seq2seq
        dt = time.perf_counter() - t0
        new = out if self.seq2seq else out[:, enc["input_ids"].shape[1]:]
        results = []
        for row, text in zip(new.tolist(), texts):
            if self.seq2seq and row and row[0] == self.model.config.decoder_start_token_id:
                row = row[1:]
            n, stopped = len(row), False
            for j, t in enumerate(row):
                if t in eos:
                    n, stopped = j, True
                    break
            results.append(Generation(text=self.tok.decode(row[:n], skip_special_tokens=True),
                                      new_tokens=n, finish_reason="stop" if stopped else "length",
                                      prompt_text=text))
        total = sum(g.new_tokens for g in results) or 1
        for g in results:  # each reply's share of the batch time, by its tokens
            g.seconds = dt * g.new_tokens / total
        return results


def _as_list(x):
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


# --------------------------------------------------------------------------- llama.cpp


class LlamaCppBackend(Backend):
    name = "llama_cpp"

    def __init__(self, cfg: TeacherConfig):
        super().__init__(cfg)
        self.llm = None

    def _load(self):
        if self.llm is not None:
            return
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ImportError(
                "the llama_cpp backend needs llama-cpp-python (optional): build it with the CMAKE_ARGS "
                "in docs (the default build crashes on AVX-512/AMX CPUs): pip install --no-cache-dir "
                "--force-reinstall --no-deps llama-cpp-python==0.3.36"
            ) from e
        folder, name = resolve_model_file(self.cfg.model, self.cfg.gguf_file)
        path = Path(folder) / name if name else Path(folder)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: GGUF file not found (teachers.{self.cfg.name}.model)")
        t0 = time.perf_counter()
        self.llm = Llama(model_path=str(path), n_ctx=self.cfg.max_input_tokens + self.cfg.max_new_tokens,
                         n_threads=self.cfg.n_threads, seed=self.cfg.seed, verbose=False)
        log.info("loaded %s with llama.cpp in %.1fs", path, time.perf_counter() - t0)

    def resolve_format(self) -> str:
        if self.cfg.prompt_format != "auto":
            return self.cfg.prompt_format
        self._load()
        return "chat" if self.llm.metadata.get("tokenizer.chat_template") else "plain"

    def generate_batch(self, prompts: list[TeacherPrompt]) -> list[Generation]:
        self._load()
        # llama-cpp-python decodes one sequence at a time; its KV cache reuses a shared prefix.
        kw = dict(max_tokens=self.cfg.max_new_tokens, temperature=float(self.cfg.temperature),
                  top_p=float(self.cfg.top_p), seed=self.cfg.seed)
        out = []
        for p in prompts:
            t0 = time.perf_counter()
            try:
                if p.format == "chat":
                    r = self.llm.create_chat_completion(messages=p.messages, **kw)
                    text = r["choices"][0]["message"]["content"] or ""
                else:
                    r = self.llm.create_completion(prompt=p.text, stop=PLAIN_STOP, **kw)
                    text = r["choices"][0]["text"]
                out.append(Generation(text=text, new_tokens=r["usage"]["completion_tokens"],
                                      finish_reason=r["choices"][0].get("finish_reason") or "stop",
                                      seconds=time.perf_counter() - t0,
                                      prompt_text=p.text if p.format == "plain" else None))
            except Exception as e:  # one bad prompt (e.g. longer than n_ctx) must not lose the batch
                out.append(Generation(finish_reason="error", error=f"{type(e).__name__}: {e}",
                                      seconds=time.perf_counter() - t0))
        return out

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None


# --------------------------------------------------------------------------- OpenAI-compatible


class ClientError(RuntimeError):
    """A 4xx answer other than 408/409/429: retrying cannot help (bad key, unknown model, bad request)."""


RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, cfg: TeacherConfig):
        super().__init__(cfg)
        import requests  # noqa: F401  (fail early when missing)

        self.base_url = cfg.base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise RuntimeError(f"teachers.{cfg.name}.api_key_env names {cfg.api_key_env!r}, "
                                   "which is not set in the environment")
            self.headers["Authorization"] = f"Bearer {key}"
        self._local = threading.local()  # one requests.Session per worker thread
        self._pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="teacher")

    def _session(self):
        import requests

        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _post(self, path: str, body: dict) -> dict:
        """POST with retries on 429/5xx/connection errors; ``ClientError`` on other 4xx."""
        import requests

        url = f"{self.base_url}{path}"
        delay, last = self.cfg.backoff_s, None
        for attempt in range(self.cfg.max_retries + 1):
            try:
                r = self._session().post(url, data=json.dumps(body), headers=self.headers,
                                         timeout=self.cfg.request_timeout_s)
            except (requests.ConnectionError, requests.Timeout) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code == 200:
                    try:
                        return r.json()
                    except ValueError:
                        last = f"HTTP 200 from POST {url} with a body that is not JSON: {r.text[:200]!r}"
                elif r.status_code in RETRY_STATUS or r.status_code >= 500:
                    last = f"HTTP {r.status_code} from POST {url}: {r.text[:300]}"
                    retry_after = r.headers.get("Retry-After")
                    if retry_after and retry_after.replace(".", "", 1).isdigit():
                        delay = max(delay, min(float(retry_after), 60.0))
                else:
                    raise ClientError(f"HTTP {r.status_code} from POST {url} (not retried: a client error; "
                                      f"check base_url, model and the API key): {r.text[:300]}")
            if attempt < self.cfg.max_retries:
                # full jitter keeps concurrent workers from retrying in lock-step
                time.sleep(delay * (0.5 + random.random() / 2))
                delay *= 2
        raise RuntimeError(f"gave up after {self.cfg.max_retries + 1} attempts; last: {last}")

    def _one(self, p: TeacherPrompt) -> Generation:
        t0 = time.perf_counter()
        body = {"model": self.cfg.model, "max_tokens": self.cfg.max_new_tokens,
                "temperature": float(self.cfg.temperature)}
        if self.cfg.temperature > 0:
            body.update(top_p=float(self.cfg.top_p), seed=self.cfg.seed)
        try:
            if p.format == "chat":
                r = self._post("/chat/completions", {**body, "messages": p.messages})
                choice = r["choices"][0]
                text = (choice.get("message") or {}).get("content") or ""
            else:
                r = self._post("/completions", {**body, "prompt": p.text, "stop": PLAIN_STOP})
                choice = r["choices"][0]
                text = choice.get("text") or ""
            usage = r.get("usage") or {}
            n = usage.get("completion_tokens")
            return Generation(text=text, new_tokens=int(n) if n is not None else len(text.split()),
                              finish_reason=choice.get("finish_reason") or "stop",
                              seconds=time.perf_counter() - t0,
                              prompt_text=p.text if p.format == "plain" else None)
        except (KeyError, IndexError, TypeError) as e:
            return Generation(finish_reason="error", seconds=time.perf_counter() - t0,
                              error=f"malformed response from {self.base_url}: {type(e).__name__}: {e}")
        except Exception as e:
            return Generation(finish_reason="error", error=str(e), seconds=time.perf_counter() - t0)

    def generate_batch(self, prompts: list[TeacherPrompt]) -> list[Generation]:
        t0 = time.perf_counter()
        out = list(self._pool.map(self._one, prompts))
        # requests overlap: give each its share of the batch's wall time so tokens/s is throughput
        dt, total = time.perf_counter() - t0, sum(g.new_tokens for g in out) or 1
        for g in out:
            if g.error is None:
                g.seconds = dt * g.new_tokens / total
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)


BACKENDS: dict[str, type[Backend]] = {
    "transformers": TransformersBackend,
    "llama_cpp": LlamaCppBackend,
    "openai": OpenAIBackend,
}


def make_backend(cfg: TeacherConfig) -> Backend:
    try:
        cls = BACKENDS[cfg.backend]
    except KeyError:
        raise ValueError(f"teachers.{cfg.name}.backend {cfg.backend!r} is unknown; "
                         f"known: {', '.join(BACKENDS)}") from None
    return cls(cfg)
