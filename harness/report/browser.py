"""Open a report in headless Chromium (Debian's, through Playwright) with the network cut off:
for the browser tests, the report benchmark and the README screenshot.

Every request other than the file itself is aborted and recorded, console errors are
collected, and the page counts as interactive once its script sets `body[data-ready]`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Headless flags that keep Chromium from reaching for the network on its own."""
VIEWPORT = {"width": 1280, "height": 900}


def chromium_path() -> str | None:
    """$IGPO_CHROMIUM, else `chromium` on PATH (Debian's package), else None."""
    return os.environ.get("IGPO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageLog:
    """What the page did besides drawing."""

    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    """URLs requested other than the report file itself (all aborted)."""
    ready_s: float = 0.0
    """Seconds from navigation to the script's ready mark."""


@contextmanager
def open_report(path: Path, executable: str | None = None) -> Iterator[tuple[Any, PageLog]]:
    """(playwright page, log) for the report at `path`, loaded and interactive."""
    from playwright.sync_api import sync_playwright

    exe = executable or chromium_path()
    if exe is None:
        raise FileNotFoundError("no Chromium found: install Debian's chromium or set IGPO_CHROMIUM")
    url = Path(path).resolve().as_uri()
    log = PageLog()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=list(CHROMIUM_FLAGS))
        try:
            context = browser.new_context(viewport=VIEWPORT, offline=True)
            page = context.new_page()

            def route(r) -> None:
                if r.request.url == url:
                    r.continue_()
                else:
                    log.requests.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: log.console_errors.append(str(e)))
            started = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            log.ready_s = time.perf_counter() - started
            yield page, log
        finally:
            browser.close()


def screenshot(report: Path, png: Path, view: str = "flipped", executable: str | None = None) -> Path:
    """A PNG of one view of a report (e.g. the README's picture)."""
    with open_report(report, executable) as (page, _log):
        page.click(f"nav button[data-view='{view}']")
        page.screenshot(path=str(png))
    return png


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Screenshot one view of an igpo report in headless Chromium.")
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--view", default="flipped", help="leaderboard, runs, samples, flipped, figures, ablations")
    args = parser.parse_args(argv)
    print(screenshot(args.report, args.out, args.view))


if __name__ == "__main__":
    main()
