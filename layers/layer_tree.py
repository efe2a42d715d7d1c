"""Where score layers sit in the project: a group per run (one score shown at a time), a group
per score (the default score first), the years in order; and the way back from a layer or group
to its store."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsLayerTree, QgsLayerTreeGroup, QgsProject, QgsRasterLayer

from .score_slice import PROPERTY, ScoreSlice, band_rank


def place_in_layer_tree(project: QgsProject, layer: QgsRasterLayer, score: ScoreSlice) -> None:
    """Group of the run > group per score (the default score first) > layers by year, on top."""
    root = project.layerTreeRoot()
    run_group = run_group_of(root, score)
    rank = band_rank(score.bands, score.band)
    band_group = _child_group(
        run_group,
        f"{PROPERTY}/band_index",
        score.band_index,
        score.title,
        _band_group_position(run_group, rank),
    )
    band_group.setCustomProperty(f"{PROPERTY}/rank", rank)
    position = sum(
        int(node.layer().customProperty(f"{PROPERTY}/year", 0)) < (score.year or 0)
        for node in band_group.findLayers()
        if node.layer() is not None
    )
    node = root.findLayer(layer.id())
    if node is None:
        node = band_group.insertLayer(position, layer)
    else:
        # Processing adds the layer at the desktop's insertion point (often the layer added just
        # before, inside this group): take it out and put it back at its year's place.
        # The copy goes in before the original leaves, or the project drops the layer.
        old_parent, clone = node.parent(), node.clone()
        if old_parent is band_group and band_group.children().index(node) <= position:
            position += 1
        band_group.insertChildNode(position, clone)
        old_parent.removeChildNode(node)
        node = clone
        if not old_parent.children() and old_parent not in (root, run_group, band_group):
            # Processing's "results group" setting left an empty group behind.
            old_parent.parent().removeChildNode(old_parent)
    node.setExpanded(False)  # a list of years; the legend is the same for all of them
    # Checked, even if it passed through the one-score-at-a-time group and got unchecked there.
    node.setItemVisibilityChecked(True)
    # The default score is the one on the map, whichever score's layers came in first.
    if rank < 0:
        band_group.setItemVisibilityChecked(True)
    elif any(_group_rank(g) < 0 for g in run_group.findGroups()):
        band_group.setItemVisibilityChecked(False)


def run_group_of(root, score: ScoreSlice) -> QgsLayerTreeGroup:
    """The run's group (made at the top if new); it shows one score at a time."""
    run_name = score.run_name or Path(score.store).name
    run_group = _child_group(root, f"{PROPERTY}/store", score.store, run_name, 0)
    # One score on the map at a time (they would cover each other); checking another group
    # switches to it.
    if not run_group.isMutuallyExclusive():
        run_group.setIsMutuallyExclusive(True)
    return run_group


def _child_group(parent: QgsLayerTreeGroup, key: str, value, name: str, position: int):
    for group in parent.findGroups():
        if group.customProperty(key) == value:
            return group
    group = parent.insertGroup(position, name)
    group.setCustomProperty(key, value)
    return group


def _group_rank(group: QgsLayerTreeGroup) -> int:
    return int(group.customProperty(f"{PROPERTY}/rank", 10**6))


def _band_group_position(run_group: QgsLayerTreeGroup, rank: int) -> int:
    """Before the first group of a later rank: counts the layers Processing may have put there."""
    children = run_group.children()
    later = (
        i
        for i, child in enumerate(children)
        if QgsLayerTree.isGroup(child) and _group_rank(child) > rank
    )
    return next(later, len(children))


def scores_store_of(value, project: QgsProject | None = None) -> str | None:
    """The scores store behind a loaded score layer or group (the object, its id or name).

    None when `value` is none of them (e.g. a folder path, which the caller uses as it is).
    """
    from qgis.core import QgsMapLayer

    key = f"{PROPERTY}/store"
    if isinstance(value, QgsMapLayer):
        return value.customProperty(key) or None
    if isinstance(value, QgsLayerTreeGroup):
        stores = [n.layer().customProperty(key) for n in value.findLayers() if n.layer()]
        return value.customProperty(key) or next((s for s in stores if s), None)
    if not isinstance(value, str) or not value.strip() or Path(value).exists():
        return None
    project = project or QgsProject.instance()
    layers = [project.mapLayer(value)] if project.mapLayer(value) else []
    layers += project.mapLayersByName(value)
    for layer in layers:
        if layer.customProperty(key):
            return layer.customProperty(key)
    for group in project.layerTreeRoot().findGroups(True):
        if group.name() == value:
            return scores_store_of(group)
    return None


def is_temporary_output(path: str | Path) -> bool:
    """True for an output in Processing's temporary folder (removed when QGIS exits)."""
    from qgis.core import QgsProcessingUtils

    temporary = Path(QgsProcessingUtils.tempFolder()).absolute()
    return Path(path).absolute().is_relative_to(temporary)


def temporary_run_name(bbox, when=None) -> str:
    """A temporary output's group name: its extent and the time of the run."""
    import datetime

    when = when or datetime.datetime.now()
    xmin, ymin, xmax, ymax = bbox
    return f"Change {xmin:.4f}, {ymin:.4f} – {xmax:.4f}, {ymax:.4f} at {when:%H:%M:%S}"
