"""What every algorithm of the provider shares, as QGIS's own QgisAlgorithm does for its tools,
and the parameters of those that read an embedding store: STORE, VARIABLE, EXTENT and the
advanced STORAGE_OPTIONS, AUTHCFG and MAX_PIXELS, declared, read and remembered here once.

STORAGE_OPTIONS refuses secrets (they would be saved with the project, the model and the
history, and Processing echoes its inputs to the log): credentials come from the AWS variables
or profile, or from a QGIS authentication configuration (AUTHCFG). Its secrets stay in QGIS's
encrypted authentication database: they are read for the run only, passed to the engine (which
masks them in any message) and never saved or logged; outputs record only the configuration's
id (core.credentials.AUTHCFG_NOTE), so that reading them later (the pixel profile) finds the
same credentials again. Methods: "Basic" (username = access key id, password = secret key;
for http(s):// stores the server's user and password) and, from QGIS 3.28, "AWSS3" (username,
password, region)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import qgis.core
from qgis.core import (
    QgsApplication,
    QgsAuthMethodConfig,
    QgsCoordinateReferenceSystem,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsSettings,
)
from qgis.PyQt.QtGui import QIcon

from ..core.credentials import AUTHCFG_NOTE, fsspec_options, refuse_secrets
from ..core.errors import ParameterError
from ..core.run_size import DEFAULT_MAX_PIXELS
from ..resources import ICON

AEF_STORE = "s3://us-west-2.opendata.source.coop/tge-labs/aef-mosaic/"
# The last store and variable used, by any algorithm that reads a store.
STORE_SETTINGS = "embedding_change/store"


@dataclass(frozen=True)
class StoreChoice:
    """The embedding store a run reads, as the analyst gave it."""

    url: str
    variable: str
    storage_options: dict | None


class EmbeddingChangeAlgorithm(QgsProcessingAlgorithm):
    """The provider's icon, a fresh instance per run, and background, cancel and batch support."""

    STORE = "STORE"
    VARIABLE = "VARIABLE"
    EXTENT = "EXTENT"
    STORAGE_OPTIONS = "STORAGE_OPTIONS"
    MAX_PIXELS = "MAX_PIXELS"
    AUTHCFG = "AUTHCFG"

    def createInstance(self):
        return type(self)()

    def icon(self):
        return QIcon(str(ICON))

    def flags(self):
        # Thread-safe: runs as the dialog's background task, can be cancelled, works in batch.
        return QgsProcessingAlgorithm.FlagSupportsBatch | QgsProcessingAlgorithm.FlagCanCancel

    def add_store_parameters(self) -> None:
        """STORE, VARIABLE and EXTENT, in that order.

        STORE is a folder parameter, so the dialog offers a folder browser for a local Zarr,
        but it takes any text: a URL (s3://, https://, gs://) is typed in the same field and
        passes through the dialog, batch, models and qgis_process as it is."""
        self.addParameter(
            QgsProcessingParameterFile(
                self.STORE,
                "Embedding store (Zarr folder or URL)",
                behavior=QgsProcessingParameterFile.Folder,
                defaultValue=AEF_STORE,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(self.VARIABLE, "Embedding variable", "embeddings")
        )
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent"))

    def store_access_parameters(self) -> list[QgsProcessingParameterDefinition]:
        """The advanced parameters saying how to reach the store (added by the caller, so each
        algorithm keeps its own order of advanced parameters)."""
        options = QgsProcessingParameterString(
            self.STORAGE_OPTIONS,
            "Storage options (JSON, no secrets: e.g. endpoint_url, anon, profile)",
            multiLine=True,
            optional=True,
        )
        return [options, authentication_parameter(self.AUTHCFG)]

    def checkParameterValues(self, parameters, context):
        """Refuse secrets in STORAGE_OPTIONS before the run starts (and before qgis_process
        and the dialog echo the inputs into the log)."""
        if self.STORAGE_OPTIONS in {p.name() for p in self.parameterDefinitions()}:
            try:
                self.read_storage_options(parameters, context)
            except QgsProcessingException as exc:
                return False, str(exc)
        return super().checkParameterValues(parameters, context)

    def read_storage_options(self, parameters, context) -> dict | None:
        """STORAGE_OPTIONS as a dict (None when empty); secrets are refused."""
        options = parse_storage_options(
            self.parameterAsString(parameters, self.STORAGE_OPTIONS, context)
        )
        try:
            refuse_secrets(options)
        except ParameterError as exc:
            raise QgsProcessingException(str(exc)) from exc
        return options

    def add_advanced_parameters(self, parameters) -> None:
        for parameter in parameters:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def max_pixels_parameter(self) -> QgsProcessingParameterNumber:
        """The size guard's limit (core.run_size); a double, so it can go past 2^31."""
        parameter = QgsProcessingParameterNumber(
            self.MAX_PIXELS,
            "Largest extent to read, in pixels (0: no limit)",
            QgsProcessingParameterNumber.Double,
            DEFAULT_MAX_PIXELS,
            optional=True,
            minValue=0,
        )
        parameter.setMetadata({"widget_wrapper": {"decimals": 0}})
        return parameter

    def read_max_pixels(self, parameters, context) -> int | None:
        """MAX_PIXELS as the engine takes it: None for no limit."""
        if parameters.get(self.MAX_PIXELS) in (None, ""):
            return DEFAULT_MAX_PIXELS
        value = self.parameterAsDouble(parameters, self.MAX_PIXELS, context)
        return int(value) if value > 0 else None

    def read_store_choice(self, parameters, context) -> StoreChoice:
        """STORE, VARIABLE, STORAGE_OPTIONS and AUTHCFG's credentials as the engine takes
        them; remembers the store and variable for the next dialog."""
        store = self.parameterAsString(parameters, self.STORE, context).strip()
        if not store:
            raise QgsProcessingException("Give the embedding store's path or URL (STORE).")
        variable = self.parameterAsString(parameters, self.VARIABLE, context).strip()
        options = self.read_storage_options(parameters, context)
        authcfg = self.parameterAsString(parameters, self.AUTHCFG, context).strip()
        options = with_credentials(options, authcfg, store)
        remember_store(parameters)
        return StoreChoice(store, variable or "embeddings", options)

    def store_bbox(self, parameters, context, store_crs: str | None):
        """The extent as (xmin, ymin, xmax, ymax) in the store's CRS, whatever CRS it came in."""
        if store_crs:
            crs = QgsCoordinateReferenceSystem(store_crs)
            if not crs.isValid():
                raise QgsProcessingException(
                    f"QGIS does not know the store's CRS {store_crs!r}; fix the store's proj:code."
                )
            extent = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        else:
            extent = self.parameterAsExtent(parameters, self.EXTENT, context)
        if extent.isNull() or extent.isEmpty():
            raise QgsProcessingException(
                f"The extent {extent.toString(6)} is empty (zero width or height; an empty "
                "project gives 0,0,0,0) or cannot be placed in the store's CRS: zoom the map to "
                "the area and use the canvas extent, draw it, or type it with its CRS, e.g. "
                "-105.3,-105.2,40.0,40.1 [EPSG:4326]."
            )
        return (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())

    @staticmethod
    def require_dependencies() -> None:
        """Stop with one clear message when the engine's packages are missing or too old."""
        from ..dependencies.check import dependency_report

        report = dependency_report(QgsApplication.qgisSettingsDirPath())
        if not report.ok:
            raise QgsProcessingException(report.message())

    @staticmethod
    def make_output_parent(output: str) -> None:
        """Create the folder a local output goes into, as QGIS's own tools do for a typed path.

        A folder that cannot be made is left to the engine, whose error says what to fix.
        """
        if "://" in output:
            return
        with contextlib.suppress(OSError):
            Path(output).absolute().parent.mkdir(parents=True, exist_ok=True)


def authentication_parameter(name: str) -> QgsProcessingParameterDefinition:
    """A QGIS authentication configuration chooser (QgsProcessingParameterAuthConfig, QGIS
    3.6+); a plain text field for its id where this QGIS lacks it."""
    chooser = getattr(qgis.core, "QgsProcessingParameterAuthConfig", None)
    description = "Authentication configuration (credentials for a private store)"
    if chooser is not None:
        return chooser(name, description, optional=True)
    return QgsProcessingParameterString(name, description + ", its id", optional=True)


REMEMBERED_STORE = (EmbeddingChangeAlgorithm.STORE, EmbeddingChangeAlgorithm.VARIABLE)


def remember_store(parameters: dict) -> None:
    """Keep the store and variable of this run for the next dialog."""
    remember(STORE_SETTINGS, REMEMBERED_STORE, parameters)


def remembered_store() -> dict:
    """The last run's store and variable, as dialog parameters (none before a first run)."""
    return remembered(STORE_SETTINGS, REMEMBERED_STORE)


def remember(group: str, names, parameters: dict) -> None:
    """Keep the plain values of `names` in QgsSettings under `group`, as JSON."""
    settings = QgsSettings()
    for name in names:
        try:
            text = json.dumps(parameters[name])
        except (KeyError, TypeError, ValueError):
            continue  # not given, or not a plain value (a model's expression)
        settings.setValue(f"{group}/{name}", text)


def remembered(group: str, names) -> dict:
    """What remember() kept under `group`."""
    settings = QgsSettings()
    values = {}
    for name in names:
        text = settings.value(f"{group}/{name}", None)
        if text is None:
            continue
        try:
            values[name] = json.loads(text)
        except (TypeError, ValueError):
            continue
    return values


def parse_storage_options(text: str | None) -> dict | None:
    """JSON object text -> dict for fsspec; empty -> None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QgsProcessingException(
            f'Storage options must be JSON, e.g. {{"anon": true}}; {exc.msg} at character '
            f"{exc.pos} of {text!r}."
        ) from exc
    if not isinstance(options, dict):
        raise QgsProcessingException(
            f'Storage options must be a JSON object such as {{"anon": true}}, not {text!r}.'
        )
    return options


# Credentials from a QGIS authentication configuration (AUTHCFG)

SUPPORTED_METHODS = ("Basic", "AWSS3")


def credentials_from_authcfg(authcfg: str, url: str) -> dict:
    """Storage options with the configuration's credentials for the store at `url`."""
    manager = QgsApplication.authManager()
    if manager is None or manager.isDisabled():
        raise QgsProcessingException(
            "QGIS's authentication system is not available (its database could not be "
            "opened), so the authentication configuration cannot be used. Give credentials "
            "through the AWS variables or profile instead."
        )
    config = QgsAuthMethodConfig()
    loaded = manager.loadAuthenticationConfig(authcfg, config, True)
    if isinstance(loaded, tuple):
        loaded, config = loaded
    if not loaded or not config.id():
        raise QgsProcessingException(
            f"No authentication configuration {authcfg!r} in this QGIS profile (or its master "
            "password was not given). Pick one in the AUTHCFG parameter, or create it in "
            "Settings > Options > Authentication."
        )
    method = config.method()
    if method not in SUPPORTED_METHODS:
        raise QgsProcessingException(
            f"The authentication configuration {config.name()!r} uses the method {method}; "
            f"embedding stores take {' or '.join(SUPPORTED_METHODS)} (username = access key "
            "id, password = secret key)."
        )
    user, password = config.config("username"), config.config("password")
    if url.startswith(("http://", "https://")):
        import aiohttp

        options = {"client_kwargs": {"auth": aiohttp.BasicAuth(user, password)}}
    else:
        options = {"key": user, "secret": password}
        region = config.config("region")
        if region:
            options["client_kwargs"] = {"region_name": region}
    options[AUTHCFG_NOTE] = authcfg
    return options


def with_credentials(options: dict | None, authcfg: str | None, url: str) -> dict | None:
    """`options` plus the configuration's credentials (a key given in both: the typed one)."""
    if not authcfg:
        return options
    credentials = credentials_from_authcfg(authcfg, url)
    merged = {**credentials, **(options or {})}
    client = {**credentials.get("client_kwargs", {}), **(options or {}).get("client_kwargs", {})}
    if client:
        merged["client_kwargs"] = client
    return merged


def reach_recorded_store(options: dict | None, url: str) -> dict | None:
    """The options an output recorded for its source, with the credentials of the
    authentication configuration it names (if any) added back, for this process only."""
    if not options or AUTHCFG_NOTE not in options:
        return options
    return with_credentials(fsspec_options(options), options[AUTHCFG_NOTE], url)
