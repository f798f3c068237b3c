"""report.html in a real browser: headless Chromium renders the page and its embedded plots.

Slow, and skipped where no Chromium is installed (Debian: ``apt-get install chromium``).
"""

import shutil
import subprocess

import cv2
import numpy as np
import pytest
from test_report import make_result

from vidseg.evaluation.report import write_report

BROWSER = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
    None,
)
# Chromium's background services reach for the network, which is closed here.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no Chromium installed")
def test_headless_chromium_renders_the_report_and_its_plots(tmp_path):
    result, clips, palette = make_result()
    page = write_report(result, clips, tmp_path / "report", palette=palette)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            BROWSER,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1000,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = cv2.imread(str(shot))[..., ::-1]
    assert image.shape[:2] == (1600, 1000)
    # The per-class bars are drawn in the classes' colours inside an embedded PNG: seeing those
    # colours on screen means the page decoded and laid out its images.
    for colour in (palette[0], palette[2]):
        assert np.all(image == colour, axis=-1).sum() > 200
    dom = subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", page.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "<h1>vidseg evaluation</h1>" in dom
    assert dom.count("<img") == 2
