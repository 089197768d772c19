"""Debian's Chromium driven by Playwright (Playwright cannot download its own browsers here).

Playwright's `launch` gives the browser a fresh temporary profile (--user-data-dir) each time and removes it
at close; the flags keep a box without network from retrying connections and without a GPU from probing it.
"""
from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


def open_playground(browser, url: str, token: str, **context_options):
    """A new tab (own session storage) on the playground with `token` typed in and the controls loaded."""
    page = browser.new_context(**context_options).new_page()
    page.goto(url + "/")
    page.fill("#token", token)
    page.dispatch_event("#token", "change")
    page.wait_for_selector("#param-width")
    return page


def fill_parameters(page, **values) -> None:
    for name, value in values.items():
        control = page.locator(f"#param-{name}")
        if control.evaluate("element => element.tagName") == "SELECT":
            control.select_option(str(value))
        else:
            control.fill(str(value))
