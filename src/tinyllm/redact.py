"""Remove secrets from text before it is stored (caches, metrics, MLflow) or printed (logs, errors).

Servers echo requests in their error bodies, exceptions quote URLs, and a tracking URI may carry
``user:password@``: anything that leaves the process goes through ``redact`` (free text) or
``redact_uri`` (one URI) first. What is masked:

- HTTP credentials: ``Authorization``/``Proxy-Authorization`` values, ``Bearer``/``Basic`` tokens;
- ``key=value`` / ``"key": "value"`` pairs whose key names a secret (api_key, api-key, apikey,
  token, access_token, secret, password, passwd, x-api-key, aws_secret_access_key, ...);
- OpenAI/Anthropic/Hugging Face style keys (``sk-...``, ``hf_...``) anywhere;
- the password of ``scheme://user:password@host`` in every URI;
- any exact string passed in ``secrets`` (e.g. the API key read from the environment), and any
  piece of one at least ``MIN_SECRET_PART`` characters long that starts it or ends it (a body cut
  by a server or a log line keeps a prefix or a suffix of the key).

Redact before cutting: cut text first and a key crossing the cut escapes the exact match
(``redact_and_cut``).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MASK = "***"
MIN_SECRET_PART = 8  # a prefix or suffix of a known secret this long is masked too

# a key name that holds a secret: optional prefix ending in _ or - (x-, aws_), then the secret word,
# and nothing after it but the separator (so max_tokens=48 is left alone)
_SECRET_KEY = (
    r"(?:[A-Za-z0-9_-]*[_-])?(?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|refresh[_-]?token|"
    r"token|secret(?:[_-]?access)?(?:[_-]?key)?|password|passwd|credentials?)"
)
_PATTERNS = [
    # "Authorization": "Bearer abc" / Authorization: Basic abc (headers, JSON, repr of dicts)
    (re.compile(r"""((?:proxy-)?authorization["']?\s*[:=]\s*["']?)[^"'\r\n,}]+""", re.I), rf"\1{MASK}"),
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{4,}", re.I), rf"\1 {MASK}"),
    # "api_key": "v" / api_key=v / X-Api-Key: v
    (re.compile(rf"""({_SECRET_KEY}["']?\s*[:=]\s*["']?)[^"'\s&,;}}]+""", re.I), rf"\1{MASK}"),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}"), rf"\1-{MASK}"),
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), f"hf_{MASK}"),
    # user:password@ inside any URI
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@/\s]+@", re.I), rf"\1{MASK}@"),
]


def redact(text: object, secrets: tuple[str, ...] | list[str] = ()) -> str | None:
    """``text`` with every credential masked; None stays None."""
    if text is None:
        return None
    out = str(text)
    for s in secrets:
        if s and len(s) >= 4:
            out = out.replace(s, MASK)
            out = _mask_parts(out, s)
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out


def _mask_parts(text: str, secret: str) -> str:
    """Mask what is left of ``secret`` once whole copies are gone: its prefixes and suffixes of at
    least ``MIN_SECRET_PART`` characters (a key cut at the end of a body, or starting a cut one)."""
    if len(secret) < MIN_SECRET_PART:
        return text
    prefixes = [secret[:n] for n in range(len(secret) - 1, MIN_SECRET_PART - 1, -1)]
    suffixes = [secret[-n:] for n in range(len(secret) - 1, MIN_SECRET_PART - 1, -1)]
    # longest first, so a long fragment is masked whole, not as its shorter start
    alts = sorted(set(prefixes + suffixes), key=len, reverse=True)
    return re.sub("|".join(re.escape(a) for a in alts), MASK, text)


def redact_and_cut(text: object, limit: int, secrets: tuple[str, ...] | list[str] = ()) -> str | None:
    """``text`` redacted, then cut to ``limit`` characters (never the other way round)."""
    out = redact(text, secrets)
    return None if out is None else out[:limit]


def redact_uri(uri: str | None) -> str | None:
    """``uri`` with its password (``user:password@``) and secret query values masked.

    ``http://alice:s3cret@mlflow:5000`` -> ``http://alice:***@mlflow:5000``; a URI without
    credentials is returned unchanged.
    """
    if not uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact(uri)
    out = uri  # edited in place: urlunsplit would rewrite e.g. sqlite://// paths
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        out = out.replace(parts.netloc, f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}", 1)
    if parts.query:
        out = out.replace(parts.query, redact(parts.query), 1)
    return out
