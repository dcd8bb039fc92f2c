"""Run the tour and take the README's screenshot of its report.

    .venv/bin/python scripts/screenshot_report.py            # full tour, docs/tour-report.png
    .venv/bin/python scripts/screenshot_report.py --quick    # the quick tour

Uses Debian's chromium (headless) through Playwright; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="run the quick tour")
    parser.add_argument("--png", default=str(ROOT / "docs" / "tour-report.png"), help="where to save it")
    parser.add_argument("--height", type=int, default=1500, help="pixels of the report to show")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onebyone-shot-") as tmp:
        out = Path(tmp) / "tour"
        cmd = [sys.executable, "-m", "onebyone", "tour", "--out", str(out)] + (
            ["--quick"] if args.quick else []
        )
        subprocess.run(cmd, check=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": args.height}, device_scale_factor=1)
            page.goto((out / "index.html").as_uri())
            page.wait_for_load_state("load")
            Path(args.png).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.png)
            browser.close()
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
