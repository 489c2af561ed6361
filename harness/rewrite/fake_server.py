"""A deterministic OpenAI-compatible rewriter on 127.0.0.1, with faults on request (for tests,
the rewrite benchmark and the testbed demonstration; never a real model).

`POST /v1/chat/completions` reads the rendered prompt (`Problem:`, `Reference solution:`,
`Final answer:` sections of the shipped prompt) and answers with the reference solution's lines
that carry an equation (the concise trace), in the d1/IGPO format. Markers in the problem text
choose a behaviour: `#wrong` (wrong boxed answer), `#format` (no tags), `#long` (a long answer),
`#429` / `#500` / `#stall` / `#drop` / `#badjson` (the first attempt fails that way: rate limit
with Retry-After, server error, no answer within the client's timeout, a closed connection,
malformed JSON), `#always500` (every attempt fails). `GET /v1/models` answers 200; with
`api_key` set, any other bearer token gets 401.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

FIRST_ATTEMPT_FAULTS = ("#429", "#500", "#stall", "#drop", "#badjson")
STALL_S = 3.0
"""How long a stalled answer takes (longer than any client timeout used with this server)."""
RETRY_AFTER_S = "0.05"


_EQ = re.compile(r"^(-?\d+) ([+-]) (-?\d+) = (-?\d+) \.$")
_SAME = re.compile(r"^(-?\d+) = (-?\d+) \.$")
_UNDO = {"+": "-", "-": "+"}


def concise(solution: str) -> str:
    """The equation-bearing steps of a solution, one line of text (the arith traces' style), minus
    redundant self-checks: a restated value (`18 = 18 .`) and a step that undoes the one before it
    when the restatement of that one's result follows (`13 + 5 = 18 . 18 - 5 = 13 . 18 = 18 .`)."""
    solution = solution.split("</reasoning>")[0].replace("<reasoning>", "")
    steps = [s.strip() for s in re.split(r"(?<=\.)\s+|\n", solution) if "=" in s]
    kept: list[str] = []
    last = None  # the last kept equation
    for i, step in enumerate(steps):
        same = _SAME.match(step)
        if same and same.group(1) == same.group(2):
            continue
        eq = _EQ.match(step)
        after = _SAME.match(steps[i + 1]) if i + 1 < len(steps) else None
        if eq and last and after and after.group(1) == last.group(4) and eq.group(4) == last.group(1):
            continue  # undoes the previous step and is followed by its restated result: a check
        kept.append(step)
        last = eq or last
    return " ".join(kept) if kept else solution.strip()


def _section(prompt: str, name: str, following: str | None) -> str:
    start = prompt.find(name)
    if start < 0:
        return ""
    start += len(name)
    end = prompt.find(following, start) if following else len(prompt)
    return prompt[start : end if end >= 0 else len(prompt)].strip()


def rewrite(prompt: str) -> str:
    """The deterministic rewrite of one rendered prompt (markers applied)."""
    problem = _section(prompt, "Problem:", "Reference solution:")
    solution = _section(prompt, "Reference solution:", "Final answer:")
    answer = _section(prompt, "Final answer:", None)
    if "#wrong" in problem:
        answer = answer + "1"
    body = concise(solution)
    if "#long" in problem:
        body = " ".join([body] * 200)
    if "#format" in problem:
        return f"{body} so the answer is {answer}"
    return f"<reasoning> {body} </reasoning> <answer> \\boxed{{{answer}}} </answer>"


@dataclass
class FakeRewriter:
    """The server, run in a thread: `with FakeRewriter() as server: server.base_url`."""

    latency_s: float = 0.0
    api_key: str | None = None
    attempts: Counter = field(default_factory=Counter)
    requests: int = 0

    def __post_init__(self) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeRewriter:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake rewriter did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # ------------------------------------------------------------------ server
    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        self._loop.run_until_complete(self._main())
        pending = asyncio.all_tasks(self._loop)  # stalled answers still sleeping: cancel, then close
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _main(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def _authorised(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": "fake-rewriter", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        problem = _section(prompt, "Problem:", "Reference solution:")
        self.attempts[problem] += 1
        self.requests += 1
        first = self.attempts[problem] == 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if "#always500" in problem or (first and "#500" in problem):
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if first and "#429" in problem:
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": RETRY_AFTER_S}
            )
        if first and "#stall" in problem:
            await asyncio.sleep(STALL_S)
        if first and "#drop" in problem:
            request.transport.close()
            return web.Response(status=200)
        if first and "#badjson" in problem:
            return web.Response(text='{"id": "x", "choices": [', content_type="application/json")
        text = rewrite(prompt)
        return web.json_response(
            {
                "id": f"fake-{self.requests}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": len(text.split()),
                    "total_tokens": len(prompt.split()) + len(text.split()),
                },
            }
        )


MIXED_BEHAVIOURS = (
    "",
    "",
    "",
    "#wrong",
    "#format",
    "#long",
    "#429",
    "#500",
    "#stall",
    "#drop",
    "#badjson",
    "#always500",
)
"""One of each fault and reject, and kept rows, in the proportions the tests and benchmark use."""


def write_rows(path: Path, n: int, behaviours: Sequence[str] = MIXED_BEHAVIOURS) -> Path:
    """`n` GSM8K-style rows (`question`, `answer` with `####`) cycling through `behaviours`' markers."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            a, b = 3 + i % 7, 2 + i % 5
            row = {
                "question": f"Q{i} {behaviours[i % len(behaviours)]} Ava has {a} apples and finds {b} more .",
                "answer": f"She has {a} apples. Then {a} + {b} = {a + b}. Done.\n#### {a + b}",
            }
            f.write(json.dumps(row) + "\n")
    return path


def cli_args(data: Path, out: Path, base_url: str, *, timeout_s: float, max_attempts: int = 3) -> list[str]:
    """`igpo rewrite-traces` arguments for `write_rows` data against this server (GSM8K preset,
    120-token cap): what the tests and the benchmark run."""
    return [
        "rewrite-traces",
        str(data),
        "--out",
        str(out),
        "--base-url",
        base_url,
        "--model",
        "fake",
        "--preset",
        "gsm8k",
        "--max-tokens",
        "120",
        "--timeout",
        f"{timeout_s:g}",
        "--max-attempts",
        str(max_attempts),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    """`python -m harness.rewrite.fake_server [--port P] [--latency S]`: serve until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    with FakeRewriter(latency_s=args.latency) as server:
        print(json.dumps({"base_url": server.base_url}), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
