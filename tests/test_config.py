"""NestConfig validation: out-of-range values give a ConfigError naming the field."""

import pytest

from nest_integrations import ConfigError, FrozenConfigError, NestConfig


@pytest.mark.parametrize(
    "field,value",
    [("max_new_tokens", 0), ("max_new_tokens", -3), ("gamma", -0.1), ("tau", 0.0), ("alpha", 1.5),
     ("neighbors", 0), ("draft_length", 0), ("passages", 0), ("method", "magic"), ("stop", [""]),
     ("span_stop", "never"), ("lm_temperature", 0)],
)
def test_out_of_range_rejected_with_field_name(field, value):
    with pytest.raises(ConfigError, match=field):
        NestConfig(**{field: value})


def test_unknown_field_rejected():
    with pytest.raises(ConfigError, match="neighbours"):
        NestConfig(neighbours=3)


def test_config_is_frozen():
    c = NestConfig()
    for field, value in [("delta", 0.2), ("delta", 2.0), ("max_new_tokens", 8), ("new_field", 1)]:
        with pytest.raises(FrozenConfigError, match=field):
            setattr(c, field, value)
    with pytest.raises(FrozenConfigError):
        del c.delta
    assert issubclass(FrozenConfigError, ConfigError) and issubclass(FrozenConfigError, AttributeError)
    assert c == NestConfig() and c.delta == 0.5
    # stop strings are a tuple, so the config cannot be changed through them either; it is hashable
    s = NestConfig(stop=["\n", "Q:"])
    assert s.stop == ("\n", "Q:") and not hasattr(s.stop, "append")
    assert hash(s) == hash(NestConfig(stop=("\n", "Q:")))


def test_replace_validates_and_leaves_the_original_alone():
    c = NestConfig()
    v = c.replace(gamma=0.05, stop=["."])
    assert v.gamma == 0.05 and v.stop == (".",) and c.gamma == 0.5 and c.stop == ()
    assert c.replace() is c
    with pytest.raises(ConfigError, match="delta"):
        c.replace(delta=2.0)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        c.replace(max_new_tokens=0)
    with pytest.raises(ConfigError, match="neighbours"):
        c.replace(neighbours=3)
    assert c == NestConfig()
