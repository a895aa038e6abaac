"""Screenshot the service's study page on the demo pool's real front, for the README (docs/service.png).

Runs the demo search (60 trials, as `recycler demo` does) through the service on a free port, opens
the study page in Debian's headless Chromium, clicks the most balanced front member, and saves the
screenshot. Needs the test extras (playwright) and a built demo pool:

    .venv/bin/recycler demo                # builds recycler-demo/pool once
    .venv/bin/python scripts/screenshot_demo.py [--demo recycler-demo] [--out docs/service.png]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
import yaml

from recycler.cli import quiet_libraries
from recycler.service import ServiceConfig, create_app

CHROMIUM = "/usr/bin/chromium"
TOKEN = "screenshot-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_study(server: str, pool_dir: Path, trials: int) -> str:
    spec = yaml.safe_load((pool_dir / "pool.yaml").read_text())
    spec.setdefault("search", {})["trials"] = trials
    spec.setdefault("resources", {})["workers"] = 2  # as `recycler demo` runs it
    study = httpx.post(f"{server}/api/studies", json={"spec": spec, "root": str(pool_dir)}, headers=AUTH).raise_for_status().json()
    while (state := httpx.get(f"{server}/api/studies/{study['id']}", headers=AUTH).json())["state"] in ("queued", "running"):
        print(f"\r{state['finished']}/{state['budget']} trials", end="", flush=True)
        time.sleep(2)
    print()
    if state["state"] != "done":
        raise SystemExit(f"the demo study ended {state['state']}: {state['error']}")
    return study["id"]


def _screenshot(server: str, study_id: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    balanced = httpx.get(f"{server}/api/studies/{study_id}/front", params={"rank": "balanced", "limit": 1}, headers=AUTH).json()
    member = balanced["trials"][0]["trial"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1250, "height": 1400})
            page.goto(f"{server}/studies/{study_id}#token={TOKEN}")
            page.wait_for_selector("body[data-state=done] #front-table tr:nth-child(2)")
            page.fill("#rank", "balanced")
            page.fill("#limit", "5")
            page.click("#narrow-button")
            page.wait_for_function("() => document.querySelectorAll('#front-table tr').length > 1")
            page.click(f"#front-table tr:has(td:first-child:text-is('{member}'))")
            page.wait_for_selector("#detail-table")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True, type="png")
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default="recycler-demo", help="the demo folder holding pool/ (default recycler-demo)")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--out", default="docs/service.png")
    args = parser.parse_args()
    quiet_libraries()
    pool_dir = Path(args.demo).resolve() / "pool"
    if not (pool_dir / "pool.yaml").is_file():
        raise SystemExit(f"{pool_dir}: no demo pool; run `recycler demo` first")
    with tempfile.TemporaryDirectory(prefix="recycler-screenshot-") as data:
        app = create_app(ServiceConfig(data=Path(data), roots=[pool_dir], token=TOKEN))
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            url = f"http://127.0.0.1:{port}"
            _screenshot(url, _run_study(url, pool_dir, args.trials), Path(args.out))
        finally:
            server.should_exit = True
            thread.join(120)
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
