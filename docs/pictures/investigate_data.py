"""Data for the "investigate a change" pictures: a generated store, its scores, hotspots and
false colour, and where its first one-year event is (info.json).

    source scripts/setup.sh && python docs/pictures/investigate_data.py /tmp/investigate
"""

import json
import shutil
import sys
from pathlib import Path

from embedding_change.core import compute_change_scores
from embedding_change.core.false_colour import embedding_false_colour
from embedding_change.core.hotspots import change_hotspots
from embedding_change.core.synthetic import write_aef_like_store

out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/investigate")
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
truth = write_aef_like_store(out / "aef-like.zarr", shape=(512, 512), seed=7)
compute_change_scores(out / "aef-like.zarr", out / "scores.zarr", zarr_format=2).close()
hotspots = change_hotspots(out / "scores.zarr", out / "hotspots.gpkg", merge_years=True)
rgb = embedding_false_colour(out / "aef-like.zarr", out / "false-colour")
event = next(c for c in truth.changes if c.kind == "one_year")
a, _, c, _, e, f = truth.grid.transform
row, col = (event.rows[0] + event.rows[1]) // 2, (event.cols[0] + event.cols[1]) // 2
info = {
    "event_year": event.year,
    "x": c + a * (col + 0.5),
    "y": f + e * (row + 0.5),
    "bbox": list(truth.grid.bbox),
    "years": list(truth.years),
    "rgb_files": rgb.files,
    "features": hotspots.features,
}
(out / "info.json").write_text(json.dumps(info))
print(info)
