"""report.html in a real browser: headless Chromium loads every embedded image, logs no error.

A copy of the page gets two inline scripts: one at the top of <head> that records script
errors, failed resources and console.error calls, and one that, after the load event, writes
the image checks into the DOM; ``--dump-dom`` prints that DOM. One screenshot of the report
is kept as ``test-artifacts/report_screenshot.png`` (gitignored) for a person to look at.
Skipped when no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_report import make_micro_dir, make_run_dir  # tests/ is on sys.path (rootdir)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found (install it: apt-get install chromium)")

HOOK = """<script>
window.__litomo = {errors: []};
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__litomo.errors.push(t && t !== window && t.tagName ? 'failed to load ' + t.tagName + ' ' + (t.alt || '')
                                                           : 'error: ' + e.message);
}, true);
(function () {
  var orig = console.error;
  console.error = function () { window.__litomo.errors.push('console.error: ' + Array.from(arguments).join(' '));
                                return orig.apply(console, arguments); };
})();
</script>"""

CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var res = {n_images: imgs.length,
             broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                         .map(function (i) { return i.alt; }),
             widths: imgs.map(function (i) { return i.naturalWidth; }),
             errors: window.__litomo.errors};
  var pre = document.createElement('pre');
  pre.id = 'litomo-check';
  pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>"""


def _flags(tmp_path: Path) -> list[str]:
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            "--disable-extensions", f"--user-data-dir={tmp_path / 'chrome-profile'}",
            "--virtual-time-budget=10000"]


def _check_in_browser(report: Path, tmp_path: Path) -> tuple[dict, str]:
    page = report.read_text()
    page = page.replace("<head>", "<head>" + HOOK, 1).replace("</body>", CHECK + "</body>", 1)
    probe = tmp_path / "probe.html"
    probe.write_text(page)
    proc = subprocess.run([*_flags(tmp_path), "--enable-logging=stderr", "--v=0", "--dump-dom",
                           probe.as_uri()], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HOME": str(tmp_path)})
    m = re.search(r'<pre id="litomo-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no check results in the dumped DOM (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")), proc.stderr


def _console_errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or "Error" in ln)]


def test_limap_report_renders_in_chromium(tmp_path):
    from litomo.report.html import FIGURES, build_report

    run = tmp_path / "run"
    make_run_dir(run)
    report = build_report(run)
    res, stderr = _check_in_browser(report, tmp_path)
    assert res["n_images"] == len(FIGURES)
    assert res["broken"] == [], f"images that did not load: {res['broken']}"
    assert all(w > 300 for w in res["widths"])  # decoded PNGs at 150 dpi, not icons
    assert res["errors"] == []
    assert _console_errors(stderr) == []

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report_screenshot.png"
    shot.unlink(missing_ok=True)
    subprocess.run([*_flags(tmp_path), f"--screenshot={shot}", "--window-size=1280,3000", report.as_uri()],
                   capture_output=True, timeout=180, env={**os.environ, "HOME": str(tmp_path)})
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG"


def test_micro_report_renders_in_chromium_and_probe_sees_breakage(tmp_path):
    from litomo.report.html import build_report

    make_micro_dir(tmp_path / "micro")
    report = build_report(tmp_path / "micro")
    res, stderr = _check_in_browser(report, tmp_path)
    assert res["n_images"] == 2 and res["broken"] == [] and res["errors"] == []
    assert _console_errors(stderr) == []
    # the probe itself must be able to fail: a corrupt image and a script error are reported
    bad = tmp_path / "bad" / "report.html"
    bad.parent.mkdir()
    bad.write_text(report.read_text().replace(
        "</body>", '<img src="data:image/png;base64,AAAA" alt="corrupt"><script>undefinedCall();</script></body>'))
    res, _ = _check_in_browser(bad, tmp_path)
    assert res["broken"] == ["corrupt"]
    assert any("undefinedCall" in e for e in res["errors"])
