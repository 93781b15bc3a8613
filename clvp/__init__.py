"""CLVP (Tortoise TTS's contrastive text-speech model and speech-code decoder) in PyTorch + Triton,
with Hugging Face's class names, checkpoint layout and numbers (transformers 4.46.3)."""
from .configuration import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig
from .modeling import (
    ClvpConditioningEncoder,
    ClvpDecoder,
    ClvpEncoder,
    ClvpForCausalLM,
    ClvpModel,
    ClvpModelForConditionalGeneration,
    ClvpPreTrainedModel,
)
from .outputs import ClvpEncoderOutput, ClvpOutput

__version__ = "0.1.0"

__all__ = [
    "ClvpConfig",
    "ClvpDecoderConfig",
    "ClvpEncoderConfig",
    "ClvpConditioningEncoder",
    "ClvpDecoder",
    "ClvpEncoder",
    "ClvpForCausalLM",
    "ClvpModel",
    "ClvpModelForConditionalGeneration",
    "ClvpPreTrainedModel",
    "ClvpEncoderOutput",
    "ClvpOutput",
]


def __getattr__(name):  # the front end loads lazily, so `import clvp` stays light
    if name == "ClvpTokenizer":
        from .tokenization import ClvpTokenizer

        return ClvpTokenizer
    if name == "ClvpFeatureExtractor":
        from .feature_extraction import ClvpFeatureExtractor

        return ClvpFeatureExtractor
    if name == "ClvpProcessor":
        from .processing import ClvpProcessor

        return ClvpProcessor
    if name == "GenerationConfig":
        from .generation import GenerationConfig

        return GenerationConfig
    raise AttributeError(f"module 'clvp' has no attribute {name!r}")
