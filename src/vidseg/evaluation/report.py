"""Pictures and a single self-contained HTML page for an evaluation.

The page embeds its plots (PNG) and, optionally, a video (MP4) as base64 data, so it can be
mailed or archived as one file; it loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidseg.evaluation.video import ClipResult
from vidseg.utils.io import atomic_write, encode_png, write_png
from vidseg.visualize import bar_plot, grid, line_plot

# Videos above this size are linked rather than embedded, to keep the page openable.
MAX_EMBEDDED_VIDEO_BYTES = 20 * 1024 * 1024
# TC-over-time curves drawn in one chart; more clips would be unreadable.
MAX_CLIP_CURVES = 8


def per_class_plot(result: dict[str, Any], palette: np.ndarray | None) -> np.ndarray:
    """Horizontal bars of the per-class IoU (%), in the classes' colours."""
    values = {name: None if v is None else 100 * v for name, v in result["per_class_iou"].items()}
    return bar_plot(values, "per-class IoU", "IoU %", colors=palette)


def tc_over_time_plot(clips: Sequence[ClipResult], protocol: str) -> np.ndarray | None:
    """TC (%) of each consecutive pair against its frame number, one curve per clip."""
    series = {
        clip.clip: ([n for n, _ in pairs], [100 * v for _, v in pairs])
        for clip in clips[:MAX_CLIP_CURVES]
        if (pairs := clip.tc_pairs.get(protocol))
    }
    if not series:
        return None
    return line_plot(series, f"TC ({protocol}) per frame pair", "frame", "TC %", size=(360, 640))


def training_curves(run_dir: Path) -> np.ndarray | None:
    """Loss, learning rate and validation mIoU of a run (from its metrics.jsonl), side by side."""
    from vidseg.training.checkpoint import METRICS_FILE

    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    steps = [r for r in records if "loss" in r]
    vals = [r for r in records if "val_miou" in r]
    if not steps:
        return None
    x = [r["step"] for r in steps]
    panels = [
        line_plot(
            {"train loss": (x, [r["loss"] for r in steps])},
            "training loss",
            "step",
            "cross-entropy",
            size=(360, 480),
        ),
        line_plot(
            {"learning rate": (x, [r["lr"] for r in steps])},
            "learning rate",
            "step",
            "lr",
            size=(360, 480),
        ),
    ]
    if vals:
        panels.append(
            line_plot(
                {"val mIoU": ([r["epoch"] for r in vals], [100 * r["val_miou"] for r in vals])},
                "validation mIoU",
                "epoch",
                "mIoU %",
                size=(360, 480),
            )
        )
    return grid([panels])


_COLUMN_TITLES = {"miou": "mIoU", "pixel_accuracy": "pixel accuracy", "labelled": "labelled"}


def _column_title(key: str) -> str:
    """Display name of a per-clip column: ``tc_ssp`` -> ``TC ssp``, ``vc8`` -> ``VC8``."""
    if key in _COLUMN_TITLES:
        return _COLUMN_TITLES[key]
    if key.startswith("tc_"):
        return "TC " + key[3:]
    return key.upper() if key.startswith("vc") else key


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(image: np.ndarray, alt: str) -> str:
    data = base64.b64encode(encode_png(image)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img, video { max-width: 100%; display: block; margin: 1em 0; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def write_report(
    result: dict[str, Any],
    clips: Sequence[ClipResult],
    out: Path,
    *,
    palette: np.ndarray | None = None,
    run_dir: Path | None = None,
    video: Path | None = None,
) -> Path:
    """Write the plots (PNG) and ``report.html`` into ``out``; returns the page's path.

    ``result`` is :meth:`Evaluator.result`; ``clips`` the evaluator's clips (for TC over time);
    ``run_dir`` adds training curves; ``video`` embeds (or links, when large) an MP4.
    """
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str, np.ndarray]] = [
        ("per_class_iou.png", "Per-class IoU", per_class_plot(result, palette))
    ]
    for protocol in result.get("tc", {}):
        plot = tc_over_time_plot(clips, protocol)
        if plot is not None:
            figures.append((f"tc_{protocol}.png", f"TC over time ({protocol})", plot))
    if run_dir is not None and (curves := training_curves(run_dir)) is not None:
        figures.append(("training_curves.png", "Training", curves))
    for name, _, image in figures:
        write_png(out / name, image)

    settings = [
        (k, result[k])
        for k in ("run_dir", "predictions", "data", "split", "weights", "flow")
        if k in result
    ]
    headline = [("mIoU (" + result["average"] + ")", _pct(result["miou"]))]
    headline += [("WIoU", _pct(result["wiou"])), ("pixel accuracy", _pct(result["pixel_accuracy"]))]
    headline += [(f"TC {p}", _pct(v)) for p, v in result.get("tc", {}).items()]
    headline += [(f"labels' TC {p}", _pct(v)) for p, v in result.get("tc_labels", {}).items()]
    headline += [(f"mVC{k}", _pct(v)) for k, v in result.get("mvc", {}).items()]
    clip_rows = result.get("clips", [])
    columns = [k for k in clip_rows[0] if k != "clip"] if clip_rows else []
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>vidseg evaluation</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>vidseg evaluation</h1>",
        _table(["setting", "value"], settings),
        "<h2>Scores (%)</h2>",
        _table([h for h, _ in headline], [[v for _, v in headline]]),
        f"<p>{result['num_pixels']} labelled pixels. Metric protocols: docs/metrics.md.</p>",
        "<h2>Per-class IoU (%)</h2>",
        _table(["class", "IoU"], [[n, _pct(v)] for n, v in result["per_class_iou"].items()]),
    ]
    if clip_rows:
        parts += [
            "<h2>Clips</h2>",
            _table(
                ["clip", *(_column_title(k) for k in columns)],
                [
                    [r["clip"]]
                    + [r[k] if k in ("frames", "labelled") else _pct(r[k]) for k in columns]
                    for r in clip_rows
                ],
            ),
        ]
    for _, caption, image in figures:
        parts += [f"<h2>{html.escape(caption)}</h2>", _image(image, caption)]
    if video is not None and video.is_file():
        parts.append("<h2>Video</h2>")
        if video.stat().st_size <= MAX_EMBEDDED_VIDEO_BYTES:
            data = base64.b64encode(video.read_bytes()).decode("ascii")
            parts.append(f'<video controls muted src="data:video/mp4;base64,{data}"></video>')
        else:
            parts.append(
                f'<p><a href="{html.escape(video.name)}">{html.escape(video.name)}</a></p>'
            )
    parts.append("</body></html>")
    page = out / "report.html"
    with atomic_write(page, "w") as handle:
        handle.write("\n".join(parts) + "\n")
    return page
