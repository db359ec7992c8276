"""instructkit: make instruction-tuning data with LLMs, judge it, and select the best and most diverse subset."""

import os as _os

# litellm fetches a price map from the internet at import unless told otherwise; we never want that.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"

from .models import LLM, Completion, GenParams  # noqa: E402

__all__ = ["LLM", "Completion", "GenParams", "__version__"]
