"""Draw the extension's icons (extension/icons/icon-{16,48,128}.png) from one SVG: the Parley mark, a
purple speech bubble with a white "P". Rendered by Chromium through Playwright (both already needed
by the e2e suite), so no image library is added.

Usage: ``python scripts/make_icons.py`` (writes the three PNGs and icon.svg next to them).
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ICONS = ROOT / "extension" / "icons"
CHROMIUM = Path("/usr/bin/chromium")
SIZES = (16, 48, 128)

#: The mark on a 128 × 128 grid: a rounded bubble with its tail at the lower left, and a "P" made of a
#: stem and a bowl (paths, not a font, so every machine draws the same icon).
SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 128 128" width="{size}" height="{size}">
  <path fill="#5846dc" d="M34 6h60a28 28 0 0 1 28 28v44a28 28 0 0 1-28 28H54l-30 18 6-19A28 28 0 0 1 6 78V34A28 28 0 0 1 34 6z"/>
  <rect fill="#ffffff" x="42" y="26" width="16" height="62" rx="3"/>
  <path fill="none" stroke="#ffffff" stroke-width="16" stroke-linejoin="round" d="M50 34h18a15 15 0 0 1 0 30H50"/>
</svg>"""


def main() -> int:
    ICONS.mkdir(parents=True, exist_ok=True)
    (ICONS / "icon.svg").write_text(SVG.format(size=128) + "\n", encoding="utf-8")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM)) if CHROMIUM.exists() else pw.chromium.launch()
        try:
            page = browser.new_page(device_scale_factor=1)
            for size in SIZES:
                page.set_content(f"<body style='margin:0;background:transparent'>{SVG.format(size=size)}</body>")
                out = ICONS / f"icon-{size}.png"
                page.locator("svg").screenshot(path=str(out), omit_background=True)
                print(f"wrote {out.relative_to(ROOT)}")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
