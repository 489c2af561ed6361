"""One chat-completion request with retries, through the official `openai` async client.

Retried: 429 and 5xx answers, timeouts, dropped connections and malformed responses, with
exponential backoff and full jitter (base `backoff_s`, doubling, capped at `max_backoff_s`),
honouring a `Retry-After` header; at most `max_attempts` attempts, then the request is a
failure for the caller to record. Not retried: other 4xx answers (a bad request will not get
better); a refused key (401 / 403) stops the whole job (`KeyRefused`).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field

import openai

RETRY_STATUSES = frozenset({408, 409, 429})
"""4xx answers worth retrying (timeout, conflict, rate limit); every 5xx is retried too."""

URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
"""The `user:password@` part of a URL (up to the last `@` of its authority): credentials."""
REDACTED = "***@"


def redact_url(text: str) -> str:
    """`text` with the credentials of every URL in it replaced: `http://user:KEY@host/v1` reads
    `http://***@host/v1`. Every URL the tool writes or prints passes through here (summary,
    errors); the request itself still uses the URL as given."""
    return URL_USERINFO.sub(lambda m: m["scheme"] + REDACTED, text)


@dataclass
class ClientSettings:
    """How requests are sent (every field documented: the CLI flags map onto them)."""

    base_url: str
    """The endpoint, e.g. http://127.0.0.1:8000/v1 (vLLM / SGLang) or https://api.openai.com/v1."""
    model: str
    """Model name the server knows."""
    api_key: str = "EMPTY"
    """Never written anywhere; local servers accept any value."""
    concurrency: int = 8
    """Requests in flight at once."""
    requests_per_minute: float | None = None
    """Optional cap on request starts per minute (None: no cap)."""
    timeout_s: float = 120.0
    """Per-attempt wall-clock limit."""
    max_attempts: int = 6
    """Attempts per request before it is recorded as failed."""
    backoff_s: float = 1.0
    """First retry delay (before jitter); doubles each attempt."""
    max_backoff_s: float = 60.0
    temperature: float = 0.0
    max_output_tokens: int | None = 2048
    """`max_tokens` of the request (None: the server's default)."""

    def __post_init__(self) -> None:
        from igpo.errors import InvalidSetting

        for flag, value in (("--concurrency", self.concurrency), ("--max-attempts", self.max_attempts)):
            if value < 1:
                raise InvalidSetting(f"{flag} must be >= 1, got {value}")
        for name in ("timeout_s", "backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise InvalidSetting(f"{name} must be a positive finite number, got {value}")
        if not 0 <= self.temperature < float("inf"):  # NaN fails too
            raise InvalidSetting(f"--temperature must be a finite number >= 0, got {self.temperature}")
        if self.requests_per_minute is not None and not 0 < self.requests_per_minute < float("inf"):
            raise InvalidSetting(f"--rpm must be a positive number, got {self.requests_per_minute}")


class KeyRefused(Exception):
    """The server refused the API key (401 / 403): no request can succeed."""


@dataclass
class Reply:
    """What came back for one request."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    error: str | None = None
    """Why the last attempt failed, when `text` is None."""
    errors: list[str] = field(default_factory=list)


class RateLimiter:
    """Spaces request starts at least 60 / rpm seconds apart (None: no limit)."""

    def __init__(self, rpm: float | None) -> None:
        self.gap = 60.0 / rpm if rpm else 0.0
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.gap:
            return
        async with self.lock:
            now = time.monotonic()
            delay = self.next - now
            self.next = max(now, self.next) + self.gap
        if delay > 0:
            await asyncio.sleep(delay)


def make_client(cfg: ClientSettings) -> openai.AsyncOpenAI:
    """The async client, with its own retries off (this module retries, with jitter)."""
    return openai.AsyncOpenAI(base_url=cfg.base_url, api_key=cfg.api_key, max_retries=0, timeout=cfg.timeout_s)


def _retry_after(err: Exception) -> float | None:
    response = getattr(err, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def delay_for(attempt: int, cfg: ClientSettings, rng: random.Random, retry_after: float | None = None) -> float:
    """Seconds to wait before attempt `attempt + 1`: Retry-After if given, else full jitter."""
    if retry_after is not None:
        return min(retry_after, cfg.max_backoff_s)
    return rng.uniform(0, min(cfg.max_backoff_s, cfg.backoff_s * 2 ** (attempt - 1)))


async def complete(
    client: openai.AsyncOpenAI, messages: list[dict], cfg: ClientSettings, limiter: RateLimiter, rng: random.Random
) -> Reply:
    """Send one request until it succeeds, fails for good, or runs out of attempts."""
    reply = Reply(text=None)
    extra = {"max_tokens": cfg.max_output_tokens} if cfg.max_output_tokens else {}
    for attempt in range(1, cfg.max_attempts + 1):
        reply.attempts = attempt
        await limiter.wait()
        retry_after = None
        try:
            resp = await asyncio.wait_for(
                client.chat.completions.create(
                    model=cfg.model, messages=messages, temperature=cfg.temperature, **extra
                ),
                timeout=cfg.timeout_s,
            )
            text = resp.choices[0].message.content if resp.choices else None
            if text is None:
                raise ValueError("no message content in the response")
            usage = resp.usage
            reply.text = text
            reply.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            reply.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            reply.error = None
            return reply
        except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
            raise KeyRefused(f"the server refused the API key ({err.status_code})") from None
        except openai.APIStatusError as err:
            reply.error = f"HTTP {err.status_code}"
            if err.status_code < 500 and err.status_code not in RETRY_STATUSES:
                reply.errors.append(reply.error)
                return reply
            retry_after = _retry_after(err)
        except (asyncio.TimeoutError, openai.APITimeoutError):
            reply.error = f"timeout after {cfg.timeout_s:g} s"
        except openai.APIConnectionError:
            reply.error = "connection error"
        except (ValueError, TypeError, AttributeError, IndexError, openai.APIResponseValidationError) as err:
            reply.error = f"malformed response ({type(err).__name__})"
        reply.errors.append(reply.error)
        if attempt < cfg.max_attempts:
            await asyncio.sleep(delay_for(attempt, cfg, rng, retry_after))
    return reply
