"""The benchmark's method labels: what ``tru bench`` runs per cell. Kept apart from :mod:`tru.bench` so
that building the CLI's parser (``--method`` choices) does not import the benchmark and the certificate
(scikit-learn, SciPy: ~1.8 s of every ``tru`` command's start-up)."""

from __future__ import annotations

from typing import Any

#: method label -> (engine method, unlearning option overrides)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "tru": ("tru", {}),
    "tru-no-exact": ("tru", {"exact": False}),
    "tru-no-rfg": ("tru", {"rfg": False}),
    "tru-no-bms": ("tru", {"bms": False}),
    "tru-no-cli": ("tru", {"cli": False}),
    "tru-no-sink": ("tru", {"item_sink": False}),
    "mmrecun": ("mmrecun", {}),
    "gradient_ascent": ("gradient_ascent", {}),
    "finetune": ("finetune", {}),
}
REBUILD_ONLY = "rebuild-only"
ORIGINAL = "original"
SECOND = "second-retrain"
SPECIAL = (REBUILD_ONLY, ORIGINAL, SECOND)
ALL_METHODS = (*METHODS, *SPECIAL)
#: methods that only differ from TRU in some regimes (the item sink acts in the item regime only)
ONLY_IN = {"tru-no-sink": ("item",)}
