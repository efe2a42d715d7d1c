"""core/credentials.py: secrets refused in typed options, never recorded, masked everywhere."""

from __future__ import annotations

import json

import pytest

from embedding_change.core import compute_change_scores
from embedding_change.core.credentials import (
    AUTHCFG_NOTE,
    MASK,
    StorageOptions,
    fsspec_options,
    mask,
    public_options,
    refuse_secrets,
    remember_secrets,
)
from embedding_change.core.errors import ParameterError, StoreError
from embedding_change.core.store import open_embedding_store, storage_options_for


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"key": "AKIAEXAMPLE", "secret": "s3cr3t-value"}, "key, secret"),
        ({"token": "a-session-token"}, "token"),
        ({"aws_secret_access_key": "s3cr3t-value"}, "aws_secret_access_key"),
        ({"password": "hunter22"}, "password"),
        ({"client_kwargs": {"aws_session_token": "tok-123456"}}, "client_kwargs.aws_session_token"),
        ({"Secret": "s3cr3t-value", "endpoint_url": "http://h:9000"}, "Secret"),
    ],
)
def test_typed_options_with_secrets_are_refused_saying_where_they_go(options, named):
    with pytest.raises(ParameterError) as raised:
        refuse_secrets(options)

    message = str(raised.value)
    assert f"The storage options hold secrets ({named})" in message
    for place in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "~/.aws/credentials", "AUTHCFG"):
        assert place in message
    for value in ("AKIAEXAMPLE", "s3cr3t-value", "hunter22", "tok-123456"):
        assert value not in message


@pytest.mark.parametrize(
    "options",
    [
        None,
        {},
        {"anon": True},
        {"endpoint_url": "http://127.0.0.1:9000", "client_kwargs": {"region_name": "eu-west-1"}},
        {"profile": "analyst"},
        {"token": "anon"},  # gcsfs's anonymous access
    ],
)
def test_options_without_secrets_pass(options):
    refuse_secrets(options)


def test_public_options_keep_how_to_reach_the_store_and_drop_the_secrets():
    options = {
        "endpoint_url": "http://127.0.0.1:9000",
        "anon": False,
        "key": "AKIAEXAMPLE",
        "secret": "s3cr3t-value",
        "client_kwargs": {"region_name": "eu-west-1", "aws_session_token": "tok-123456"},
        "config_kwargs": {"retries": {"total_max_attempts": 1}},
        "callback": object(),
        AUTHCFG_NOTE: "abc1234",
    }

    assert public_options(options) == {
        "endpoint_url": "http://127.0.0.1:9000",
        "anon": False,
        "client_kwargs": {"region_name": "eu-west-1"},
        "config_kwargs": {"retries": {"total_max_attempts": 1}},
        AUTHCFG_NOTE: "abc1234",
    }
    assert AUTHCFG_NOTE not in fsspec_options(options)
    assert AUTHCFG_NOTE not in storage_options_for("s3://bucket/a.zarr", options)


def test_storage_options_repr_masks_secrets_but_keep_them_for_fsspec():
    options = StorageOptions(
        {"key": "AKIAEXAMPLE2", "secret": "s3cr3t-two", "client_kwargs": {"token": "tok-two"}}
    )

    for text in (repr(options), str(options), f"{options}", repr([options])):
        assert "AKIAEXAMPLE2" not in text and "s3cr3t-two" not in text and "tok-two" not in text
        assert MASK in text
    assert dict(options)["secret"] == "s3cr3t-two"
    assert json.loads(json.dumps(options))["client_kwargs"]["token"] == "tok-two"


def test_mask_hides_every_secret_seen_the_aws_variables_and_url_passwords(monkeypatch):
    remember_secrets({"secret": "seen-secret-1", "anon": True})
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-2")

    text = mask(
        "failed: seen-secret-1 and env-secret-2 at https://analyst:url-secret-3@host/a.zarr, "
        "s3://bucket/a.zarr stays"
    )

    assert text == (
        f"failed: {MASK} and {MASK} at https://analyst:{MASK}@host/a.zarr, s3://bucket/a.zarr stays"
    )


def test_an_opened_stores_repr_shows_no_secret(s3_bucket, s3_storage_options):
    from embedding_change.core.synthetic import write_aef_like_store

    options = {**s3_storage_options, "secret": "repr-secret-4"}  # moto takes any secret
    url = f"{s3_bucket}/aef.zarr"
    write_aef_like_store(url, shape=(32, 32), seed=1, storage_options=options)

    source = open_embedding_store(url, storage_options=options)

    assert "repr-secret-4" not in repr(source)
    assert "repr-secret-4" not in repr(source.storage_options)


def test_engine_errors_and_log_lines_never_show_a_url_password(tmp_path):
    url = "https://analyst:url-secret-5@127.0.0.1:9/aef.zarr"  # nothing listens on port 9
    lines = []

    with pytest.raises(StoreError) as raised:
        compute_change_scores(url, tmp_path / "out.zarr", log=lines.append)

    assert "url-secret-5" not in str(raised.value)
    assert f"https://analyst:{MASK}@127.0.0.1:9/aef.zarr" in str(raised.value)
    assert not any("url-secret-5" in line for line in lines)


def test_an_engine_error_quoting_a_secret_masks_it(aef_store, tmp_path):
    remember_secrets({"password": "quoted-secret-6"})

    with pytest.raises(ParameterError) as raised:
        compute_change_scores(aef_store[0], tmp_path / "o.zarr", methods=["quoted-secret-6"])

    assert "quoted-secret-6" not in str(raised.value) and MASK in str(raised.value)
