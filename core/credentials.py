"""Secrets in storage options: which keys hold them, what may be recorded, and masking.

Credentials come from the standard AWS variables or profile (s3fs reads them itself), or from
a QGIS authentication configuration (the plugin turns it into key/secret for this process
only). Typed storage options must not hold them: they would be saved with the project, the
model and the Processing history. Whatever holds a secret is masked before it is shown:
StorageOptions' repr, mask() on any message or log line, passwords in URLs.

Keys starting with `embedding_change:` are the plugin's notes about the options (e.g. which
authentication configuration gave the credentials): recorded, never passed to fsspec.
"""

from __future__ import annotations

import os
import re
import threading

from .errors import ParameterError

SECRET_KEYS = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "passwd",
        "access_key",
        "secret_key",
        "session_token",
        "security_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "client_secret",
        "account_key",
        "sas_token",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "x-amz-security-token",
    }
)
SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
NOTE_PREFIX = "embedding_change:"
AUTHCFG_NOTE = "embedding_change:authcfg"
MASK = "****"
# Option values that are not secrets even under a secret key (gcsfs's token="anon").
NOT_SECRET = frozenset({"anon", "cloud", "google_default", "browser", "cache", "true", "false"})
WHERE_SECRETS_GO = (
    "Put credentials in the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
    'AWS_SESSION_TOKEN) or an AWS profile (~/.aws/credentials; {"profile": "name"} may stay '
    "in the storage options), or in QGIS in an authentication configuration (Settings > "
    "Options > Authentication, Basic: username = access key id, password = secret key) "
    "chosen in the advanced parameter AUTHCFG."
)


def is_secret_key(name) -> bool:
    return str(name).lower() in SECRET_KEYS


def secret_keys(options, prefix: str = "") -> list[str]:
    """The (dotted) names of the secret keys in storage options, nested dicts included."""
    found = []
    for name, value in (options or {}).items():
        if is_secret_key(name) and not _harmless(value):
            found.append(f"{prefix}{name}")
        elif isinstance(value, dict):
            found += secret_keys(value, f"{prefix}{name}.")
    return found


def refuse_secrets(options) -> None:
    """Typed storage options must not hold credentials: say which keys and where they go."""
    found = secret_keys(options)
    if found:
        raise ParameterError(
            f"The storage options hold secrets ({', '.join(found)}): they would be saved with "
            f"the project, the model and the Processing history, and shown in the log. Remove "
            f"them. {WHERE_SECRETS_GO}"
        )


def public_options(options) -> dict:
    """The storage options without secrets or values JSON cannot hold: what an output may
    record of its source, so that readers reach it the same way (endpoint, region, anon)."""
    kept = {}
    for name, value in (options or {}).items():
        if is_secret_key(name) and not _harmless(value):
            continue
        if isinstance(value, dict):
            value = public_options(value)
            if not value:
                continue
        elif not isinstance(value, str | int | float | bool | type(None) | list):
            continue
        kept[str(name)] = value
    return kept


def fsspec_options(options) -> dict:
    """The options without the plugin's notes, as fsspec takes them."""
    return {k: v for k, v in (options or {}).items() if not str(k).startswith(NOTE_PREFIX)}


_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def remember_secrets(options) -> None:
    """Note the secret values of storage options, so that mask() hides them wherever they
    turn up (an error message that quotes a request, a repr in a traceback)."""
    values = list(_secret_values(options))
    if values:
        with _secrets_lock:
            _secrets.update(values)


def _secret_values(options):
    for name, value in (options or {}).items():
        if isinstance(value, dict):
            yield from _secret_values(value)
        elif is_secret_key(name) and not _harmless(value):
            password = getattr(value, "password", None)  # aiohttp.BasicAuth
            yield str(password) if password is not None else str(value)


def _harmless(value) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, dict):
        return True
    return str(value).strip().lower() in NOT_SECRET


_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*):[^/@\s]+@")


def mask(text) -> str:
    """The text with every known secret (and the password of any URL in it) as ****."""
    text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", str(text))
    with _secrets_lock:
        secrets = set(_secrets)
    secrets.update(v for v in (os.environ.get(n) for n in SECRET_VARIABLES) if v)
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def masked_log(log):
    """log(line), with the line masked; None gives a log that drops lines."""
    if log is None:
        return lambda line: None
    return lambda line: log(mask(line))


class StorageOptions(dict):
    """Storage options whose repr masks secrets; remembers them for mask()."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        remember_secrets(self)

    def __repr__(self) -> str:
        return repr(_masked_copy(self))

    __str__ = __repr__


def _masked_copy(options) -> dict:
    copy = {}
    for name, value in options.items():
        if isinstance(value, dict):
            copy[name] = _masked_copy(value)
        elif is_secret_key(name) and not _harmless(value):
            copy[name] = MASK
        else:
            copy[name] = value
    return copy
