"""JSON round trip of configuration dataclasses (samtune.config_io): what is refused, and how it is named."""

from __future__ import annotations

import copy
import enum
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest

from samtune.config_io import check_value, config_from_dict, config_to_dict, merge_overrides
from samtune.enums import StrEnum
from samtune.errors import ConfigurationError


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


@dataclass
class Inner:
    rank: int = 4
    alpha: float = 1.0
    names: list[str] = field(default_factory=lambda: ["q", "v"])


@dataclass
class Deepest:
    depth: int = 3


@dataclass
class Middle:
    deepest: Deepest = field(default_factory=Deepest)
    label: str = "m"


@dataclass
class Outer:
    threshold: float = 0.5
    count: int = 1
    enabled: bool = False
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    optional: Inner | None = None
    middle: Middle = field(default_factory=Middle)
    window: float | None = None
    axis: str | int = "auto"
    pair: tuple[int, int] = (0, 1)
    points: list[list[float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    colour: Colour = Colour.RED
    level: Level = Level.LOW

    def __post_init__(self) -> None:
        self.colour = Colour.parse(self.colour)
        if isinstance(self.level, int):
            self.level = Level(self.level)
        self.pair = (int(self.pair[0]), int(self.pair[1]))
        if self.count > 100:
            raise ConfigurationError(f"count must be at most 100, got {self.count}.")


@dataclass
class NeedsName:
    name: str


def _error(data: dict[str, Any], cls: type = Outer, **kwargs: Any) -> str:
    with pytest.raises(ConfigurationError) as info:
        config_from_dict(cls, data, **kwargs)
    return str(info.value)


# --- config_from_dict: keys --------------------------------------------------------------------------


def test_an_unknown_key_is_named_with_the_nearest_valid_one_and_the_valid_keys() -> None:
    message = _error({"threshhold": 0.4})
    assert "Unknown configuration key 'threshhold'." in message
    assert "Did you mean 'threshold'?" in message
    assert "Valid keys: axis, colour, count, enabled, extra, inner, level, middle, name, optional," in message


def test_an_unknown_key_without_a_near_name_gets_no_suggestion() -> None:
    message = _error({"zzzzzz": 1})
    assert "Unknown configuration key 'zzzzzz'." in message and "Did you mean" not in message


def test_an_unknown_nested_key_is_named_by_its_path() -> None:
    assert "Unknown configuration key 'inner.rnak'. Did you mean 'rank'?" in _error({"inner": {"rnak": 8}})
    assert "'middle.deepest.dept'. Did you mean 'depth'?" in _error({"middle": {"deepest": {"dept": 1}}})
    assert "'predict.inner.rnak'" in _error({"inner": {"rnak": 8}}, where="predict")


def test_in_a_file_the_key_is_named_alone_and_then_the_file() -> None:
    assert "Unknown configuration key 'coutn'" in _error({"coutn": 1}, where="/jobs/job.json")
    message = _error({"count": "many"}, where="/jobs/job.json")
    assert message.startswith("'count' must be a whole number, got 'many' (text).")
    assert "(in '/jobs/job.json')" in message


def test_a_missing_required_field_is_a_configuration_error() -> None:
    message = _error({}, cls=NeedsName)
    assert "Invalid configuration for NeedsName" in message and "name" in message


def test_data_that_is_not_an_object_is_refused() -> None:
    assert "Expected a JSON object for Outer, got list" in _error([1, 2])  # type: ignore[arg-type]
    assert "Expected a JSON object for settings, got str" in _error("x", where="settings")  # type: ignore[arg-type]


def test_the_dataclass_own_checks_still_apply() -> None:
    assert "count must be at most 100" in _error({"count": 101})


# --- config_from_dict: nested objects ----------------------------------------------------------------


def test_nested_objects_become_their_dataclasses_and_absent_fields_keep_defaults() -> None:
    config = config_from_dict(Outer, {"inner": {"rank": 8}, "middle": {"deepest": {"depth": 5}}})
    assert isinstance(config.inner, Inner) and config.inner == Inner(rank=8)
    assert isinstance(config.middle.deepest, Deepest) and config.middle == Middle(Deepest(5), "m")
    assert config.optional is None and config.threshold == 0.5


def test_an_optional_nested_object_is_built_from_an_object_and_stays_none_for_null() -> None:
    config = config_from_dict(Outer, {"optional": {"alpha": 2}})
    assert isinstance(config.optional, Inner) and config.optional == Inner(alpha=2)
    assert config_from_dict(Outer, {"optional": None}).optional is None


def test_a_nested_dataclass_instance_is_taken_as_it_is() -> None:
    inner = Inner(rank=2)
    assert config_from_dict(Outer, {"inner": inner}).inner is inner


@pytest.mark.parametrize("value", [5, "rank", [1], True])
def test_a_nested_object_of_the_wrong_type_is_refused(value: Any) -> None:
    assert _error({"inner": value}).startswith("'inner' must be a JSON object, got ")
    assert _error({"optional": value}).startswith("'optional' must be a JSON object, got ")  # `Inner | None` too


# --- config_from_dict / check_value: types ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"count": "4"}, "'count' must be a whole number, got '4' (text)."),
        ({"count": 2.5}, "'count' must be a whole number, got 2.5 (float)."),
        ({"threshold": "high"}, "'threshold' must be a number, got 'high' (text)."),
        ({"name": 5}, "'name' must be a text, got 5 (int)."),
        ({"enabled": 1}, "'enabled' must be true or false, got 1 (int)."),
        ({"enabled": "yes"}, "'enabled' must be true or false, got 'yes' (text)."),
        ({"inner": {"rank": "4"}}, "'inner.rank' must be a whole number, got '4' (text)."),
        ({"inner": {"names": ["q", 3]}}, "'inner.names[1]' must be a text, got 3 (int)."),
        ({"middle": {"deepest": {"depth": [3]}}}, "'middle.deepest.depth' must be a whole number, got [3] (list)."),
        ({"optional": {"alpha": "a"}}, "'optional.alpha' must be a number, got 'a' (text)."),
        ({"window": "wide"}, "'window' must be a number, got 'wide' (text)."),
        ({"axis": 1.5}, "'axis' must be a text or a whole number, got 1.5 (float)."),
        ({"pair": [1]}, "'pair' must be a list of 2 values, got [1] (list)."),
        ({"pair": [1, "2"]}, "'pair[1]' must be a whole number, got '2' (text)."),
        ({"pair": 1}, "'pair' must be a list, got 1 (int)."),
        ({"points": [[1, 2, 3], [4, "5", 6]]}, "'points[1][1]' must be a number, got '5' (text)."),
        ({"extra": [1]}, "'extra' must be a JSON object, got [1] (list)."),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_a_value_of_the_wrong_type_is_refused_naming_its_key_path(data: dict[str, Any], expected: str) -> None:
    assert _error(data) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(value: float) -> None:
    assert _error({"threshold": value}) == f"'threshold' must be a finite number, got {value!r}."
    assert _error({"inner": {"alpha": value}}) == f"'inner.alpha' must be a finite number, got {value!r}."
    assert "'window' must be a finite number" in _error({"window": value})  # also through `float | None`
    assert "'points[0][0]' must be a finite number" in _error({"points": [[value, 1, 2]]})


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_taken_for_a_number(value: bool) -> None:
    assert _error({"threshold": value}) == f"'threshold' must be a number, got {value!r} (bool)."
    assert _error({"count": value}) == f"'count' must be a whole number, got {value!r} (bool)."
    assert "'axis' must be a text or a whole number" in _error({"axis": value})


def test_well_typed_values_are_accepted_and_whole_numbers_pass_for_floats() -> None:
    config = config_from_dict(
        Outer,
        {"threshold": 1, "count": 3, "enabled": True, "name": "n", "window": None, "axis": 2, "pair": [4, 5],
         "points": [[1, 2.5, 3]], "extra": {"any": [1, "thing"]}, "colour": "blue", "level": 2},
    )  # fmt: skip
    assert config.threshold == 1 and config.count == 3 and config.enabled is True and config.axis == 2
    assert config.pair == (4, 5) and config.points == [[1, 2.5, 3]] and config.extra == {"any": [1, "thing"]}
    assert config.colour is Colour.BLUE and config.level is Level.HIGH
    check_value(None, Optional[float], "x")
    check_value((1, 2), tuple[int, int], "x")  # a tuple is a list for JSON purposes
    check_value(object(), Any, "x")  # hints it does not know pass


# --- config_to_dict ----------------------------------------------------------------------------------


def test_config_to_dict_writes_tuples_as_lists_and_enums_as_their_values() -> None:
    config = Outer(pair=(2, 3), colour=Colour.BLUE, level=Level.HIGH, optional=Inner(rank=2),
                   extra={"t": (1, 2), "c": Colour.RED})  # fmt: skip
    data = config_to_dict(config)
    assert data["pair"] == [2, 3] and type(data["pair"]) is list
    assert data["colour"] == "blue" and type(data["colour"]) is str
    assert data["level"] == 2 and type(data["level"]) is int
    assert data["extra"] == {"t": [1, 2], "c": "red"} and type(data["extra"]["c"]) is str
    assert data["optional"] == {"rank": 2, "alpha": 1.0, "names": ["q", "v"]}
    assert data["middle"] == {"deepest": {"depth": 3}, "label": "m"}
    assert json.loads(json.dumps(data)) == data  # plain JSON types all the way down


def test_a_dataclass_round_trips_through_json() -> None:
    config = Outer(threshold=0.25, count=7, enabled=True, inner=Inner(rank=16, names=["k"]), optional=Inner(),
                   window=2.5, axis="k", pair=(3, 9), points=[[1.0, 2.0, 3.0]], colour=Colour.BLUE,
                   level=Level.HIGH)  # fmt: skip
    assert config_from_dict(Outer, json.loads(json.dumps(config_to_dict(config)))) == config


# --- merge_overrides ---------------------------------------------------------------------------------


def test_merge_overrides_merges_nested_objects_and_replaces_other_values() -> None:
    base = {"epochs": 20, "finetune": {"method": "lora", "lora": {"rank": 4, "alpha": 4.0}}, "zoom": [0.8, 1.2]}
    overrides = {"epochs": 5, "finetune": {"lora": {"rank": 8}}, "zoom": [1.0], "device": "cpu"}
    assert merge_overrides(base, overrides) == {
        "epochs": 5,
        "finetune": {"method": "lora", "lora": {"rank": 8, "alpha": 4.0}},
        "zoom": [1.0],  # lists are replaced, not merged
        "device": "cpu",
    }


def test_merge_overrides_lets_a_value_replace_an_object_and_an_object_replace_a_value() -> None:
    assert merge_overrides({"a": {"b": 1}, "c": 2}, {"a": None, "c": {"d": 3}}) == {"a": None, "c": {"d": 3}}
    assert merge_overrides({"a": {"b": 1}}, {"a": {}}) == {"a": {"b": 1}}
    assert merge_overrides({}, {}) == {}


def test_merge_overrides_changes_neither_input() -> None:
    base = {"epochs": 20, "finetune": {"method": "lora", "lora": {"rank": 4}}, "list": [1, 2]}
    overrides = {"finetune": {"lora": {"rank": 8}, "scope": "decoder"}, "list": [3]}
    base_before, overrides_before = copy.deepcopy(base), copy.deepcopy(overrides)
    merged = merge_overrides(base, overrides)
    assert base == base_before and overrides == overrides_before
    assert merged["finetune"] is not base["finetune"] and merged["finetune"]["lora"] is not base["finetune"]["lora"]
    untouched = merge_overrides({"a": {"b": [1]}}, {"c": 1})
    assert untouched["a"] == {"b": [1]}
    source = {"a": {"b": [1]}}
    merge_overrides(source, {"c": 1})["a"]["b"].append(2)  # changing the result later leaves the input alone
    assert source == {"a": {"b": [1]}}


# --- the real configurations ---------------------------------------------------------------------------


def test_a_prediction_configuration_round_trips_through_json() -> None:
    from samtune.data.intensity import IntensityConfig
    from samtune.data.slicing import SliceConfig
    from samtune.models.registry import Runtime
    from samtune.predict.config import PredictConfig

    config = PredictConfig(
        threshold=0.3, batch_size=2, slice_range=(2, 9), label_value=7, runtime=Runtime.TORCH, slice_search=3,
        largest_component=True,
        slices=SliceConfig(axis="j", two_and_half_d=True,
                           intensity=IntensityConfig(mode="window", window_low=-100.0, window_high=200.0)),
    )  # fmt: skip
    data = json.loads(json.dumps(config_to_dict(config)))
    assert (
        data["slice_range"] == [2, 9] and data["runtime"] == "torch" and data["slices"]["intensity"]["mode"] == "window"
    )
    again = config_from_dict(PredictConfig, data)
    assert again == config
    assert again.slice_range == (2, 9) and again.runtime is Runtime.TORCH
    assert isinstance(again.slices, SliceConfig) and isinstance(again.slices.intensity, IntensityConfig)


def test_a_prediction_configuration_refuses_unknown_and_mistyped_keys_by_path() -> None:
    from samtune.predict.config import PredictConfig

    message = _error({"slices": {"axsi": "k"}}, cls=PredictConfig, where="predict")
    assert "'predict.slices.axsi'" in message and "Did you mean 'axis'?" in message
    assert "'predict.threshold' must be a finite number" in _error(
        {"threshold": float("nan")}, cls=PredictConfig, where="predict"
    )


def test_every_preset_training_configuration_round_trips_through_json() -> None:
    from samtune.train.config import TrainConfig
    from samtune.train.presets import list_presets

    presets = list_presets()
    assert len(presets) >= 5
    for preset in presets:
        config = preset.train_config()
        data = json.loads(json.dumps(config.to_dict()))
        assert TrainConfig.from_dict(data) == config, preset.name


def test_a_changed_training_configuration_round_trips_through_json() -> None:
    from samtune.train.config import TrainConfig

    config = TrainConfig.from_dict(
        {"backbone": "sam_vit_b", "epochs": 3, "lr": 0.02, "device": "cpu", "loss": "structure",
         "finetune": {"method": "adapter", "scope": "encoder_decoder", "train_modules": ["mask_decoder.iou_head"]},
         "augment": {"zoom": [0.9, 1.1], "flip": 0.0}, "slices": {"axis": "i", "intensity": {"mode": "percentile"}}}
    )  # fmt: skip
    data = config_to_dict(config)
    assert data["augment"]["zoom"] == [0.9, 1.1] and data["loss"] == "structure"
    assert data["finetune"]["method"] == "adapter" and data["slices"]["intensity"]["mode"] == "percentile"
    assert TrainConfig.from_dict(json.loads(json.dumps(data))) == config


# --- Python 3.9 (Slicer 5.8): annotations with `X | None` --------------------------------------------


@pytest.fixture
def python39_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    """``typing.get_type_hints`` as on Python 3.9, where it cannot evaluate ``X | None``."""
    import typing

    real = typing.get_type_hints

    def get_type_hints(cls: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if any("|" in str(a) for a in getattr(cls, "__annotations__", {}).values()):
            raise TypeError("unsupported operand type(s) for |: 'type' and 'NoneType'")
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", get_type_hints)


def test_field_types_read_the_same_hints_where_get_type_hints_cannot() -> None:
    import typing

    from samtune.config_io import field_types
    from samtune.data.intensity import IntensityConfig
    from samtune.data.slicing import SliceConfig
    from samtune.peft.config import FineTuneConfig, LoRAConfig
    from samtune.predict.config import PredictConfig, PromptSpec
    from samtune.train.config import TrainConfig
    from samtune.worker.jobs import PredictJob, TrainJob

    classes = (PredictJob, TrainJob, PredictConfig, PromptSpec, SliceConfig, IntensityConfig, TrainConfig,
               FineTuneConfig, LoRAConfig)  # fmt: skip
    expected = {cls: typing.get_type_hints(cls) for cls in classes}
    real = typing.get_type_hints
    try:
        typing.get_type_hints = lambda *a, **k: (_ for _ in ()).throw(TypeError("3.9"))  # type: ignore[assignment]
        for cls in classes:
            assert field_types(cls) == expected[cls], cls.__name__
    finally:
        typing.get_type_hints = real  # type: ignore[assignment]


@pytest.mark.usefixtures("python39_hints")
def test_values_are_type_checked_and_cli_options_generated_on_python_39() -> None:
    from samtune.cli import build_parser
    from samtune.worker.jobs import job_from_dict

    with pytest.raises(ConfigurationError, match=r"'job.predict.threshold' must be a number"):
        job_from_dict({"kind": "predict", "image": "i.nii", "out": "o.nii", "predict": {"threshold": "high"}})
    argv = ["predict", "--image", "i.nii", "--out", "o.nii", "--box", "1", "2", "0", "9", "9", "2",
            "--window", "-100", "300", "--slices", "3:9", "--threshold", "0.3"]  # fmt: skip
    args = build_parser().parse_args(argv)
    from samtune.cli.options import options_to_dict
    from samtune.worker.jobs import PredictJob

    data = options_to_dict(PredictJob, args)
    assert data["prompts"] == {"box": [[1.0, 2.0, 0.0, 9.0, 9.0, 2.0]]}
    assert data["predict"]["slices"]["intensity"] == {"window_low": -100.0, "window_high": 300.0}
    assert data["predict"]["slice_range"] == [3, 9] and data["predict"]["threshold"] == 0.3
