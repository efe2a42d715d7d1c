"""How a score looks: a colour ramp per score that leaves ordinary values transparent, so that
high scores jump out, and a legend that names the threshold and the unit."""

from __future__ import annotations

import math

from qgis.core import (
    QgsColorRampLegendNodeSettings,
    QgsColorRampShader,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt.QtGui import QColor

from .score_slice import THRESHOLD_FRACTION, ScoreSlice, score_method

# Colour stops as fractions of the score called "high"; up to THRESHOLD_FRACTION a score is
# transparent. Each score has its own ColorBrewer ramp, so the map says which score it shows:
# loo_medoid YlOrRd, difference BuPu, anything else YlGnBu.
RAMPS = {
    "loo_medoid": ((255, 255, 178), (254, 204, 92), (253, 141, 60), (189, 0, 38)),
    "difference": ((237, 248, 251), (158, 188, 218), (140, 107, 177), (110, 1, 107)),
    "other": ((255, 255, 204), (161, 218, 180), (65, 182, 196), (37, 52, 148)),
}
RAMP_FRACTIONS = ((THRESHOLD_FRACTION, 0), (0.5, 150), (0.75, 220), (1.0, 255))  # (stop, alpha)
# A robust z-score of 8 is far out in any series. With the stops above, z <= 3 stays
# transparent (on 9 years of noise, a few percent of pixels pass 3), 4 is yellow, 6 orange and
# 8 or more dark red.
ZSCORE_HIGH = 8.0
# Plain distances have no fixed scale: "high" is their 99th percentile over all years.
DISTANCE_HIGH_QUANTILE = 0.99


def score_high(band: str, layers: list[QgsRasterLayer]) -> float:
    """The score shown dark red: fixed for z-scores, else the 99th percentile over the years."""
    if "zscore" in band:
        return ZSCORE_HIGH
    highs = []
    for layer in layers:
        provider = layer.dataProvider()
        for number in range(1, layer.bandCount() + 1):
            _, upper = provider.cumulativeCut(number, 0.0, DISTANCE_HIGH_QUANTILE, layer.extent())
            if math.isfinite(upper) and upper > 0:
                highs.append(upper)
    return max(highs, default=1.0)


def ramp_items(score: ScoreSlice) -> list[QgsColorRampShader.ColorRampItem]:
    """The score's ramp stops, labelled for the legend: threshold, unit, the dark end."""
    colours = RAMPS[score_method(score.band)]
    items = []
    for (fraction, alpha), rgb in zip(RAMP_FRACTIONS, colours, strict=True):
        value = fraction * score.high
        if fraction == THRESHOLD_FRACTION:
            label = f"≤ {value:.3g}: transparent (ordinary)"
        elif fraction == 1.0:
            label = f"≥ {value:.3g} {score.unit}"
        else:
            label = f"{value:.3g}"
        items.append(QgsColorRampShader.ColorRampItem(value, QColor(*rgb, alpha), label))
    return items


def set_score_renderer(layer: QgsRasterLayer, score: ScoreSlice) -> None:
    """The score's colour ramp on band 1, transparent up to the threshold."""
    ramp = QgsColorRampShader(0.0, score.high)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    # Not clipped: values under the first stop take its transparent colour, values over the
    # last one stay at the darkest colour.
    ramp.setClip(False)
    ramp.setColorRampItemList(ramp_items(score))
    # The legend lists the stops with their labels (the unit, the transparent threshold)
    # instead of a bare gradient from 0 to "high".
    legend = QgsColorRampLegendNodeSettings()
    legend.setUseContinuousLegend(False)
    ramp.setLegendSettings(legend)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(score.threshold)
    renderer.setClassificationMax(score.high)
    layer.setRenderer(renderer)
