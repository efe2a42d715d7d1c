"""A pixel's story on paper: the plots (matplotlib), an HTML report with them inline, a CSV table.

The same figures serve the report and the map tool's dock. matplotlib is imported when a plot
is drawn: without it the report still has its table and says why the plots are missing.
"""

from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path

import numpy as np

from .profile import PixelProfile, read_pixel_profile

THRESHOLD = 3.0


def change_profile(
    scores,
    x: float,
    y: float,
    *,
    point_crs: str | None = None,
    html_path=None,
    csv_path=None,
    storage_options: dict | None = None,
    credentials=None,
) -> PixelProfile:
    """Read the pixel under (x, y) and write its HTML report and CSV table (either may be None);
    storage_options and credentials as for read_pixel_profile."""
    profile = read_pixel_profile(
        scores,
        x,
        y,
        point_crs=point_crs,
        storage_options=storage_options,
        credentials=credentials,
    )
    if csv_path:
        write_profile_csv(profile, csv_path)
    if html_path:
        Path(html_path).write_text(profile_html(profile), encoding="utf-8")
    return profile


def table_columns(profile: PixelProfile) -> list[str]:
    columns = ["year", *profile.scores]
    if profile.distances is not None:
        columns += ["has_data", "loo_medoid_year", *(f"distance_to_{y}" for y in profile.years)]
    return columns


def table_rows(profile: PixelProfile) -> list[list]:
    """One row per year: its scores, and where the embeddings were read, whether it has data,
    its leave-one-out medoid year and its distance to every year."""
    rows = []
    for t, year in enumerate(profile.years):
        row = [year, *(_number(values[t]) for values in profile.scores.values())]
        if profile.distances is not None:
            medoid = profile.medoid_years[t]
            row += [bool(profile.has_data[t]), "" if medoid is None else medoid]
            row += [_number(d) for d in profile.distances[t]]
        rows.append(row)
    return rows


def _number(value) -> float | str:
    return "" if value is None or not math.isfinite(float(value)) else round(float(value), 6)


def write_profile_csv(profile: PixelProfile, path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(table_columns(profile))
        writer.writerows(table_rows(profile))


def is_zscore(label: str) -> bool:
    return "zscore" in label


def score_figure(profile: PixelProfile, current_year: int | None = None, threshold=THRESHOLD):
    """The score series: z-scores with the threshold line, raw distances on their own axes."""
    from matplotlib.figure import Figure

    groups = [
        (title, [b for b in profile.scores if is_zscore(b) == z])
        for title, z in (("Robust z-score", True), ("Score (distance)", False))
    ]
    groups = [(title, bands) for title, bands in groups if bands]
    figure = Figure(figsize=(6.4, 2.3 * len(groups) + 0.6), layout="constrained")
    axes = figure.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (title, bands) in zip(axes, groups, strict=True):
        for band in bands:
            ax.plot(profile.years, profile.scores[band], marker="o", label=_short(band))
        if title.startswith("Robust"):
            ax.axhline(threshold, color="#bd0026", linestyle="--", linewidth=1)
            ax.text(profile.years[0], threshold, f" {threshold:g}", color="#bd0026", va="bottom")
        if current_year is not None:
            ax.axvline(current_year, color="0.4", linewidth=4, alpha=0.25)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left")
    axes[-1].set_xticks(profile.years)
    axes[-1].tick_params(axis="x", labelrotation=45)
    figure.suptitle("Scores over the years", fontsize="medium")
    return figure


def distance_figure(profile: PixelProfile, current_year: int | None = None):
    """The year-by-year distance matrix as a heat map; a dot on each row's LOO medoid year."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2, 4.4), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(profile.distances), cmap="magma_r")
    figure.colorbar(image, ax=ax, label=f"{profile.metric or ''} distance".strip())
    labels = [str(y) for y in profile.years]
    ax.set_xticks(range(len(labels)), labels, rotation=45)
    ax.set_yticks(range(len(labels)), labels)
    medoids = [
        (profile.years.index(m), k) for k, m in enumerate(profile.medoid_years) if m is not None
    ]
    if medoids:
        cols, rows = zip(*medoids, strict=True)
        ax.scatter(cols, rows, s=28, c="#41b6c4", edgecolors="white", label="LOO medoid")
        ax.legend(fontsize="small", loc="upper right", bbox_to_anchor=(1.0, 1.12))
    if current_year in profile.years:
        k = profile.years.index(current_year)
        ax.axhline(k, color="0.3", linewidth=0.8)
        ax.axvline(k, color="0.3", linewidth=0.8)
    ax.set_title("Distances between years (row: year, dot: its medoid)", fontsize="medium")
    return figure


def profile_figures(profile: PixelProfile, current_year: int | None = None) -> list:
    figures = [score_figure(profile, current_year)]
    if profile.distances is not None:
        figures.append(distance_figure(profile, current_year))
    return figures


def figure_bytes(figure, fmt: str = "svg", dpi: int = 96) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi)
    return buffer.getvalue()


def profile_summary(profile: PixelProfile) -> list[tuple[str, str]]:
    """The facts above the plots, as (label, text)."""
    facts = [
        ("Pixel", f"row {profile.row}, column {profile.col} of the output"),
        ("Centre", f"{profile.x:.6f}, {profile.y:.6f} ({profile.crs or 'output CRS'})"),
    ]
    if profile.lon_lat and profile.crs != "EPSG:4326":
        facts.append(("Longitude, latitude", "{:.6f}, {:.6f}".format(*profile.lon_lat)))
    facts.append(("Scores", profile.scores_url))
    if profile.source:
        facts.append(("Embeddings", profile.source))
    zscores = [b for b in profile.scores if is_zscore(b)]
    if zscores:
        values = profile.scores[zscores[-1]]
        if np.isfinite(values).any():
            t = int(np.nanargmax(values))
            facts.append(
                ("Most unusual year", f"{profile.years[t]} ({_short(zscores[-1])} {values[t]:.2f})")
            )
    if profile.medoid_years:
        facts.append(
            (
                "Leave-one-out medoids",
                ", ".join(
                    f"{year} → {'–' if m is None else m}"
                    for year, m in zip(profile.years, profile.medoid_years, strict=True)
                ),
            )
        )
    if profile.note:
        facts.append(("Note", profile.note))
    return facts


def profile_html(profile: PixelProfile) -> str:
    """A self-contained HTML page: the facts, the plots as inline SVG, the table."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Change profile at {profile.x:.6f}, {profile.y:.6f}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "th{background:#eee}.high{background:#fdd}</style></head><body>",
        "<h1>Change profile</h1><dl>",
    ]
    for label, text in profile_summary(profile):
        parts.append(f"<dt><b>{html.escape(label)}</b></dt><dd>{html.escape(text)}</dd>")
    parts.append("</dl>")
    try:
        for figure in profile_figures(profile):
            svg = figure_bytes(figure, "svg").decode("utf-8")
            parts.append(f"<div class='plot'>{svg[svg.index('<svg') :]}</div>")
    except ImportError:
        parts.append("<p>matplotlib is not installed in this Python: no plots, only the table.</p>")
    columns = table_columns(profile)
    parts.append("<h2>Values</h2><table><tr>")
    parts += [f"<th>{html.escape(_short(c))}</th>" for c in columns]
    parts.append("</tr>")
    for row in table_rows(profile):
        cells = []
        for column, value in zip(columns, row, strict=True):
            high = is_zscore(column) and value != "" and float(value) >= THRESHOLD
            cls = " class='high'" if high else ""
            cells.append(f"<td{cls}>{html.escape(str(value))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></body></html>")
    return "".join(parts)


def _short(label: str) -> str:
    """loo_medoid_alpha_earth_cosine_distance_robust_time_zscore -> loo_medoid z-score."""
    for method in ("loo_medoid", "difference"):
        if label.startswith(method):
            return f"{method} z-score" if is_zscore(label) else method
    return label
