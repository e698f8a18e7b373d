"""textimg: text-to-image search with OpenAI CLIP and Milvus.

Data flows one way: files -> tensors -> vectors -> Milvus -> hits -> pictures.
"""

import warnings

# openai/CLIP and milvus-lite 2.5 import the deprecated pkg_resources; the warning helps nobody here.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from .config import Settings, TextimgError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Settings", "TextimgError", "__version__"]
