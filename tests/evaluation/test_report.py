import base64
import re
from html.parser import HTMLParser

import cv2
import numpy as np

from vidseg.evaluation.report import write_report
from vidseg.evaluation.video import ClipResult
from vidseg.metrics import ConfusionMeter


class Collector(HTMLParser):
    """Checks that tags nest and collects the embedded data URIs."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack, self.sources, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag in ("img", "video"):
            self.sources.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def make_result():
    palette = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
    clip = ClipResult("clip-a", 5, 5, ConfusionMeter(3, 255))
    clip.tc_pairs = {"clean": [(1, 0.9), (2, 0.8), (3, 0.85), (4, 0.95)]}
    result = {
        "data": "somewhere",
        "split": "val",
        "average": "union",
        "miou": 0.5,
        "wiou": 0.6,
        "pixel_accuracy": 0.7,
        "num_pixels": 1000,
        "per_class_iou": {"road": 0.8, "tree": None, "car": 0.25},
        "tc": {"clean": 0.875},
        "tc_labels": {"clean": 0.99},
        "mvc": {"8": 0.91},
        "clips": [{"clip": "clip-a", "frames": 5, "labelled": 5, "miou": 0.5, "tc_clean": 0.875}],
    }
    return result, [clip], palette


def test_report_is_one_well_formed_page_with_its_plots_embedded(tmp_path):
    result, clips, palette = make_result()
    page = write_report(result, clips, tmp_path, palette=palette)
    text = page.read_text()
    parser = Collector()
    parser.feed(text)
    assert parser.errors == []
    assert parser.stack == []
    assert "http" not in text  # nothing is loaded from the network
    for value in ("50.00", "60.00", "70.00", "87.50", "99.00", "91.00", "clip-a"):
        assert value in text
    images = [s for s in parser.sources if s.startswith("data:image/png;base64,")]
    assert len(images) == 2  # per-class IoU and TC over time
    bars = cv2.imdecode(np.frombuffer(base64.b64decode(images[0].split(",", 1)[1]), np.uint8), 1)
    bars = bars[..., ::-1]
    # The bars are drawn in the classes' colours; 'tree' has no value and no bar.
    for colour, present in ((palette[0], True), (palette[2], True), (palette[1], False)):
        assert np.all(bars == colour, axis=-1).any() == present
    on_disk = cv2.imread(str(tmp_path / "per_class_iou.png"))
    np.testing.assert_array_equal(on_disk, bars[..., ::-1])
    assert (tmp_path / "tc_clean.png").is_file()


def test_report_embeds_a_small_video_and_links_a_large_one(tmp_path, monkeypatch):
    from vidseg.evaluation import report

    result, clips, _ = make_result()
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    page = write_report(result, clips, tmp_path / "a", video=video).read_text()
    assert re.search(r'<video controls muted src="data:video/mp4;base64,[A-Za-z0-9+/=]+">', page)
    monkeypatch.setattr(report, "MAX_EMBEDDED_VIDEO_BYTES", 10)
    page = write_report(result, clips, tmp_path / "b", video=video).read_text()
    assert '<a href="clip.mp4">' in page
    assert "data:video" not in page
