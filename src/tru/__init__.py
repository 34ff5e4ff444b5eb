"""tru: Targeted Reverse Update for multimodal recommendation unlearning."""

__version__ = "0.1.0"
