"""A small page-object layer over Selenium for the console tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
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
        if not self.d.current_url.startswith(self.base):
            self.d.get(f"{self.base}/")
        self.d.execute_script("location.hash = arguments[0]", hash_path)

    def until(self, what: Callable[[], Any], message: str) -> Any:
        def probe(_: Any) -> Any:
            try:
                return what()
            except (StaleElementReferenceException, WebDriverException):
                return False

        return WebDriverWait(self.d, WAIT, poll_frequency=0.2).until(probe, message)

    def el(self, css: str) -> WebElement:
        return self.until(lambda: self.d.find_element(By.CSS_SELECTOR, css), f"no {css}")

    def els(self, css: str) -> list[WebElement]:
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def text_in(self, css: str, text: str) -> WebElement:
        def found() -> WebElement | bool:
            el = self.d.find_element(By.CSS_SELECTOR, css)
            return el if text in el.text else False

        return self.until(found, f"{text!r} never appeared in {css}")

    def button(self, label: str, within: str = "body") -> WebElement:
        """A visible button (or link styled as one) whose text or aria-label is ``label``."""

        def find() -> WebElement | bool:
            for el in self.d.find_elements(By.CSS_SELECTOR, f"{within} button, {within} a.button"):
                if el.is_displayed() and label in (el.text, el.get_attribute("aria-label")):
                    return el
            return False

        return self.until(find, f"no button {label!r} in {within}")

    def fill(self, css: str, value: str) -> None:
        el = self.el(css)
        el.clear()
        el.send_keys(value)

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
        self.d.save_screenshot(str(path))
