"""RemoteGLM-mini: the project's own small remote-sensing VLM, registered with the transformers Auto classes.

Importing this package (done by `import model_adapter`) makes these work on a saved mini model directory,
without `trust_remote_code`:

    AutoConfig / AutoModelForImageTextToText / AutoImageProcessor / AutoProcessor .from_pretrained(path)

Model: `modeling_remoteglm_mini.py`; vision tower: `vision_remoteglm_mini.py`; processor and chat template:
`processing_remoteglm_mini.py`. Training: `python -m finetune.mini`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .configuration_remoteglm_mini import RemoteGLMMiniConfig
from .modeling_remoteglm_mini import RemoteGLMMiniForConditionalGeneration, RemoteGLMMiniModel
from .processing_remoteglm_mini import RemoteGLMMiniImageProcessor, RemoteGLMMiniProcessor

AutoConfig.register(RemoteGLMMiniConfig.model_type, RemoteGLMMiniConfig, exist_ok=True)
AutoModel.register(RemoteGLMMiniConfig, RemoteGLMMiniModel, exist_ok=True)
AutoModelForImageTextToText.register(RemoteGLMMiniConfig, RemoteGLMMiniForConditionalGeneration, exist_ok=True)
AutoImageProcessor.register(
    RemoteGLMMiniConfig, image_processor_classes={"pil": RemoteGLMMiniImageProcessor}, exist_ok=True
)
AutoProcessor.register(RemoteGLMMiniConfig, RemoteGLMMiniProcessor, exist_ok=True)

__all__ = [
    "RemoteGLMMiniConfig",
    "RemoteGLMMiniForConditionalGeneration",
    "RemoteGLMMiniModel",
    "RemoteGLMMiniImageProcessor",
    "RemoteGLMMiniProcessor",
]
