"""The course's own InternVL2 implementation, in the official checkpoint format.

The ``configuration_*``, ``modeling_*`` and ``conversation`` modules are also the *remote code* written into
every model folder (``REMOTE_CODE_FILES``): transformers, XTuner and LMDeploy load them from there, so they
import only each other, torch and transformers. ``preprocessing`` is the image tiling used by the course.
"""

from pathlib import Path

from .configuration_intern_vit import InternVisionConfig
from .configuration_internlm2 import InternLM2Config
from .configuration_internvl_chat import InternVLChatConfig
from .modeling_intern_vit import InternVisionModel
from .modeling_internlm2 import InternLM2ForCausalLM
from .modeling_internvl_chat import (
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    IMG_START_TOKEN,
    InternVLChatModel,
    build_prompt,
    pixel_shuffle,
)
from .preprocessing import count_tiles, dynamic_preprocess, load_image

SOURCE_DIR = Path(__file__).resolve().parent
REMOTE_CODE_FILES = (
    "configuration_intern_vit.py",
    "configuration_internlm2.py",
    "configuration_internvl_chat.py",
    "conversation.py",
    "modeling_intern_vit.py",
    "modeling_internlm2.py",
    "modeling_internvl_chat.py",
)

__all__ = [
    "IMG_CONTEXT_TOKEN",
    "IMG_END_TOKEN",
    "IMG_START_TOKEN",
    "REMOTE_CODE_FILES",
    "SOURCE_DIR",
    "build_prompt",
    "InternLM2Config",
    "InternLM2ForCausalLM",
    "InternVLChatConfig",
    "InternVLChatModel",
    "InternVisionConfig",
    "InternVisionModel",
    "count_tiles",
    "dynamic_preprocess",
    "load_image",
    "pixel_shuffle",
]
