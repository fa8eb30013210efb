"""Teacher backends behind one interface: ``generate_batch(prompts) -> list[Generation]``.

- ``transformers``: a local folder, a hub id or a GGUF file (``gguf_file=``), causal or seq2seq;
  batched ``generate`` with left padding (the caller sorts prompts by ``prompt_length``).
- ``llama_cpp``: llama-cpp-python on a GGUF file (CPU); imported lazily, so it stays optional.
- ``openai``: any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, a hosted API) through
  the official ``openai`` client: its retries and backoff, a total deadline per attempt, concurrency.

A backend never raises for one bad request: it returns a ``Generation`` with ``error`` set, and
the caller writes a ``failed`` record. Loading errors (missing model, bad URL) do raise.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..redact import redact, redact_and_cut
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

        from ..device import auto_model_class, resolve_precision

        self._load_tokenizer()
        from transformers import AutoConfig

        mcfg = AutoConfig.from_pretrained(self._src, **self._kw)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        precision = resolve_precision(self.cfg.precision, device)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        t0 = time.perf_counter()
        self.model = auto_model_class(mcfg).from_pretrained(self._src, dtype=dtype, **self._kw).to(device).eval()
        self.device = device
        log.info(
            "loaded %s (%s, %s) in %.1fs",
            self.cfg.model,
            type(self.model).__name__,
            precision,
            time.perf_counter() - t0,
        )

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
        enc = self.tok(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.cfg.max_input_tokens,
            add_special_tokens=add_special,
        ).to(self.device)
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
        new = out if self.seq2seq else out[:, enc["input_ids"].shape[1] :]
        results = []
        for row, text in zip(new.tolist(), texts, strict=True):
            if self.seq2seq and row and row[0] == self.model.config.decoder_start_token_id:
                row = row[1:]
            n, stopped = len(row), False
            for j, t in enumerate(row):
                if t in eos:
                    n, stopped = j, True
                    break
            results.append(
                Generation(
                    text=self.tok.decode(row[:n], skip_special_tokens=True),
                    new_tokens=n,
                    finish_reason="stop" if stopped else "length",
                    prompt_text=text,
                )
            )
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
        self.llm = Llama(
            model_path=str(path),
            n_ctx=self.cfg.max_input_tokens + self.cfg.max_new_tokens,
            n_threads=self.cfg.n_threads,
            seed=self.cfg.seed,
            verbose=False,
        )
        log.info("loaded %s with llama.cpp in %.1fs", path, time.perf_counter() - t0)

    def resolve_format(self) -> str:
        if self.cfg.prompt_format != "auto":
            return self.cfg.prompt_format
        self._load()
        return "chat" if self.llm.metadata.get("tokenizer.chat_template") else "plain"

    def generate_batch(self, prompts: list[TeacherPrompt]) -> list[Generation]:
        self._load()
        # llama-cpp-python decodes one sequence at a time; its KV cache reuses a shared prefix.
        kw = dict(
            max_tokens=self.cfg.max_new_tokens,
            temperature=float(self.cfg.temperature),
            top_p=float(self.cfg.top_p),
            seed=self.cfg.seed,
        )
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
                out.append(
                    Generation(
                        text=text,
                        new_tokens=r["usage"]["completion_tokens"],
                        finish_reason=r["choices"][0].get("finish_reason") or "stop",
                        seconds=time.perf_counter() - t0,
                        prompt_text=p.text if p.format == "plain" else None,
                    )
                )
            except Exception as e:  # one bad prompt (e.g. longer than n_ctx) must not lose the batch
                out.append(
                    Generation(
                        finish_reason="error", error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0
                    )
                )
        return out

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None


# --------------------------------------------------------------------------- OpenAI-compatible


RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}  # what the openai client retries (and any other 5xx)


def _deadline_transport(total_s: float):
    """An httpx2 transport that fails a request still unfinished ``total_s`` seconds after it began.

    httpx's timeouts are per operation (connect, each read): a server that drips one byte per
    second never trips a 2 s read timeout and held a request for 25.7 s. Here the body is read
    chunk by chunk against one deadline; the client sees ``httpx2.ReadTimeout``, which it retries
    like any timeout.
    """
    import httpx2

    class DeadlineStream(httpx2.SyncByteStream):
        def __init__(self, inner, deadline: float, request):
            self.inner, self.deadline, self.request = inner, deadline, request

        def __iter__(self):
            for chunk in self.inner:
                if time.monotonic() > self.deadline:
                    raise httpx2.ReadTimeout(
                        f"no complete response within the {total_s:g} s request deadline", request=self.request
                    )
                yield chunk

        def close(self):
            self.inner.close()

    class DeadlineTransport(httpx2.HTTPTransport):
        def handle_request(self, request):
            deadline = time.monotonic() + total_s
            resp = super().handle_request(request)
            return httpx2.Response(
                resp.status_code,
                headers=resp.headers,
                extensions=resp.extensions,
                stream=DeadlineStream(resp.stream, deadline, request),
                request=request,
            )

    return DeadlineTransport()


MAX_BACKOFF_S = 60.0  # no computed retry delay is longer than this


def retry_delay(backoff_s: float, retry: int) -> float:
    """The wait before retry ``retry`` (0-based): ``backoff_s * 2**retry``, capped at
    ``MAX_BACKOFF_S`` (``teachers.<name>.backoff_s`` = the first retry's delay; 0 = retry at once)."""
    return min(float(backoff_s) * 2.0 ** min(retry, 60), MAX_BACKOFF_S)


def _client_class(base, backoff_s: float):
    """``openai.OpenAI`` whose retry delay follows ``backoff_s`` (the client's own schedule starts at
    0.5 s, whatever the config says). A server's ``Retry-After`` (up to a minute) still wins."""

    class Client(base):
        def _calculate_retry_timeout(self, remaining_retries, options, response_headers=None):
            retry_after = self._parse_retry_after_header(response_headers)
            if retry_after is not None and 0 < retry_after <= MAX_BACKOFF_S:
                return retry_after
            nb = options.get_max_retries(self.max_retries) - remaining_retries
            return retry_delay(backoff_s, max(nb, 0))

    return Client


class OpenAIBackend(Backend):
    """Any OpenAI-compatible server through the official ``openai`` client.

    The client retries 408/409/429/5xx, connection errors and timeouts (``max_retries``, waiting
    ``backoff_s * 2**i`` before retry i, or the server's ``Retry-After``); ``request_timeout_s`` is a total
    deadline per attempt (``_deadline_transport``), and the whole request, retries included, is
    bounded too. Errors are stored and printed through ``tinyllm.redact`` (servers echo keys).
    """

    name = "openai"

    def __init__(self, cfg: TeacherConfig):
        super().__init__(cfg)
        import httpx2
        from openai import OpenAI

        self.base_url = cfg.base_url.rstrip("/")
        self._secrets: tuple[str, ...] = ()
        key = None
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise RuntimeError(
                    f"teachers.{cfg.name}.api_key_env names {cfg.api_key_env!r}, which is not set in the environment"
                )
            self._secrets = (key,)
        t = float(cfg.request_timeout_s)
        self.client = _client_class(OpenAI, cfg.backoff_s)(
            base_url=self.base_url,
            api_key=key or "not-needed",
            max_retries=cfg.max_retries,
            timeout=httpx2.Timeout(t, connect=min(t, 10.0)),
            http_client=httpx2.Client(transport=_deadline_transport(t)),
        )
        # every attempt, plus the backoff before each retry (at most Retry-After's cap): beyond this
        # the request is abandoned
        waits = sum(retry_delay(cfg.backoff_s, i) for i in range(cfg.max_retries))
        self._overall_s = (cfg.max_retries + 1) * (t + 1.0) + waits + 1.0
        self._pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="teacher")

    def _describe(self, e: Exception) -> str:
        """One line naming the failure, with credentials masked."""
        import openai

        n = self.cfg.max_retries + 1
        if isinstance(e, openai.APIStatusError):
            body = redact_and_cut(e.response.text, 300, self._secrets) if e.response is not None else ""
            code = e.status_code
            if code in RETRY_STATUS or code >= 500:
                msg = f"gave up after {n} attempts; last: HTTP {code} from {self.base_url}: {body}"
            else:
                msg = (
                    f"HTTP {code} from {self.base_url} (not retried: a client error; check base_url, model and "
                    f"the API key): {body}"
                )
        elif isinstance(e, (openai.APIConnectionError, openai.APITimeoutError)):
            msg = f"gave up after {n} attempts; last: {type(e).__name__}: {e} ({e.__cause__ or ''})"
        else:
            msg = f"{type(e).__name__}: {e}"
        return redact(msg, self._secrets)

    def _request(self, p: TeacherPrompt) -> Generation:
        t0 = time.perf_counter()
        kw = {
            "model": self.cfg.model,
            "max_tokens": self.cfg.max_new_tokens,
            "temperature": float(self.cfg.temperature),
        }
        if self.cfg.temperature > 0:
            kw.update(top_p=float(self.cfg.top_p), seed=self.cfg.seed)
        try:
            if p.format == "chat":
                r = self.client.chat.completions.create(messages=p.messages, **kw)
                choice = r.choices[0]
                text = (choice.message.content if choice.message is not None else None) or ""
            else:
                r = self.client.completions.create(prompt=p.text, stop=PLAIN_STOP, **kw)
                choice = r.choices[0]
                text = choice.text or ""
        except Exception as e:  # noqa: BLE001  (one bad request must not lose the batch)
            return Generation(finish_reason="error", error=self._describe(e), seconds=time.perf_counter() - t0)
        try:
            n = r.usage.completion_tokens if r.usage is not None else None
            return Generation(
                text=text,
                new_tokens=int(n) if n is not None else len(text.split()),
                finish_reason=choice.finish_reason or "stop",
                seconds=time.perf_counter() - t0,
                prompt_text=p.text if p.format == "plain" else None,
            )
        except (AttributeError, IndexError, TypeError, ValueError) as e:
            return Generation(
                finish_reason="error",
                seconds=time.perf_counter() - t0,
                error=redact(f"malformed response from {self.base_url}: {type(e).__name__}: {e}", self._secrets),
            )

    def _one(self, p: TeacherPrompt) -> Generation:
        """``_request`` bounded in wall time, whatever the server does (the safety net of the deadline)."""
        t0 = time.perf_counter()
        box: list[Generation] = []

        def work():
            try:
                box.append(self._request(p))
            except Exception as e:  # noqa: BLE001  (a bug here must fail this record, not hang the run)
                box.append(Generation(finish_reason="error", error=redact(f"{type(e).__name__}: {e}", self._secrets)))

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(self._overall_s)
        if box:
            return box[0]
        return Generation(
            finish_reason="error",
            seconds=time.perf_counter() - t0,
            error=f"no answer from {self.base_url} within {self._overall_s:g} s (all attempts)",
        )

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
        self.client.close()


BACKENDS: dict[str, type[Backend]] = {
    "transformers": TransformersBackend,
    "llama_cpp": LlamaCppBackend,
    "openai": OpenAIBackend,
}


def make_backend(cfg: TeacherConfig) -> Backend:
    try:
        cls = BACKENDS[cfg.backend]
    except KeyError:
        raise ValueError(
            f"teachers.{cfg.name}.backend {cfg.backend!r} is unknown; known: {', '.join(BACKENDS)}"
        ) from None
    return cls(cfg)
