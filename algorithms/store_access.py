"""Credentials for a store from a QGIS authentication configuration (the AUTHCFG parameter).

The configuration's secrets stay in QGIS's encrypted authentication database: they are read
for this run only, passed to the engine (which masks them in any message) and never saved or
logged; outputs record only the configuration's id (core.credentials.AUTHCFG_NOTE), so that
reading them later (the pixel profile) finds the same credentials again.

Methods: "Basic" (username = access key id, password = secret key; for http(s):// stores, the
server's user and password) and, from QGIS 3.28, "AWSS3" (username, password, region).
"""

from __future__ import annotations

from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsProcessingException

from ..core.credentials import AUTHCFG_NOTE, fsspec_options

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
    """`options` plus the configuration's credentials (its own keys win); None stays None."""
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
