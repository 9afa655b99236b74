"""NestConfig validation: out-of-range values give a ConfigError naming the field."""

import pytest

from nest_integrations import ConfigError, NestConfig


@pytest.mark.parametrize(
    "field,value",
    [("max_new_tokens", 0), ("max_new_tokens", -3), ("gamma", -0.1), ("tau", 0.0), ("alpha", 1.5),
     ("neighbors", 0), ("draft_length", 0), ("passages", 0), ("method", "magic"), ("stop", [""]),
     ("span_stop", "never"), ("lm_temperature", 0)],
)
def test_out_of_range_rejected_with_field_name(field, value):
    with pytest.raises(ConfigError, match=field):
        NestConfig(**{field: value})


def test_unknown_field_and_assignment_are_validated():
    with pytest.raises(ConfigError, match="neighbours"):
        NestConfig(neighbours=3)
    c = NestConfig()
    with pytest.raises(ConfigError, match="delta"):
        c.delta = 2.0
    assert c.replace(gamma=0.05).gamma == 0.05 and c.gamma != 0.05
