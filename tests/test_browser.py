"""The layouts in a real browser: headless Chromium (Debian's chromium + chromium-driver)
loads Spotlight's page and every widget of the layout must be on it.

What the page is checked by (Spotlight 1.8 lays widgets out with flexlayout-react):
- every widget is a tab whose button (`.flexlayout__tab_button_content`) shows its name;
  a tab set shows its first widget, the others' buttons are there but not their content;
- a shown table has `[data-test-tag=datagrid]` with the row count, a scatterplot draws its
  axis captions (`text.caption`), a histogram names its column, an inspector waits with
  "No Data Selected" and, once a row is clicked, shows the images of that row;
- the issues widget ("Findings") lists the findings of `explorer.findings` by title (with
  their counts), most severe first, under "N rows affected in total" ("No Issues found"
  without any); clicking a title selects its rows: the table's "Selected" pill counts them
  and its Selected view shows exactly them (told apart by their `nn_id`, which is row + 1);
- a table cell sits at `[data-rowindex][data-columnindex]`, its header at rowindex -1;
- Spotlight's similarity maps ask the server to reduce over the websocket (a "task"
  message, seen in Chromium's performance log): none may be sent while loading, and
  clicking a similarity map's tab must send one (so the check can fail).
Screenshots go to tests/artifacts/ (gitignored). No skip: CI installs Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from importlib import import_module
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from synthetic import write_synthetic_out
from test_spotlight import tabsets

from explorer import spotlight as sp

fd = import_module("explorer.findings")  # the module; explorer.findings is the function

os.environ["SPOTLIGHT_OPT_OUT"] = "true"  # read by the server process when it starts

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
N_IMAGES = 40
IMAGE_SIZE = 16  # what tests/synthetic.py draws
TIMEOUT = 60


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    # The performance log carries the websocket frames the page sends.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def outs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "run": write_synthetic_out(tmp_path_factory.mktemp("out"), N_IMAGES),
        "nolabel": write_synthetic_out(
            tmp_path_factory.mktemp("nolabel"), N_IMAGES, steps=(), labels=False
        ),
        # Planted findings (tests/synthetic.py PLANTED_*) and the training dynamics.
        "planted": write_synthetic_out(
            tmp_path_factory.mktemp("planted"), N_IMAGES, findings=True, image_dynamics=True
        ),
    }


@pytest.fixture(scope="module")
def viewer(outs: dict[str, Path]):
    viewer = sp.show(outs["run"])
    yield viewer
    viewer.close()


def sent_tasks(driver: webdriver.Chrome) -> list[dict]:
    """The reduction tasks the page sent over the websocket since the last call."""
    tasks = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.webSocketFrameSent":
            payload = json.loads(message["params"]["response"]["payloadData"])
            if payload.get("type") == "task":
                tasks.append(payload["data"])
    return tasks


def panel(driver: webdriver.Chrome, name: str):
    """The content of the widget whose tab is called `name` (path .../tbN -> .../tN)."""
    buttons = [
        title.find_element(By.XPATH, "..")
        for title in driver.find_elements(By.CSS_SELECTOR, ".flexlayout__tab_button_content")
        if title.text == name
    ]
    assert len(buttons) == 1, f"{len(buttons)} tabs called {name!r}"
    path = buttons[0].get_attribute("data-layout-path")
    head, _, last = path.rpartition("/")
    return driver.find_element(By.CSS_SELECTOR, f'[data-layout-path="{head}/t{last[2:]}"]')


def wait_for(driver: webdriver.Chrome, condition, what: str):
    try:
        return WebDriverWait(driver, TIMEOUT, poll_frequency=0.25).until(lambda _: condition())
    except TimeoutException:
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "timeout.png"))
        raise AssertionError(
            f"page never showed {what} (see tests/artifacts/timeout.png)"
        ) from None


def tab_titles(driver: webdriver.Chrome) -> list[str]:
    elements = driver.find_elements(By.CSS_SELECTOR, ".flexlayout__tab_button_content")
    return [element.text for element in elements]


def listed_findings(content) -> list[str]:
    """The titles the issues widget lists, in order: its text-only elements ending in "(N)"."""
    return [
        element.text
        for element in content.find_elements(By.XPATH, ".//div[not(*)]")
        if element.text.endswith(")") and " (" in element.text
    ]


def column_values(content, column: str) -> list[str]:
    """The shown cells of a table's column, top to bottom."""
    headers = [
        header
        for header in content.find_elements(By.CSS_SELECTOR, "[data-rowindex='-1']")
        if header.text == column
    ]
    assert len(headers) == 1, f"{len(headers)} headers called {column!r}"
    index = headers[0].get_attribute("data-columnindex")
    cells = content.find_elements(By.CSS_SELECTOR, f"[data-columnindex='{index}']")
    rows = {int(cell.get_attribute("data-rowindex")): cell.text for cell in cells}
    return [rows[row] for row in sorted(rows) if row >= 0]


def check_findings(driver: webdriver.Chrome, content, found: list[fd.Finding]) -> None:
    """The issues widget lists `found` by title, in order, and how many rows they cover."""
    if not found:
        wait_for(driver, lambda: "No Issues found" in content.text, "no findings")
        return
    titles = [finding.title for finding in found]
    wait_for(driver, lambda: listed_findings(content) == titles, f"the findings {titles}")
    covered = len({row for finding in found for row in finding.rows})
    assert f"{covered} rows affected in total" in content.text


def check_shown_widget(
    driver: webdriver.Chrome, widget: dict, n_rows: int, found: list[fd.Finding]
) -> None:
    """The content a shown widget must draw (`found`: the findings the page must list)."""
    content = panel(driver, widget["name"])
    kind, config = widget["type"], widget["config"]
    if kind == "table":
        counts = content.find_elements(By.CSS_SELECTOR, '[data-test-tag="datagrid-all-count"]')
        assert [count.text for count in counts] == [str(n_rows)]
        assert content.find_elements(By.CSS_SELECTOR, "[data-rowindex='0']")
    elif kind == "scatterplot":
        captions = {c.text for c in content.find_elements(By.CSS_SELECTOR, "text.caption")}
        assert {config["xAxisColumn"], config["yAxisColumn"]} <= captions, captions
    elif kind == "histogram":
        assert config["columnKey"] in content.text
    elif kind == "inspector":
        assert "No Data Selected" in content.text
    elif kind == "IssuesWidget":
        check_findings(driver, content, found)
    else:
        raise AssertionError(f"no check for a shown {kind}")


CASES = {
    # case: (OUT, layout name or None for the fitting one, rows)
    "pre_post_ft": ("run", "pre_post_ft", N_IMAGES),
    "checkpoint_review": ("planted", "checkpoint_review", N_IMAGES),
    "outlier_review": ("planted", "outlier_review", N_IMAGES),
    "training_dynamics": ("planted", "training_dynamics", N_IMAGES),
    "nolabel_default": ("nolabel", None, N_IMAGES),
}


@pytest.mark.parametrize("case", list(CASES))
def test_layout_in_browser(driver, viewer, outs: dict[str, Path], case: str) -> None:
    out, layout, n_rows = CASES[case]
    sp.show(outs[out], layout=layout, port=viewer.port)
    with urllib.request.urlopen(f"{viewer.url}api/layout/", timeout=30) as response:
        served = json.load(response)
    sets = tabsets(served)
    expected = [widget["name"] for tabset in sets for widget in tabset]

    driver.get("about:blank")
    driver.get_log("performance")  # forget what earlier pages sent
    driver.get(viewer.url)
    wait_for(driver, lambda: sorted(tab_titles(driver)) == sorted(expected), "every widget's tab")
    wait_for(
        driver,
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "[data-rowindex='0']")) > 0,
        "table rows",
    )
    assert sorted(tab_titles(driver)) == sorted(expected)
    assert "IssuesWidget" in [tabset[0]["type"] for tabset in sets], "every layout lists findings"
    found = fd.findings(outs[out])
    for tabset in sets:
        check_shown_widget(driver, tabset[0], n_rows, found)
        for hidden in tabset[1:]:
            assert not panel(driver, hidden["name"]).is_displayed()
    assert sent_tasks(driver) == [], "the first view must not ask the server to reduce"
    if case == "training_dynamics":
        # The most forgotten first: the table is sorted by forgetting_events, descending.
        shown = [int(v) for v in column_values(panel(driver, "Forgetting"), "forgetting_events")]
        assert shown[:3] == [3, 2, 2] and shown == sorted(shown, reverse=True), shown

    # Click the first row of the first table: both inspectors show that row's images,
    # the image and its nearest neighbour side by side.
    first_table = panel(driver, next(w["name"] for s in sets for w in s if w["type"] == "table"))
    first_table.find_element(By.CSS_SELECTOR, "[data-rowindex='0'][data-columnindex='0']").click()
    images = {}
    for name in ("Inspector", "Nearest neighbour"):
        content = panel(driver, name)
        images[name] = wait_for(
            driver,
            lambda content=content: [
                image
                for image in content.find_elements(By.TAG_NAME, "img")
                if driver.execute_script("return arguments[0].naturalWidth", image) > 0
            ],
            f"an image in {name}",
        )[0]
        width = driver.execute_script("return arguments[0].naturalWidth", images[name])
        assert width == IMAGE_SIZE
    left, right = images["Inspector"].rect, images["Nearest neighbour"].rect
    assert abs(left["y"] - right["y"]) < 2 and right["x"] >= left["x"] + left["width"]

    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"spotlight_{case}.png"))

    if case == "checkpoint_review":
        # The similarity map behind a map computes once its tab is clicked (PCA: instant).
        hidden = next(w for s in sets for w in s[1:] if w["type"] == "similaritymap")
        for button in driver.find_elements(By.CSS_SELECTOR, ".flexlayout__tab_button_content"):
            if button.text == hidden["name"]:
                button.click()
        tasks = wait_for(driver, lambda: sent_tasks(driver), "a reduction task")
        assert tasks[0]["task"] == "pca"
        assert tasks[0]["args"]["column_names"] == hidden["config"]["placeBy"]


def test_clicking_a_finding_selects_its_rows(driver, viewer, outs: dict[str, Path]) -> None:
    """On the planted OUT: each finding clicked selects exactly its rows, and its description
    unfolds under its title."""
    sp.show(outs["planted"], layout="pre_post_ft", port=viewer.port)
    found = {finding.title: finding for finding in fd.findings(outs["planted"])}
    driver.get("about:blank")
    driver.get(viewer.url)
    wait_for(driver, lambda: {"Findings", "Table"} <= set(tab_titles(driver)), "the tabs")
    findings = panel(driver, "Findings")
    check_findings(driver, findings, list(found.values()))
    table = panel(driver, "Table")
    for title in ("Severe outliers (2)", "Labelled one, looks like two (2)",
                  "Near-duplicates, group 1 (3)"):  # fmt: skip
        (element,) = [e for e in findings.find_elements(By.XPATH, ".//div[not(*)]")
                      if e.text == title]  # fmt: skip
        element.click()
        rows = found[title].rows
        count = table.find_element(By.CSS_SELECTOR, '[data-test-tag="datagrid-selected-count"]')
        wait_for(driver, lambda count=count, rows=rows: count.text == str(len(rows)), title)
        table.find_element(
            By.CSS_SELECTOR, '[data-test-tag="datagrid-selected-tab-button"]'
        ).click()
        wait_for(driver, lambda rows=rows: len(column_values(table, "nn_id")) == len(rows), title)
        selected = sorted((int(value) - 1) % N_IMAGES for value in column_values(table, "nn_id"))
        assert selected == sorted(rows), title
        table.find_element(By.CSS_SELECTOR, '[data-test-tag="datagrid-all-tab-button"]').click()
    # The caret before the title unfolds the description.
    severe = found["Severe outliers (2)"]
    (title,) = [e for e in findings.find_elements(By.XPATH, ".//div[not(*)]")
                if e.text == severe.title]  # fmt: skip
    title.find_element(By.XPATH, "../div[@role='button']").click()
    wait_for(driver, lambda: severe.description in findings.text, "the description")
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "spotlight_findings.png"))
