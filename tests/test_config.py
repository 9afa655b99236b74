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


def test_a_saved_config_with_a_removed_field_still_loads(tmp_path):
    """``encode_on_the_fly`` (removed, it had no effect) may be in saved configs: loading drops it, no error."""
    import json
    from pathlib import Path

    from nest_integrations.config import REMOVED_FIELDS

    saved = dict(NestConfig(alpha=0.4).model_dump(mode="json"), encode_on_the_fly=False)
    path = Path(tmp_path) / "report.json"
    path.write_text(json.dumps({"config": saved}), encoding="utf-8")
    loaded = NestConfig(**json.loads(path.read_text(encoding="utf-8"))["config"])
    assert loaded == NestConfig(alpha=0.4)
    assert NestConfig.model_validate({"encode_on_the_fly": True}) == NestConfig()
    assert "encode_on_the_fly" not in NestConfig.model_fields and "encode_on_the_fly" in REMOVED_FIELDS
    assert "encode_on_the_fly" not in loaded.model_dump()
    # a report shipped with the repository (written before the field was removed) loads
    report = Path(__file__).resolve().parents[1] / "docs" / "results" / "issue11" / "nq-dev200-subset100.json"
    config = json.loads(report.read_text(encoding="utf-8"))["config"]
    assert "encode_on_the_fly" in config and NestConfig(**config).method == config["method"]
    with pytest.raises(ConfigError, match="bogus"):  # other unknown fields are still refused
        NestConfig(**saved, bogus=1)


def test_eval_records_written_with_the_removed_field_resume(tmp_path):
    """A ``--records`` file whose header config holds ``encode_on_the_fly`` is the same configuration."""
    import json

    from nest_integrations.eval.harness import _open_records

    cfg = NestConfig(max_new_tokens=8)
    old_header = {"config": dict(cfg.model_dump(mode="json"), encode_on_the_fly=False), "max_new_tokens": 8}
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(old_header) + "\n" + json.dumps({"id": "q1", "system": "nest"}) + "\n", encoding="utf-8")
    records, sink = _open_records(path, cfg, 8)
    sink.close()
    assert records == [{"id": "q1", "system": "nest"}]
    with pytest.raises(ConfigError, match="another configuration"):
        _open_records(path, NestConfig(max_new_tokens=9), 8)
