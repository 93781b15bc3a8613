"""Substitution harness: which Clvp classes transformers' test mixins see.

Loaded as a pytest plugin (``-p harness``) by ``run.py`` in both runs. ``CLVP_SUITE_IMPL`` picks the
class source:

- ``transformers``: the control, transformers 4.46.3's own Clvp classes, untouched;
- ``clvp``: this library's classes, also written into transformers' namespace (the top-level package
  and ``transformers.models.clvp`` with its submodules), so that mixin code that looks a class up by
  name (``transformers.ClvpTokenizer``, ``processor_class_from_name``) gets ours.

One helper of the mixins needs the same treatment: ``_config_zero_init`` (test_modeling_common) sets
every ``*_range`` / ``*_std`` / ``initializer_factor`` field to 1e-10 and recurses into sub-configs
that are transformers ``PretrainedConfig`` instances. clvp's configs are not (the library never
imports transformers), so in the clvp run the helper also recurses into clvp config instances; without
that the composite's sub-configs would keep their initialiser ranges and ``test_initialization``
would test nothing about clvp.

The patching happens when this module is imported, which pytest does for ``-p`` plugins before it
collects any test module; so ``from transformers import ClvpEncoder`` in a collected module (ours, or
the real CLVP test files with ``run.py --tests-from``) already yields the substituted class. Log
records of ``clvp.*`` loggers are routed to transformers' logger in the clvp run, for the same reason.
"""
import importlib
import importlib.util
import os
from types import SimpleNamespace

IMPL = os.environ.get("CLVP_SUITE_IMPL", "transformers")
if IMPL not in ("transformers", "clvp"):
    raise ValueError(f"CLVP_SUITE_IMPL must be 'transformers' or 'clvp', got {IMPL!r}")

NAMES = (
    "ClvpConfig",
    "ClvpDecoderConfig",
    "ClvpEncoderConfig",
    "ClvpEncoder",
    "ClvpDecoder",
    "ClvpModel",
    "ClvpForCausalLM",
    "ClvpModelForConditionalGeneration",
    "ClvpPreTrainedModel",
    "ClvpTokenizer",
    "ClvpFeatureExtractor",
    "ClvpProcessor",
)

# transformers' modules that hold a Clvp name; each gets ours in the clvp run.
_TRANSFORMERS_MODULES = (
    "transformers",
    "transformers.models.clvp",
    "transformers.models.clvp.configuration_clvp",
    "transformers.models.clvp.modeling_clvp",
    "transformers.models.clvp.tokenization_clvp",
    "transformers.models.clvp.feature_extraction_clvp",
    "transformers.models.clvp.processing_clvp",
)


def _load(source: str) -> SimpleNamespace:
    module = importlib.import_module(source)
    return SimpleNamespace(**{name: getattr(module, name) for name in NAMES})


classes = _load(IMPL)

if IMPL == "clvp":
    for _module_name in _TRANSFORMERS_MODULES:
        _module = importlib.import_module(_module_name)
        for _name in NAMES:
            if _name in vars(_module) or hasattr(_module, _name):
                setattr(_module, _name, getattr(classes, _name))


def _patch_zero_init(module_name: str) -> None:
    mixins = importlib.import_module(module_name)
    original = mixins._config_zero_init
    config_classes = (classes.ClvpConfig, classes.ClvpEncoderConfig, classes.ClvpDecoderConfig)

    def zero_init(config):
        out = original(config)
        for key, value in list(vars(out).items()):
            if isinstance(value, config_classes):
                setattr(out, key, zero_init(value))
        return out

    mixins._config_zero_init = zero_init


if IMPL == "clvp":
    # the sdist's mixins (our modules) or a source checkout's (run.py --tests-from)
    for _mixins in ("hf_tests.test_modeling_common", "tests.test_modeling_common"):
        if importlib.util.find_spec(_mixins.split(".")[0]) is not None and importlib.util.find_spec(_mixins):
            _patch_zero_init(_mixins)
            break

for _name in NAMES:  # the substitution must hold, or the clvp run would silently test transformers
    _cls = getattr(classes, _name)
    if not _cls.__module__.startswith(IMPL + "."):
        raise RuntimeError(f"{_name} comes from {_cls.__module__}, expected {IMPL}")
    if IMPL == "clvp" and getattr(importlib.import_module("transformers"), _name) is not _cls:
        raise RuntimeError(f"transformers.{_name} was not replaced by clvp's class")


if IMPL == "clvp":
    # Log records: transformers' mixins listen on the "transformers" logger (assertLogs("transformers")),
    # ours log under "clvp.*"; the same substitution as for the classes routes our records there too.
    import logging

    class _ToTransformers(logging.Handler):
        def emit(self, record):
            logging.getLogger("transformers").handle(record)

    logging.getLogger("clvp").addHandler(_ToTransformers())
    logging.getLogger("clvp").propagate = False  # once, through transformers' logger, not twice


def pytest_report_header(config):
    return f"clvp transformers-suite harness: Clvp classes from {IMPL!r}"
