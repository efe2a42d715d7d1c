"""What a score layer shows: which store, score and year, and the score's name in the analyst's
words. Kept on the layers as custom properties under PROPERTY."""

from __future__ import annotations

from dataclasses import dataclass

PROPERTY = "embedding_change"  # prefix of the custom properties on our layers and groups
# Up to 3/8 of the score called "high" a score is ordinary: fully transparent (layers/styles.py).
THRESHOLD_FRACTION = 0.375
# What the analyst calls each score (group names) and the score shown first: loo_medoid marks a
# one-year event in its year only, difference in the event year and the year after.
METHOD_TITLES = {"loo_medoid": "LOO medoid", "difference": "Year-to-year difference"}
METRIC_TITLES = {"alpha_earth_cosine": "", "cosine": "raw cosine", "euclidean": "euclidean"}


@dataclass(frozen=True)
class ScoreSlice:
    """Where a layer sits: which store, score band and year (kept on the layer as properties)."""

    store: str
    bands: tuple[str, ...]
    band: str
    years: tuple[int, ...]
    year: int | None  # None: the layer holds every year, band i + 1 is years[i]
    high: float
    run_name: str = ""  # the run's group: the output's name, or extent and time when temporary
    focus_year: int | None = None  # the year with the most change: the first frame shown

    @property
    def band_index(self) -> int:
        return self.bands.index(self.band)

    @property
    def threshold(self) -> float:
        """Scores up to this are ordinary: transparent on the map."""
        return THRESHOLD_FRACTION * self.high

    @property
    def title(self) -> str:
        return score_title(self.band)

    @property
    def unit(self) -> str:
        return score_unit(self.band)


def score_method(band: str) -> str:
    return next((m for m in METHOD_TITLES if band.startswith(m)), "other")


def score_title(band: str) -> str:
    """ "loo_medoid_alpha_earth_cosine_distance_robust_time_zscore" -> "LOO medoid z-score"."""
    method = score_method(band)
    if method == "other":
        return band
    metric = next((m for m in sorted(METRIC_TITLES, key=len, reverse=True) if f"_{m}_" in band), "")
    parts = [METHOD_TITLES[method], METRIC_TITLES.get(metric, metric)]
    parts.append("z-score" if "zscore" in band else "distance")
    return " ".join(part for part in parts if part)


def score_unit(band: str) -> str:
    if "zscore" in band:
        return "robust z-score"
    metric = next((m for m in METRIC_TITLES if f"_{m}_" in band), "")
    return "cosine distance" if "cosine" in metric else "distance"


def default_band(bands) -> str:
    """The score shown first: loo_medoid's z-score, else loo_medoid, else the first."""
    return min(bands, key=lambda band: (score_method(band) != "loo_medoid", "zscore" not in band))


def band_rank(bands, band: str) -> int:
    """Place of a score's group in the run's group: the default score first, then store order."""
    first = default_band(bands)
    return -1 if band == first else list(bands).index(band)
