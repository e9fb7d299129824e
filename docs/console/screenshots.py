#!/usr/bin/env python3
"""Pictures of the console for docs/ and the README, taken in Chromium, not drawn by hand:
runs the demo on a state folder of its own, starts `lifecycle up` over it, signs in with the read
token and writes docs/console/{overview,erasures,erasure,records}.png.

    .venv/bin/python docs/console/screenshots.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("LIFECYCLE_CHROMIUM", "/usr/bin/chromium")


def main() -> int:
    from playwright.sync_api import sync_playwright

    from lifecycle.embedded.process import free_port

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
        env["LIFECYCLE_STATE_DIR"] = tmp
        subprocess.run([sys.executable, "-m", "lifecycle", "demo", "--accounts", "60", "--visitors", "60"], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        state = Path(tmp) / "demo"
        port = free_port()
        env.update(LIFECYCLE_STATE_DIR=str(state), LIFECYCLE_HTTP_PORT=str(port), LIFECYCLE_CLOCK="event")
        up = subprocess.Popen([sys.executable, "-m", "lifecycle", "up"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if urllib.request.urlopen(base + "/readyz", timeout=1).status == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.5)
            token = next(line.split()[1] for line in (state / "secrets" / "http-tokens").read_text().splitlines()
                         if line.split()[0] == "read")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.goto(base + "/console/sign-in")
                page.fill("input[name=token]", token)
                page.click("button[type=submit]")
                page.screenshot(path=str(HERE / "overview.png"), full_page=True)
                page.goto(base + "/console/erasures")
                page.screenshot(path=str(HERE / "erasures.png"))
                page.click("tbody tr:first-child a")
                page.screenshot(path=str(HERE / "erasure.png"), full_page=True)
                page.goto(base + "/console/records")
                page.screenshot(path=str(HERE / "records.png"))
                browser.close()
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(60)
    print(f"wrote {', '.join(p.name for p in sorted(HERE.glob('*.png')))} in {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
