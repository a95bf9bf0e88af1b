"""d3: fast diffusion language models — trajectory distillation, multi-block decoding, AUP."""

__version__ = "0.1.0"
