"""The public verification page in a real browser: Debian's chromium,
headless, driven by Selenium through chromedriver. A screenshot of each
outcome is kept under build/screenshots/ for a person to look at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from services.cli.cluster import gateway_url, rest_url
from tests.conftest import ROOT, Platform
from tests.e2e.rest import Rest, certified_invoice
from tests.integration.invoice_helpers import load_sample_catalog

pytestmark = pytest.mark.e2e
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = ROOT / "build" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make setup installs them as root)")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1024,1300"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _check(driver: webdriver.Chrome, base: str, code: str, screenshot: str) -> str:
    driver.get(f"{base}/verify")
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "es"
    label = driver.find_element(By.CSS_SELECTOR, "label[for=codigo]")
    assert label.text == "Código de verificación"
    field = driver.find_element(By.ID, "codigo")
    field.send_keys(code)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    result = WebDriverWait(driver, 15).until(expected_conditions.presence_of_element_located((By.ID, "resultado")))
    assert result.get_attribute("role") == "status"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / screenshot))
    return result.text + "\n" + str(result.get_attribute("data-outcome"))


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_anyone_can_check_a_certificate_code_in_a_browser(platform: Platform, browser: webdriver.Chrome) -> None:
    load_sample_catalog(platform.settings)
    invoice, certificate, broker = certified_invoice(platform)
    base = gateway_url(platform.settings)  # the browser reaches the gateway itself (no CA of the mesh to trust)

    # The QR target: the edge, where the public comes in.
    assert certificate["verificationUrl"] == f"{rest_url(platform.settings)}/verify/{certificate['verificationCode']}"
    shown = _check(browser, base, certificate["verificationCode"].lower(), "verify-valid.png")
    assert shown.endswith("valido")
    assert "Certificado válido" in shown
    for expected in (invoice["number"], certificate["number"], "Molinos del Centro S.A.", "860034313-7"):
        assert expected in shown, expected

    reason = {"reason": "factura anulada por el emisor"}
    assert broker("POST", f"/v1/{certificate['name']}:revoke", json=reason).status_code == 403  # back office only
    revoked = Rest(platform, "operator")("POST", f"/v1/{certificate['name']}:revoke", json=reason)
    assert revoked.status_code == 200, revoked.text
    shown = _check(browser, base, certificate["verificationCode"], "verify-revoked.png")
    assert shown.endswith("revocado")
    assert "factura anulada por el emisor" in shown

    assert _check(browser, base, "ZZZZ-ZZZZ-ZZZZ", "verify-unknown.png").endswith("desconocido")
    assert _check(browser, base, "no es un código", "verify-invalid.png").endswith("invalido")


def test_the_qr_target_opens_the_page_directly(platform: Platform, browser: webdriver.Chrome) -> None:
    browser.get(f"{gateway_url(platform.settings)}/verify/ABCD-EFGH-JKMN")
    result = browser.find_element(By.ID, "resultado")
    assert result.get_attribute("data-outcome") == "desconocido"
    assert browser.find_element(By.ID, "codigo").get_attribute("value") == "ABCD-EFGH-JKMN"
