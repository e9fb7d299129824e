#!/usr/bin/env python3
"""Render deploy/grafana/lifecycle.json from real data into docs/img/dashboard.png.

    .venv/bin/pip install -e '.[docs]' && .venv/bin/python deploy/grafana/render_preview.py

Runs `lifecycle demo` on the embedded stack while a real Prometheus (lifecycle/embedded/
prometheus.py) scrapes every process of it each second, then evaluates every panel's queries
through Prometheus' HTTP API over the demo and draws the panels where the dashboard places them.
No Grafana is needed: the picture shows the dashboard's queries on the demo's data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from lifecycle.embedded.prometheus import EmbeddedPrometheus  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COLORS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0",
          "#508642", "#cca300"]
CELL_W, CELL_H, PAD = 70, 34, 8


def query(prom: str, path: str, **params: object) -> list[dict]:
    url = f"{prom}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())["data"]["result"]


def legend(fmt: str, labels: dict[str, str]) -> str:
    out = fmt or "{}"
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def run_demo(state: Path, accounts: int, visitors: int) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env["LIFECYCLE_STATE_DIR"] = str(state)
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "lifecycle", "demo", "--accounts", str(accounts),
                             "--visitors", str(visitors)], env=env, stdout=subprocess.PIPE, text=True)
    end = None
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", file=sys.stderr)
        if line.startswith("== report ==") and end is None:
            end = time.time()
    if proc.wait() != 0 or end is None:
        raise SystemExit("the demo failed; see its output above")
    return start, end


def draw(dashboard: dict, prom: str, start: float, end: float, out: Path) -> None:
    panels = dashboard["panels"]
    width = 24 * CELL_W
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) * CELL_H + 40
    img = Image.new("RGB", (width, height), "#111217")
    pen = ImageDraw.Draw(img)
    title_font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=12)
    big = ImageFont.load_default(size=34)
    pen.text((PAD, 10), f"{dashboard['title']}: `lifecycle demo`, scraped every second by Prometheus",
             fill="#d8d9da", font=title_font)
    step = max(1.0, (end - start) / 240)
    for panel in panels:
        g = panel["gridPos"]
        x0, y0 = g["x"] * CELL_W + PAD // 2, g["y"] * CELL_H + 36
        x1, y1 = x0 + g["w"] * CELL_W - PAD, y0 + g["h"] * CELL_H - PAD
        pen.rectangle((x0, y0, x1, y1), fill="#181b1f", outline="#2c3235")
        pen.text((x0 + 8, y0 + 6), panel["title"], fill="#d8d9da", font=title_font)
        if panel["type"] == "stat":
            result = query(prom, "query", query=panel["targets"][0]["expr"], time=end)
            value = float(result[0]["value"][1]) if result else 0.0
            text = f"{value:.0f}" if panel["fieldConfig"]["defaults"]["unit"] != "s" else f"{value:.0f} s"
            pen.text((x0 + 12, y0 + 42), text, fill="#73bf69", font=big)
            continue
        series = []
        for target in panel["targets"]:
            for r in query(prom, "query_range", query=target["expr"], start=start, end=end, step=step):
                points = [(float(t), float(v)) for t, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if points:
                    series.append((legend(target.get("legendFormat", ""), r["metric"]), points))
        series.sort(key=lambda s: -max(v for _, v in s[1]))
        series = series[:8]
        top = max((v for _, pts in series for _, v in pts), default=0.0) or 1.0
        ax0, ay0, ax1, ay1 = x0 + 58, y0 + 30, x1 - 10, y1 - 20 - 14 * ((len(series) + 1) // 2)
        pen.line((ax0, ay1, ax1, ay1), fill="#464c54")
        for frac in (0.0, 0.5, 1.0):
            y = ay1 - (ay1 - ay0) * frac
            pen.line((ax0, y, ax1, y), fill="#2c3235")
            pen.text((x0 + 6, y - 7), f"{top * frac:.3g}", fill="#8e8e8e", font=small)
        for index, (name, points) in enumerate(series):
            color = COLORS[index % len(COLORS)]
            xy = [(ax0 + (ax1 - ax0) * (t - start) / max(end - start, 1), ay1 - (ay1 - ay0) * v / top)
                  for t, v in points]
            if len(xy) == 1:
                pen.ellipse((xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2), fill=color)
            else:
                pen.line(xy, fill=color, width=2)
            lx = x0 + 10 + (index % 2) * (x1 - x0) // 2
            ly = ay1 + 8 + (index // 2) * 14
            pen.rectangle((lx, ly + 3, lx + 10, ly + 9), fill=color)
            pen.text((lx + 14, ly), name[:60], fill="#c7d0d9", font=small)
        if not series:
            pen.text((x0 + 12, y0 + 40), "no data", fill="#8e8e8e", font=small)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--accounts", type=int, default=3000)
    p.add_argument("--visitors", type=int, default=4000)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    args = p.parse_args()
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "lifecycle.json").read_text())
    with tempfile.TemporaryDirectory(prefix="lifecycle-preview-") as tmp:
        work = Path(tmp)
        state = work / "state"
        config = work / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "lifecycle", "file_sd_configs": [
                {"files": [str(state / "demo" / "scrape-targets.json")], "refresh_interval": "1s"}]}],
        }))
        prom = EmbeddedPrometheus(config, work / "tsdb", work / "prometheus.log")
        prom.start()
        try:
            start, end = run_demo(state, args.accounts, args.visitors)
            time.sleep(2)
            draw(dashboard, prom.url, start, end, args.out)
        finally:
            prom.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
