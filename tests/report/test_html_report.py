"""The HTML report: one self-contained file (no network), every leaderboard row and figure, escaped text,
several runs with their combined leaderboard, one-line refusals, `--no-report`, and a real browser that sorts."""

from __future__ import annotations

import base64
import io
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gazebench.aggregate.leaderboard import structurally_undefined
from gazebench.api import report, run_benchmark, wrap_model
from gazebench.cli import main
from gazebench.errors import UserError
from gazebench.report.figures import run_figures
from tests.fixtures.tiny_models import TinyCNN

CLASSES = ["Normal", "CHF", "pneumonia"]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


class ReportParser(HTMLParser):
    """Every tag's attributes, every table's rows (cells as text) by table id, figure captions."""

    def __init__(self):
        super().__init__()
        self.attributes: list[tuple[str, dict]] = []
        self.tables: dict[str, list[dict]] = {}
        self.captions: list[str] = []
        self._table, self._row, self._cell, self._caption = None, None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.attributes.append((tag, attrs))
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or f"table-{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._row = {"class": attrs.get("class", ""), "cells": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "figcaption":
            self._caption = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row["cells"].append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "figcaption":
            self.captions.append("".join(self._caption))
            self._caption = None

    def handle_data(self, data):
        for part in (self._cell, self._caption):
            if part is not None:
                part.append(data)


def parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text())
    return parser


def api_run(out: Path, tiny_synth: Path, name: str, seed: int, methods: str) -> Path:
    torch.manual_seed(seed)
    adapter = wrap_model(TinyCNN(), CLASSES, "conv2", input_size=32, name=name)
    run_benchmark(adapter, root=tiny_synth, split="all", methods=methods, metrics="nss,kl", out=out, limit=6, batch_size=6)
    return out


@pytest.fixture(scope="module")
def runs(tiny_synth, tmp_path_factory) -> tuple[Path, Path]:
    """Two runs of two tiny models on the same images (the API writes each run's report.html by default)."""
    folder = tmp_path_factory.mktemp("html")
    return api_run(folder / "a", tiny_synth, "tiny_a", 0, "saliency,gradcam"), api_run(folder / "b", tiny_synth, "tiny_b", 1, "saliency")


def shown_leaderboard(run_dir: Path) -> pd.DataFrame:
    board = pd.read_csv(run_dir / "leaderboard.csv")
    return board[~structurally_undefined(board)]


def test_the_run_writes_a_report_that_needs_no_network(runs):
    path = runs[0] / "report.html"
    parsed = parse(path)
    links = [(tag, attrs[name]) for tag, attrs in parsed.attributes for name in ("src", "href") if name in attrs]
    assert links, "the report has images and in-page links"
    assert not [link for link in links if link[1].lower().startswith(("http:", "https:", "//", "file:"))]
    assert all(value.startswith("data:image/png;base64,") for tag, value in links if tag == "img")
    assert all(value.startswith("#") for tag, value in links if tag == "a")
    assert not [tag for tag, attrs in parsed.attributes if tag in ("link", "iframe", "object") or (tag == "script" and "src" in attrs)]
    assert "<style>" in path.read_text() and "<script>" in path.read_text()


def test_the_report_has_every_leaderboard_row_with_floors_marked(runs):
    run_dir = runs[0]
    table = parse(run_dir / "report.html").tables["run-1-leaderboard-table"]
    header, rows = table[0]["cells"], table[1:]
    assert header[:5] == ["metric", "method", "role", "mean", "95% CI"]
    expected = shown_leaderboard(run_dir)
    assert len(rows) == len(expected) and len(expected) < len(pd.read_csv(run_dir / "leaderboard.csv"))  # the uniform floor's nss cell is left out
    for row, cells in zip(expected.itertuples(), rows):
        arrow = "↓" if row.metric == "kl" else "↑"
        assert cells["cells"][:5] == [f"{row.metric} {arrow}", row.method, row.role, f"{row.mean:.4f}", f"[{row.ci_low:.4f}, {row.ci_high:.4f}]"]
        assert cells["class"] == ("" if row.role == "method" else f"role-{row.role}")
    assert {cells["cells"][2] for cells in rows} == {"method", "floor"}


def test_the_report_embeds_every_figure_as_a_png_with_its_caption(runs):
    run_dir = runs[0]
    parsed = parse(run_dir / "report.html")
    images = [attrs for tag, attrs in parsed.attributes if tag == "img"]
    entries = run_figures(run_dir)
    assert [image["alt"] for image in images] == [entry.title for entry in entries] == [
        "Metric distributions per method", "Paired comparisons", "Most salient region per class",
        "tiny_a: maps beside the radiograph and the gaze", "tiny_a: maps over the radiograph",
    ]  # fmt: skip
    for image in images:
        assert Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1]))).format == "PNG"
    assert [caption.split(". ", 1)[1] for caption in parsed.captions] == [entry.caption for entry in entries]
    text = (run_dir / "report.html").read_text()
    for heading in ("Leaderboard", "Figures", "Breakdown by class", "Region analysis", "Data", "Configuration"):
        assert f">{heading}</h3>" in text
    assert "checkpoint_sha256" in text and "6 image(s) of" in text


def test_every_text_is_escaped_and_the_data_use_notice_is_shown(runs, tmp_path):
    run_dir = tmp_path / "a<b>&c"
    shutil.copytree(runs[0], run_dir)
    (run_dir / "DATA_USE.md").write_text("# Data use notice\n\nDerived from <credentialed> data & covered by the agreement.\n")
    path = report(run_dir)
    assert path == run_dir / "report.html"
    text = path.read_text()
    assert "a&lt;b&gt;&amp;c" in text and "a<b>&c" not in text
    assert "Derived from &lt;credentialed&gt; data &amp; covered by the agreement." in text
    assert text.index("Data use notice") < text.index('id="run-1-leaderboard-table"')  # before the numbers
    assert "Built from credentialed data" in text


def test_several_runs_get_one_section_each_and_their_combined_leaderboard(runs, tmp_path):
    out = report(list(runs), tmp_path / "both.html")
    parsed = parse(out)
    combined = parsed.tables["combined-leaderboard-table"]
    assert combined[0]["cells"][:3] == ["model", "metric", "method"]
    assert {cells["cells"][0] for cells in combined[1:]} == {"tiny_a", "tiny_b"}
    assert {"run-1-leaderboard-table", "run-2-leaderboard-table"} <= set(parsed.tables)
    assert len([attrs for tag, attrs in parsed.attributes if tag == "img"]) == 2 * 5


def test_runs_that_cannot_share_a_leaderboard_still_get_their_sections(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs[0], copy)
    text = report([runs[0], copy], tmp_path / "both.html").read_text()
    assert "no combined leaderboard: runs " in text and "combined-leaderboard" not in text
    assert 'id="run-1"' in text and 'id="run-2"' in text


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.mark.parametrize("case", ["missing", "empty", "several without --out", "twice", "out is a folder"])
def test_report_refusals_are_one_line_with_exit_status_2(runs, tmp_path, case):
    (tmp_path / "empty").mkdir()
    args, message = {
        "missing": ([tmp_path / "nowhere"], "is not a folder; give the run directory of `gazebench run` (its --out)"),
        "empty": ([tmp_path / "empty"], "is not a gazebench run directory (no scores/*.parquet, no sanity.csv)"),
        "several without --out": ([*runs], "--out is required with several run directories"),
        "twice": ([runs[0], runs[0], "--out", tmp_path / "x.html"], "is given twice; give each run once"),
        "out is a folder": ([runs[0], "--out", tmp_path], "is a folder; give the file to write"),
    }[case]
    result = invoke("report", *args)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("gazebench: error: ") and message in result.output
    assert not (tmp_path / "x.html").exists()


def test_the_api_refuses_like_the_command_line(runs, tmp_path):
    with pytest.raises(UserError, match="is not a gazebench run directory"):
        report(tmp_path)
    with pytest.raises(UserError, match="^--out is required with several run directories"):
        report(list(runs))


def test_no_report_skips_the_report_and_gazebench_report_writes_it_later(tiny_synth, random_checkpoint, tmp_path):
    out = tmp_path / "run"
    command = ["run", "--model", "unet_gaze", "--data", "synth", "--root", tiny_synth, "--split", "all", "--checkpoint", random_checkpoint,
               "--out", out, "--batch-size", "2", "--limit", "2", "--methods", "saliency", "--metrics", "nss"]
    result = invoke(*command, "--no-report")
    assert result.exit_code == 0, result.output
    assert (out / "leaderboard.csv").is_file() and (out / "figures" / "metric_distributions.png").is_file()
    assert not (out / "report.html").exists() and "report:" not in result.output
    result = invoke("report", out)
    assert result.exit_code == 0 and result.output.strip() == f"wrote {out / 'report.html'}"
    (out / "report.html").unlink()
    result = invoke(*command)  # the same command, by default: the run resumes and writes its report
    assert result.exit_code == 0 and f"report: {out / 'report.html'}" in result.output
    assert len(parse(out / "report.html").tables["run-1-leaderboard-table"]) == 1 + len(shown_leaderboard(out))


@pytest.fixture
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("no headless Chromium: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # Debian's browser and driver: selenium-manager never downloads anything
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def column_keys(driver, table_id: str, column: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr')).map(r => r.cells[arguments[1]].getAttribute('data-sort'))", table_id, column)


def test_a_browser_shows_every_row_and_figure_and_sorts_on_a_click(runs, browser, tmp_path):
    from selenium.webdriver.common.by import By

    run_dir = runs[0]
    browser.get((run_dir / "report.html").resolve().as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#run-1-leaderboard-table tbody tr")
    assert len(rows) == len(shown_leaderboard(run_dir))
    sizes = browser.execute_script("return Array.from(document.images).map(image => [image.complete, image.naturalWidth])")
    assert len(sizes) == len(run_figures(run_dir)) and all(complete and width > 0 for complete, width in sizes)

    header = browser.find_element(By.XPATH, "//table[@id='run-1-leaderboard-table']//th[text()='mean']")
    column = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#run-1-leaderboard-table thead th")].index("mean")
    before = column_keys(browser, "run-1-leaderboard-table", column)
    header.click()
    ascending = column_keys(browser, "run-1-leaderboard-table", column)
    assert ascending != before and ascending == sorted(before, key=float)
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert column_keys(browser, "run-1-leaderboard-table", column) == sorted(before, key=float, reverse=True)

    browser.find_element(By.XPATH, "//table[@id='run-1-breakdown-table']/ancestor::details/summary").click()
    browser.find_element(By.XPATH, "//table[@id='run-1-breakdown-table']/preceding-sibling::input[@type='search']").send_keys("gradcam")
    shown = browser.execute_script("return Array.from(document.querySelectorAll('#run-1-breakdown-table tbody tr')).filter(r => !r.hidden).map(r => r.cells[1].textContent)")
    assert shown and set(shown) == {"gradcam"} and len(shown) < len(browser.find_elements(By.CSS_SELECTOR, "#run-1-breakdown-table tbody tr"))

    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    assert Image.open(screenshot).format == "PNG"


def test_the_page_script_sorts_numbers_as_numbers_text_as_text_and_missing_values_last(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from gazebench.report.html import SCRIPT
    from gazebench.report.html_tables import html_table

    rows = [([name, (f"{value}", value)], "") for name, value in (("b", 10.0), ("a", 9.0), ("d", float("nan")), ("c", 100.0), ("e", -1.0))]
    page = tmp_path / "table.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{html_table(["name", "value"], rows, "t")}<script>{SCRIPT}</script></body></html>')
    browser.get(page.as_uri())
    headers = browser.find_elements(By.CSS_SELECTOR, "#t th")

    def names():
        return [row.find_elements(By.TAG_NAME, "td")[0].text for row in browser.find_elements(By.CSS_SELECTOR, "#t tbody tr")]

    headers[1].click()
    assert names() == ["e", "a", "b", "c", "d"]  # -1, 9, 10, 100 (text order would put 10 and 100 before 9), NaN last
    headers[1].click()
    assert names() == ["c", "b", "a", "e", "d"]  # descending, NaN still last
    headers[0].click()
    assert names() == ["a", "b", "c", "d", "e"]


def test_a_sanity_folder_alone_gets_a_report_with_its_figure(tmp_path):
    from gazebench.aggregate.sanity import summarise

    steps = [{"method": "saliency", "step": step, "image_id": f"i{i}", "patient_id": f"p{i}", "target": "CHF", "measure": measure, "value": 1.0 / (1 + step + i)}
             for step in range(3) for i in range(3) for measure in ("spearman", "ssim")]
    summarise(pd.DataFrame(steps), [["fc"], ["conv2", "conv1"]], seed=0).to_csv(tmp_path / "sanity.csv", index=False)
    text = report(tmp_path).read_text()
    assert 'alt="Sanity check: cascading randomisation"' in text and "leaderboard-table" not in text
