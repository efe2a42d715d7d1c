"""core/synthetic.py: generated stores look like the AEF mosaic and hold what they plant."""

import numpy as np
import zarr

from embedding_change.core.synthetic import AEF_GSD, write_aef_like_store


def dequantise(q):
    v = q.astype(np.float64)
    return np.sign(v) * (v / 127.5) ** 2


def test_store_has_the_mosaic_layout_and_attributes(tmp_path):
    write_aef_like_store(tmp_path / "aef.zarr", shape=(300, 260), years=range(2017, 2026))
    group = zarr.open_group(tmp_path / "aef.zarr", mode="r")
    array = group["embeddings"]
    assert array.dtype == np.int8
    assert array.shape == (9, 64, 300, 260)
    assert array.chunks == (1, 64, 256, 256)
    assert array.metadata.dimension_names == ("time", "band", "y", "x")
    attrs = group.attrs
    assert attrs["geoemb:quantization"]["method"] == "signed_square"
    assert attrs["proj:code"] == "EPSG:4326"
    assert attrs["spatial:transform"][0] == AEF_GSD == -attrs["spatial:transform"][4]
    names = {c["name"] for c in attrs["zarr_conventions"]}
    assert {"spatial", "proj"} <= names
    assert list(group["time"][:]) == list(range(2017, 2026))


def test_vectors_are_unit_length_and_no_data_holes_are_marked(tmp_path):
    truth = write_aef_like_store(tmp_path / "aef.zarr", shape=(128, 128), seed=4)
    values = zarr.open_group(tmp_path / "aef.zarr", mode="r")["embeddings"][...]
    holes = np.zeros(values.shape[:1] + values.shape[2:], bool)
    for change in truth.changes:
        if change.kind == "no_data":
            t = truth.years.index(change.year)
            holes[t, slice(*change.rows), slice(*change.cols)] = True
    assert holes.any()
    np.testing.assert_array_equal((values == -128).all(axis=1), holes)
    assert not (values == -128).any(axis=1)[~holes].any()
    norms = np.linalg.norm(dequantise(values), axis=1)[~holes]
    np.testing.assert_allclose(norms, 1.0, atol=0.05)


def test_one_year_event_changes_only_its_year(tmp_path):
    truth = write_aef_like_store(tmp_path / "aef.zarr", shape=(256, 256), seed=9)
    values = dequantise(zarr.open_group(tmp_path / "aef.zarr", mode="r")["embeddings"][...])
    event = next(c for c in truth.events if c.kind == "one_year")
    r, c = (event.rows[0] + event.rows[1]) // 2, (event.cols[0] + event.cols[1]) // 2
    others = [
        o
        for o in truth.changes
        if o is not event and o.rows[0] <= r < o.rows[1] and o.cols[0] <= c < o.cols[1]
    ]
    assert not others, "pick a seed whose first event is not overlapped"
    series = values[:, :, r, c]
    k = truth.years.index(event.year)
    rest = np.delete(series, k, axis=0)
    cosine_to_rest = rest @ series[k]
    cosine_within_rest = (rest @ rest.T)[~np.eye(len(rest), dtype=bool)]
    assert cosine_to_rest.max() < cosine_within_rest.min()
