"""textimg: text-to-image search with OpenAI CLIP and Milvus.

Data flows one way: files -> pixels -> vectors -> Milvus -> hits -> pictures (see docs/development.md,
"How the code is laid out"). Importing the package changes no global setting: the deprecation
warnings of openai/CLIP's and Milvus Lite's imports are silenced around those imports only.
"""

from .config import Settings, TextimgError

__version__ = "0.1.0"

__all__ = ["Settings", "TextimgError", "__version__"]

