"""Settings errors say what is wrong with the values given (issue 10 item 11)."""

from __future__ import annotations

import pytest

from s3sync.config import check_endpoint_url, resolve
from s3sync.errors import ConfigError, UsageError


def test_part_size_below_chunk_size_names_both_sizes() -> None:
    with pytest.raises(UsageError) as caught:
        resolve({}, {}, {"part_size": "1MiB", "chunk_size": "4MiB"})
    assert "1.0 MiB" in str(caught.value) and "4.0 MiB" in str(caught.value)
    assert "--part-size at least 4.0 MiB" in caught.value.hint and "--help" not in caught.value.hint


@pytest.mark.parametrize("size", ["6TiB", "99999999999999999999TiB"])
def test_part_size_above_the_largest_s3_object_is_a_usage_error(size: str) -> None:
    with pytest.raises(UsageError) as caught:
        resolve({}, {}, {"part_size": size})
    assert "larger than S3's largest object" in str(caught.value) and "5.0 TiB" in str(caught.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000", "http://127.0.0.1:9000/", "https://s3.example.com"])
def test_endpoint_root_urls_are_accepted(url: str) -> None:
    check_endpoint_url(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/bucket", "https://h/s3/", "http://h:9000/b/prefix"])
def test_endpoint_with_a_path_is_refused_with_the_root_url(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        resolve({}, {}, {"endpoint_url": url})
    assert "has a path" in str(caught.value)
    assert url.split("/")[2] in caught.value.hint and "s3://BUCKET/PREFIX" in caught.value.hint


@pytest.mark.parametrize("url", ["127.0.0.1:9000", "ftp://h", "http://"])
def test_endpoint_without_a_scheme_is_refused(url: str) -> None:
    with pytest.raises(UsageError, match="must start with http:// or https://"):
        check_endpoint_url(url)


def test_bad_catalog_name_states_the_rule() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve({"catalog": {"-x": {"url": "s3://b/x"}}}, {}, {}, "cfg.toml")
    assert "letters, digits" in caught.value.hint


@pytest.mark.parametrize("key", ["bucket", "endpoint_url", "profile", "region"])
def test_string_fields_of_the_config_file_must_be_strings(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve({key: 5}, {}, {}, "c.toml")
    assert str(caught.value) == f"c.toml: {key} must be a string, not 5"


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path, capsys) -> None:
    from s3sync import cli

    path = tmp_path / "c.toml"
    path.write_bytes(b"bucket = \"\xff\"\n")
    args = cli.build_parser().parse_args(["ls"])
    with pytest.raises(ConfigError) as caught:
        cli.load_settings(args, {"S3SYNC_CONFIG": str(path)})
    assert "not UTF-8: byte 0xff at offset 10" in str(caught.value)


@pytest.mark.parametrize("bucket", ["a/b", "Bad_Bucket", "x"])
def test_invalid_bucket_from_the_environment_is_a_usage_error(bucket: str) -> None:
    from s3sync import catalog

    settings = resolve({}, {"S3SYNC_BUCKET": bucket}, {})
    with pytest.raises(UsageError) as caught:
        catalog.location_for_name("sbu", settings)
    assert f"bucket {bucket!r} (S3SYNC_BUCKET" in str(caught.value)
