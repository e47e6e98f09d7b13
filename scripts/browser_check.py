#!/usr/bin/env python3
"""Checks a report.html as headless Chromium rendered it (scripts/browser_check.sh).

Arguments: RESULTS_DIR DOM_FILE LOG_FILE SCREENSHOT. Reads report.json from RESULTS_DIR to
know what the page must show, the DOM Chromium dumped after rendering, Chromium's log (page
console messages appear there as `CONSOLE` lines), and the PNG screenshot. Exits 1 naming
every problem found.
"""
import json
import struct
import sys
from html.parser import HTMLParser
from pathlib import Path


class Page(HTMLParser):
    """Collects the figures, their SVG content, the verdict and every external reference."""

    def __init__(self):
        super().__init__()
        self.stack = []
        self.figures = []  # [data-plot, drawing elements inside its svg]
        self.plot_count = None
        self.verdict = ""
        self.in_verdict = False
        self.external = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.stack.append(tag)
        if tag == "body":
            self.plot_count = a.get("data-plot-count")
        if tag == "figure" and "plot" in (a.get("class") or "").split():
            self.figures.append([a.get("data-plot"), 0, False])
        if self.figures and tag == "svg":
            self.figures[-1][2] = True
        if self.figures and tag in ("polyline", "circle", "rect", "line", "path"):
            self.figures[-1][1] += 1
        if tag == "script":
            self.scripts += 1
        if tag == "link":
            self.external.append(f"<link {a}>")
        for k in ("src", "srcset", "data", "poster"):
            if k in a:
                self.external.append(f"<{tag} {k}={a[k]!r}>")
        href = a.get("href")
        if href is not None and not href.startswith("#"):
            self.external.append(f"<{tag} href={href!r}>")
        if "url(" in (a.get("style") or ""):
            self.external.append(f"<{tag} style with url()>")
        if a.get("id") == "verdict-value":
            self.in_verdict = True

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()
        if tag == "p":
            self.in_verdict = False

    def handle_data(self, data):
        if self.in_verdict:
            self.verdict += data.strip()
        if self.stack and self.stack[-1] == "style" and "url(" in data:
            self.external.append("url() in a stylesheet")


def png_size(path):
    b = Path(path).read_bytes()
    if len(b) < 33 or b[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", b[16:24]), len(b)


def main():
    results, dom, log, shot = sys.argv[1:5]
    report = json.loads((Path(results) / "report.json").read_text())
    page = Page()
    page.feed(Path(dom).read_text())
    problems = []

    compared = [
        p for p in report["pairs"]
        if p["verdict"] in ("PASS_EQUIV", "FAIL_EQUIV", "EXPECTED_DRIFT", "FAIL_DRIFT") and p["metrics"]
    ]
    dtypes = {p["dtype"] for p in compared}
    traced = report["trace"]["traced_pairs"] if report.get("trace") else 0
    # Pairs held to the reference with a comparison get one figure each, at most 24.
    held = [
        p for p in report["pairs"]
        if p.get("reference") and (p["reference"].get("prefill") or p["reference"].get("decode"))
    ]
    want = len(compared) + len(dtypes) + traced + min(len(held), 24)
    plots = {f[0] for f in page.figures}
    if len(page.figures) != want:
        problems.append(f"{len(page.figures)} plots on the page, report.json calls for {want}")
    if page.plot_count != str(len(page.figures)):
        problems.append(f"data-plot-count {page.plot_count} but {len(page.figures)} plots")
    for p in compared:
        if f"pair:{p['id']}" not in plots:
            problems.append(f"no plot for pair {p['id']}")
    if sum(1 for f in plots if f.startswith("reference:")) != min(len(held), 24):
        problems.append("the reference figures are not the 24 (or fewer) pairs held to it")
    for d in dtypes:
        if f"drift:{d}" not in plots:
            problems.append(f"no drift-by-span plot for {d}")
    for name, drawn, has_svg in page.figures:
        if not has_svg or drawn < 3:
            problems.append(f"plot {name} is empty ({drawn} drawing elements, svg {has_svg})")
    if page.verdict != report["verdict"]:
        problems.append(f"verdict shown {page.verdict!r}, report.json says {report['verdict']!r}")
    if page.scripts:
        problems.append(f"{page.scripts} <script> elements: the page must read without JavaScript")
    for e in page.external:
        problems.append(f"external reference (the page must be self-contained): {e}")
    console = [l for l in Path(log).read_text(errors="replace").splitlines() if ":CONSOLE" in l]
    for l in console:
        problems.append(f"console message: {l}")
    size = png_size(shot)
    if size is None:
        problems.append(f"{shot} is not a PNG")
    elif size[1] < 20_000:
        problems.append(f"{shot} is only {size[1]} bytes: a blank page?")

    name = report["sweep"]["name"]
    if problems:
        print(f"browser check {name}: FAILED")
        for p in problems:
            print(f"  - {p}")
        sys.exit(1)
    print(
        f"browser check {name}: ok — {len(page.figures)} plots drawn, verdict {page.verdict} "
        f"shown, no console message, no external reference; screenshot {shot} "
        f"{size[0][0]}x{size[0][1]}"
    )


if __name__ == "__main__":
    main()
