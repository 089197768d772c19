"""Write docs/playground.png: the playground after generating a video from the sample image.

A real tiny-model Triton (streaming variant), a real gateway and Debian's headless Chromium, as in
tests/integration/test_playground.py (whose helpers this reuses):

    python scripts/playground_screenshot.py        # or: make playground-screenshot
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: the stack the browser tests start

from tests.support.browsers import fill_parameters, launch_chromium, open_playground  # noqa: E402
from tests.support import TOKEN, on_free_ports  # noqa: E402
from tests.support.gateways import Gateway, settings_for  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from svd_triton.launcher import TritonServer  # noqa: E402

TARGET = ROOT / "docs" / "playground.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch, \
            TritonServer(on_free_ports(token=TOKEN, stream=True), ready_timeout=240) as triton, \
            Gateway(settings_for(triton, Path(scratch))) as gateway, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = open_playground(browser, gateway.url, TOKEN, viewport={"width": 1280, "height": 800})
        page.click("#use-sample")
        page.wait_for_selector("#preview:not([hidden])")
        fill_parameters(page, width=128, height=128, num_frames=8, num_inference_steps=4, fps=7, seed=42)
        page.click("#generate")
        deadline = time.monotonic() + 120
        while not page.evaluate("document.getElementById('video').duration > 0"):
            if time.monotonic() > deadline:
                raise SystemExit("no video: " + page.locator("#progress-text").inner_text())
            time.sleep(0.1)
        page.click("#snippets summary")
        page.evaluate("document.activeElement.blur()")
        page.wait_for_timeout(500)  # a few frames into the loop
        page.screenshot(path=str(TARGET), full_page=True)
        browser.close()
    print(f"wrote {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
