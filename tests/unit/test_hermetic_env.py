"""The autouse ``hermetic_env`` fixture of tests/conftest.py really isolates a test."""

from __future__ import annotations

import os
from pathlib import Path

import boto3

EXPECTED_AWS_VARIABLES = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
}


def test_only_the_dummy_aws_settings_are_visible(hermetic_env: Path):
    assert {name for name in os.environ if name.startswith("AWS_")} == EXPECTED_AWS_VARIABLES
    assert not [name for name in os.environ if name.startswith("S3SYNC_")]
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        assert not Path(os.environ[name]).exists()


def test_home_is_a_fresh_empty_directory(hermetic_env: Path, tmp_path: Path):
    assert Path.home() == hermetic_env
    assert list(hermetic_env.iterdir()) == []
    assert Path(os.environ["XDG_CONFIG_HOME"]).is_relative_to(hermetic_env)
    # The home lives elsewhere so the test's own tmp_path starts empty.
    assert list(tmp_path.iterdir()) == []


def test_boto3_resolves_the_dummy_credentials_from_the_environment():
    session = boto3.session.Session()
    credentials = session.get_credentials()

    assert credentials is not None
    assert credentials.method == "env"
    assert credentials.access_key == "s3synctest"
    assert session.region_name == "us-east-1"
    assert session.available_profiles == []
