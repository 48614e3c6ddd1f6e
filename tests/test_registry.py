"""Registries: decorator registration, duplicates, unknown names, wildcards, `all`, variants."""

from __future__ import annotations

import pytest

from medhash_datasets.registry import Registry, RegistryError


def test_register_get_and_list_with_wildcards():
    reg: Registry = Registry("widget")

    @reg.register("alpha")
    class Alpha: ...

    reg.add("alpha-small", object(), tags=("ablation",))
    reg.add("beta", object())
    assert reg.get("alpha") is Alpha
    assert reg.names() == ["alpha", "alpha-small", "beta"]
    assert reg.names("alpha*") == ["alpha", "alpha-small"]
    assert reg.names(tag="ablation") == ["alpha-small"]
    assert reg.resolve(["all"], all_excludes_tag="ablation") == ["alpha", "beta"]
    assert reg.resolve(["beta", "alpha*", "beta"]) == ["beta", "alpha", "alpha-small"]


def test_duplicate_name_is_an_error():
    reg: Registry = Registry("widget")
    reg.add("x", 1)
    with pytest.raises(RegistryError, match="duplicate widget name 'x'"):
        reg.add("x", 2)
    assert reg.get("x") == 1


def test_unknown_name_lists_valid_ones():
    reg: Registry = Registry("widget")
    reg.add("a", 1)
    reg.add("b", 2)
    with pytest.raises(RegistryError) as err:
        reg.get("c")
    assert str(err.value) == "unknown widget 'c'; valid widgets: a, b"
    with pytest.raises(RegistryError, match="valid widgets: a, b"):
        reg.resolve(["z*"])


def test_project_registries_hold_the_baselines_and_synthetic():
    from medhash_datasets.loaders import DATASETS
    from methods import METHODS

    assert {"random", "cca-itq", "real-valued"} <= set(METHODS.names())
    assert "synthetic" in DATASETS
    assert "ablation" not in " ".join(sorted(METHODS.tags("random")))


def test_variant_applies_overrides_and_rejects_unknown_fields():
    from methods import METHODS, ConfigError, create_method, register_variant

    register_variant("cca-itq-test-variant", "cca-itq", description="test", itq_iterations=3)
    try:
        m = create_method("cca-itq-test-variant")
        assert m.config.itq_iterations == 3
        assert "cca-itq-test-variant" not in METHODS.resolve(["all"], all_excludes_tag="ablation")
        assert METHODS.get("cca-itq-test-variant").base == "cca-itq"
        with pytest.raises(ConfigError, match="unknown parameter"):
            register_variant("cca-itq-bad", "cca-itq", description="x", no_such_field=1)
        with pytest.raises(ConfigError, match="itq_iterations"):
            create_method("cca-itq", {"itq_iterations": -1})
    finally:
        METHODS._items.pop("cca-itq-test-variant", None)
        METHODS._tags.pop("cca-itq-test-variant", None)
