"""core/grid.py: reading a CRS through GDAL."""

import pytest

from embedding_change.core.grid import spatial_reference


@pytest.mark.parametrize("exceptions", [False, True])
def test_spatial_reference_reads_what_gdal_can_and_none_otherwise_in_either_exception_mode(
    exceptions,
):
    osr = pytest.importorskip("osgeo.osr")
    before = osr.GetUseExceptions()
    (osr.UseExceptions if exceptions else osr.DontUseExceptions)()
    try:
        assert "GEOGCRS" in spatial_reference("EPSG:4326").ExportToWkt(["FORMAT=WKT2_2019"])
        assert spatial_reference("EPSG:32613").GetAuthorityCode(None) == "32613"
        assert spatial_reference("not a CRS") is None
        assert osr.GetUseExceptions() == exceptions  # the caller's setting is left as it was
    finally:
        (osr.UseExceptions if before else osr.DontUseExceptions)()
