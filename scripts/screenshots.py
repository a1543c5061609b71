"""Screenshots of legmri's HTML outputs with headless Chromium, to look at them as a reader does.

For every ``index.html`` (cohort) and ``report.html`` (study) under OUT, two PNGs go to DEST: the first screen
(``--width`` x ``--height`` pixels, what a radiologist sees on opening the page) and the page down to
``--page-height`` pixels. The HTML is self-contained, so nothing is fetched.

    python scripts/screenshots.py demo_out --dest demo_out/screenshots
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

#: Names under which Chromium is installed (Debian: ``apt-get install chromium``).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH, or None."""
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def pages(out: Path) -> list[Path]:
    """The HTML pages legmri wrote under ``out``: the cohort index first, then each study's report, by path."""
    index = [out / "index.html"] if (out / "index.html").is_file() else []
    return index + sorted(p for p in out.rglob("report.html") if p.is_file())


def screenshot(html: Path, png: Path, width: int, height: int, browser: str, timeout_s: float = 60.0) -> Path:
    """Render ``html`` in a ``width`` x ``height`` headless window and save it as ``png``."""
    png.parent.mkdir(parents=True, exist_ok=True)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
           f"--window-size={width},{height}", f"--screenshot={png}", html.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if res.returncode != 0 or not png.is_file():
        raise RuntimeError(f"{browser} could not render {html}: {res.stderr.strip()[-500:]}")
    return png


def shot_name(out: Path, html: Path) -> str:
    """A file-name stem for a page: ``index`` for the cohort, else the study folder's path under ``out``.

    >>> shot_name(Path("o"), Path("o/index.html")), shot_name(Path("o"), Path("o/nmh_case/report.html"))
    ('index', 'nmh_case')
    """
    rel = html.parent.relative_to(out)
    return "index" if html.name == "index.html" else ("_".join(rel.parts) or "report")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="a legmri output folder (legmri run --out or legmri batch --out)")
    p.add_argument("--dest", type=Path, help="where the PNGs go (default: OUT/screenshots)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=900, help="the first screen's height")
    p.add_argument("--page-height", type=int, default=4000, help="the height of the whole-page picture")
    args = p.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print("screenshots: no Chromium found on PATH. Fix: install it (Debian: apt-get install chromium).",
              file=sys.stderr)
        return 3
    found = pages(args.out)
    if not found:
        print(f"screenshots: {args.out}: no index.html or report.html. Fix: give a legmri output folder.",
              file=sys.stderr)
        return 3
    dest = args.dest or args.out / "screenshots"
    for html in found:
        stem = shot_name(args.out, html)
        for suffix, height in (("first_screen", args.height), ("page", args.page_height)):
            png = screenshot(html, dest / f"{stem}_{suffix}.png", args.width, height, browser)
            print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
