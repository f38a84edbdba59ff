"""Constants and small steps shared by the portal tests: the browser, the limits they are built around."""

from __future__ import annotations

from typing import Any

from labservice.limits import Limits

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PUBLIC_POINTS = 64  # small, so a short paste shows what a token allows
PUBLIC_CUTOUT_BYTES = 256 << 10
TOKEN_CUTOUT_BYTES = 64 << 10  # small, so a moderate cutout becomes a job
TOKEN_LIMITS = Limits(
    points_per_request=10_000,
    max_cutout_bytes=TOKEN_CUTOUT_BYTES,
    requests_per_minute=100_000,
    max_concurrent=64,
    jobs_allowed=True,
    max_running_jobs=4,
    scratch_bytes=256 << 20,
    max_job_bytes=64 << 20,
)


def set_token(tab: Any, token: str) -> None:
    """Paste a token on My jobs, as a person would; the pages keep it in localStorage."""
    tab.goto("/jobs")
    tab.fill("#token-input", token)
    tab.click("#token-save")
    tab.wait_for_selector("#token-who:has-text('Token accepted')")
