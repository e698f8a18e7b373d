"""textimg: text-to-image search with OpenAI CLIP and Milvus.

Data flows one way: files -> tensors -> vectors -> Milvus -> hits -> pictures.
"""

import warnings

# openai/CLIP and milvus-lite 2.5 import the deprecated pkg_resources; the warning helps nobody here.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
# clip.load(..., jit=False) first probes the file with torch.jit.load, which newer torch calls
# deprecated; the probe is openai/CLIP's, and the notebooks call clip.load in the open.
warnings.filterwarnings("ignore", message=r"`torch.jit.load` is deprecated", category=FutureWarning)

from .config import Settings, TextimgError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Settings", "TextimgError", "__version__"]
