from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from vidseg.config import config_keys, load_config, save_config
from vidseg.errors import ConfigError


@dataclass
class Inner:
    epochs: int = 3
    lr: float = 0.1
    size: list[int] | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"inner.epochs must be >= 1, got {self.epochs}")


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_file_and_overrides_merge_in_order(tmp_path):
    cfg_file = write(tmp_path / "a.yaml", "inner:\n  epochs: 7\n  lr: 0.5\n")
    cfg = load_config(Outer, cfg_file, ["inner.lr=0.25", "name=run"])
    assert isinstance(cfg, Outer)
    assert isinstance(cfg.inner, Inner)
    assert (cfg.name, cfg.inner.epochs, cfg.inner.lr) == ("run", 7, 0.25)
    assert load_config(Outer).inner.epochs == 3


def test_base_files_merge_before_the_file(tmp_path):
    write(tmp_path / "base.yaml", "name: base\ninner:\n  epochs: 9\n  lr: 0.3\n")
    write(tmp_path / "mid.yaml", "_base_: base.yaml\ninner:\n  lr: 0.2\n")
    top = write(tmp_path / "top.yaml", "_base_: [mid.yaml]\nname: top\n")
    cfg = load_config(Outer, top)
    assert (cfg.name, cfg.inner.epochs, cfg.inner.lr) == ("top", 9, 0.2)


def test_base_cycle_and_missing_base_are_clear(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="include each other"):
        load_config(Outer, tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist \(named in"):
        load_config(Outer, tmp_path / "c.yaml")


def test_unknown_keys_suggest_the_closest_valid_key(tmp_path):
    bad = write(tmp_path / "bad.yaml", "inner:\n  epohcs: 4\n")
    with pytest.raises(
        ConfigError,
        match=r"bad\.yaml: unknown key 'inner\.epohcs'; did you mean "
        r"'inner\.epochs'\?",
    ):
        load_config(Outer, bad)
    # A key in the wrong section is found by its name.
    with pytest.raises(ConfigError, match=r"unknown key 'epochs'; did you mean 'inner\.epochs'"):
        load_config(Outer, None, ["epochs=3"])
    with pytest.raises(ConfigError, match=r"override 'inner.lrr=1'.*did you mean 'inner\.lr'"):
        load_config(Outer, None, ["inner.lrr=1"])


def test_bad_values_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"inner\.epochs"):
        load_config(Outer, None, ["inner.epochs=many"])
    with pytest.raises(ConfigError, match=r"inner\.epochs must be >= 1, got 0"):
        load_config(Outer, None, ["inner.epochs=0"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(Outer, None, ["inner.epochs"])
    with pytest.raises(ConfigError, match="'inner' is a section"):
        load_config(Outer, None, ["inner=3"])
    with pytest.raises(ConfigError, match=r"missing\.yaml does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_null_and_list_overrides(tmp_path):
    cfg = load_config(Outer, None, ["inner.size=[64,96]"])
    assert cfg.inner.size == [64, 96]
    cfg = load_config(
        Outer, write(tmp_path / "s.yaml", "inner:\n  size: [1, 2]\n"), ["inner.size=null"]
    )
    assert cfg.inner.size is None


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(Outer, None, ["inner.size=[3,4]", "inner.lr=1e-5"])
    save_config(tmp_path / "config.yaml", cfg)
    assert load_config(Outer, tmp_path / "config.yaml") == cfg


def test_config_keys_lists_sections_and_leaves():
    assert config_keys(Outer) == ["name", "inner", "inner.epochs", "inner.lr", "inner.size"]
