import pytest

from vidseg.data.classes import UAVID_SSP_CLASSES, colorize
from vidseg.data.info import DatasetInfo, read_dataset_info, write_dataset_info
from vidseg.errors import DataError


def test_round_trip_keeps_extra_keys(tmp_path):
    info = DatasetInfo("x", UAVID_SSP_CLASSES, 255, 20.0, {"source": {"v": 1}})
    write_dataset_info(tmp_path, info)
    assert read_dataset_info(tmp_path) == info


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a mapping"),
        ({"classes": [{"name": "a", "color": [0, 0, 0]}]}, "missing key 'name'"),
        ({"name": "x", "classes": []}, "'classes' must be a non-empty list"),
        ({"name": "x", "classes": [{"name": "a", "color": [0, 0, 300]}]}, r"classes\[0\]: 'color'"),
        ({"name": "x", "classes": [{"color": [0, 0, 0]}]}, r"classes\[0\]: expected a mapping"),
        (
            {"name": "x", "classes": [{"name": "a", "color": [1, 2, 3]}], "ignore_index": 0},
            "collides",
        ),
        ({"name": "x", "classes": [{"name": "a", "color": [1, 2, 3]}], "fps": -1}, "fps must be"),
    ],
)
def test_invalid_dataset_yaml_is_named(data, message):
    with pytest.raises(DataError, match=message):
        DatasetInfo.from_dict(data, "some/dataset.yaml")


def test_colorize_uses_the_palette_and_black_for_ignore():
    import numpy as np

    labels = np.array([[0, 7, 255]], np.uint8)
    rgb = colorize(labels, UAVID_SSP_CLASSES)
    assert rgb[0, 0].tolist() == list(UAVID_SSP_CLASSES[0].color)
    assert rgb[0, 1].tolist() == list(UAVID_SSP_CLASSES[7].color)
    assert rgb[0, 2].tolist() == [0, 0, 0]
