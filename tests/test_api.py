"""The public API is explicit: these names, and no others, are onebyone's promise."""

import onebyone

PUBLIC = [
    "CompressReport",
    "Conv1x1",
    "ConvNormAct",
    "CostReport",
    "Inception",
    "MLPConv",
    "NaiveInception",
    "TuneReport",
    "__version__",
    "ablations_of",
    "bottleneck_cost",
    "compress",
    "conv1x1",
    "convert",
    "cost",
    "create_model",
    "finetune",
    "list_models",
    "register_model",
    "tune",
]


def test_all_is_pinned():
    assert sorted(onebyone.__all__) == PUBLIC


def test_all_is_sorted_and_resolvable():
    assert onebyone.__all__ == sorted(onebyone.__all__)
    for name in onebyone.__all__:
        assert getattr(onebyone, name) is not None


def test_dir_shows_public_names():
    public_dir = {n for n in dir(onebyone) if not n.startswith("_")}
    # every public attribute is either in __all__ or a submodule
    import types

    extra = {
        n
        for n in public_dir - set(onebyone.__all__)
        if not isinstance(getattr(onebyone, n), types.ModuleType)
    }
    assert extra == set()
