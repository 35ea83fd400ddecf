"""The one owner of TensorRT versions: parse, compare, print, the calibration-cache number."""

from __future__ import annotations

import pytest

from edgeseg.errors import ArtifactError, ConfigError
from edgeseg.trt_version import TrtVersion


def test_parse_compare_and_print() -> None:
    assert TrtVersion.parse("10.3.0.30") == TrtVersion(10, 3, 0)
    assert TrtVersion.parse("8.6.1") == TrtVersion(8, 6, 1)
    assert TrtVersion.parse("11") == TrtVersion(11, 0, 0)
    assert TrtVersion.parse("10.0.0b6") == TrtVersion(10, 0, 0)  # early-access suffix
    assert TrtVersion.parse(TrtVersion(10, 7)) == TrtVersion(10, 7, 0)
    assert str(TrtVersion.parse("10.13.0.35")) == "10.13.0"
    assert TrtVersion(10, 7) < TrtVersion(10, 8) < TrtVersion(10, 13) < TrtVersion(11)
    assert TrtVersion(8, 6, 1) < TrtVersion(10, 0, 0)


def test_unreadable_version_raises_the_asked_error() -> None:
    with pytest.raises(ConfigError, match="cannot read the TensorRT version"):
        TrtVersion.parse("latest")
    with pytest.raises(ArtifactError, match="cannot read the TensorRT version"):
        TrtVersion.parse("", error=ArtifactError)


# NV_TENSORRT_VERSION: major*1000 + minor*100 + patch up to 8.x, major*10000 + minor*100 + patch from 10.
@pytest.mark.parametrize(("version", "number"), [("8.5.2", 8502), ("8.6.1", 8601), ("8.6.1.6", 8601),
                                                 ("10.3.0", 100300), ("10.3.0.30", 100300), ("10.7", 100700),
                                                 ("10.13.0", 101300)])
def test_cache_number(version: str, number: int) -> None:
    assert TrtVersion.parse(version).cache_number == number


@pytest.mark.parametrize("version", ["11.0.0", "7.2.3", "9.2.0", "8.10.0", "8.6.100", "10.3.100"])
def test_no_cache_number_where_tensorrt_has_no_cache_of_ours(version: str) -> None:
    with pytest.raises(ConfigError):
        _ = TrtVersion.parse(version).cache_number
