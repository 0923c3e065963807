"""A small page-object layer over Selenium for the console tests."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
DESKTOP = (1280, 900)
PHONE = (390, 844)
WAIT = 20  # seconds; generous for a loaded 2-CPU box, never an assertion on speed


class Console:
    def __init__(self, base: str, browser: Path, driver: Path) -> None:
        self.base = base
        options = webdriver.ChromeOptions()
        options.binary_location = str(browser)
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--force-device-scale-factor=1",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(options=options, service=Service(str(driver)))
        self.d.set_window_size(*DESKTOP)
        self.d.set_script_timeout(60)
        self._axe = AXE.read_text()

    def quit(self) -> None:
        self.d.quit()

    # navigation and waiting

    def open(self, hash_path: str) -> None:
        """A route of the console already loaded (either relay's), else of the main one."""
        if not self.d.current_url.startswith("http"):
            self.d.get(f"{self.base}/")
        self.d.execute_script("location.hash = arguments[0]", hash_path)

    def until(self, what: Callable[[], Any], message: str) -> Any:
        def probe(_: Any) -> Any:
            try:
                return what()
            except (StaleElementReferenceException, WebDriverException):
                return False

        return WebDriverWait(self.d, WAIT, poll_frequency=0.2).until(probe, message)

    def loaded(self) -> None:
        """Every list on the page has its first data (``aria-busy`` is false)."""
        self.until(lambda: not self.els('main [aria-busy="true"]'), "a list never loaded")

    def el(self, css: str) -> WebElement:
        return self.until(lambda: self.d.find_element(By.CSS_SELECTOR, css), f"no {css}")

    def els(self, css: str) -> list[WebElement]:
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def text_in(self, css: str, text: str) -> WebElement:
        def found() -> WebElement | bool:
            el = self.d.find_element(By.CSS_SELECTOR, css)
            return el if text in el.text else False

        try:
            return self.until(found, f"{text!r} never appeared in {css}")
        except TimeoutException:
            shown = [e.text for e in self.els(css)] + [e.text for e in self.els(".msg.error")]
            raise TimeoutException(f"{text!r} never appeared in {css}; shown: {shown}") from None

    def button(self, label: str, within: str = "body") -> WebElement:
        """A visible button (or link styled as one) whose text or aria-label is ``label``."""

        def find() -> WebElement | bool:
            for el in self.d.find_elements(By.CSS_SELECTOR, f"{within} button, {within} a.button"):
                if el.is_displayed() and label in (el.text, el.get_attribute("aria-label")):
                    return el
            return False

        return self.until(find, f"no button {label!r} in {within}")

    def fill(self, css: str, value: str) -> None:
        """Select-all and type: the first key replaces the old text in one input event.
        (``clear()`` fires no input event, so a controlled field's state keeps the old
        text, and a re-render in between puts it back before the typing.)"""
        el = self.el(css)
        el.send_keys(Keys.CONTROL, "a")
        el.send_keys(value)
        self.until(lambda: el.get_attribute("value") == value, f"{css} did not take {value!r}")

    def row_of(self, table: str, text: str) -> WebElement:
        def find() -> WebElement | bool:
            for row in self.d.find_elements(By.CSS_SELECTOR, f"{table} tbody tr"):
                if text in row.text:
                    return row
            return False

        return self.until(find, f"no row with {text!r} in {table}")

    # checks

    def console_errors(self) -> list[str]:
        """Errors the page logged since the last call (reading the log empties it)."""
        return [e["message"] for e in self.d.get_log("browser") if e["level"] == "SEVERE"]

    def axe_serious(self) -> list[str]:
        """axe-core's serious and critical violations on the current page."""
        self.d.execute_script(self._axe)
        found = self.d.execute_async_script(
            """const done = arguments[arguments.length - 1];
            axe.run(document, {resultTypes: ["violations"]}).then(
              (r) => done(r.violations.filter((v) => ["serious", "critical"].includes(v.impact))
                .map((v) => ({id: v.id, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" "))}))),
              (e) => done([{id: "axe-error", help: String(e), nodes: []}]));"""
        )
        return [json.dumps(v) for v in found]

    def set_theme(self, theme: str) -> None:
        self.d.execute_script("localStorage.setItem('relaygate.theme', arguments[0])", theme)
        self.d.refresh()

    def screenshot(self, path: Path) -> None:
        """The whole page, not only the viewport: a table or form below the fold is what a
        review of the screenshots has to see (Chromium's DevTools capture; W3C has none). The
        width is the window's: the capture drops the scrollbar, so the page lays out that wide."""
        width, height = self.d.execute_script(
            "return [innerWidth, document.documentElement.scrollHeight];"
        )
        shot = self.d.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
