"""Configuration of the whole InternVL2 chat model: a vision config, an LLM config and how they are joined.

Part of the model's remote code: copied into every model folder; imports only this folder and transformers.
"""

import copy

from transformers.configuration_utils import PretrainedConfig

from .configuration_intern_vit import InternVisionConfig
from .configuration_internlm2 import InternLM2Config

SUPPORTED_LLM_ARCHITECTURES = ("InternLM2ForCausalLM",)


class InternVLChatConfig(PretrainedConfig):
    """ViT -> pixel shuffle (``downsample_ratio``) -> MLP projector ``mlp1`` -> LLM, with dynamic tiling settings."""

    model_type = "internvl_chat"
    is_composition = True

    def __init__(
        self,
        vision_config=None,
        llm_config=None,
        use_backbone_lora=0,
        use_llm_lora=0,
        select_layer=-1,
        force_image_size=None,
        downsample_ratio=0.5,
        template="internlm2-chat",
        dynamic_image_size=True,
        use_thumbnail=True,
        ps_version="v2",
        min_dynamic_patch=1,
        max_dynamic_patch=12,
        **kwargs,
    ):
        super().__init__(**kwargs)
        vision_config = vision_config or {}
        llm_config = llm_config or {"architectures": ["InternLM2ForCausalLM"]}
        self.vision_config = (
            vision_config if isinstance(vision_config, InternVisionConfig) else InternVisionConfig(**vision_config)
        )
        if not isinstance(llm_config, InternLM2Config):
            architecture = (llm_config.get("architectures") or ["InternLM2ForCausalLM"])[0]
            if architecture not in SUPPORTED_LLM_ARCHITECTURES:
                raise NotImplementedError(
                    f"this InternVL2 implementation supports LLMs {SUPPORTED_LLM_ARCHITECTURES}, not {architecture}; "
                    "use InternVL2-2B (InternLM2) or load the model's own remote code"
                )
            llm_config = InternLM2Config(**llm_config)
        self.llm_config = llm_config
        self.use_backbone_lora = use_backbone_lora
        self.use_llm_lora = use_llm_lora
        self.select_layer = select_layer
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.ps_version = ps_version
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch

    @property
    def image_size(self) -> int:
        """Side of one square tile in pixels."""
        return self.force_image_size or self.vision_config.image_size

    @property
    def num_image_token(self) -> int:
        """LLM tokens per tile: (patches per side)^2, shrunk by the pixel shuffle's ratio squared."""
        patches_per_side = self.image_size // self.vision_config.patch_size
        return int(patches_per_side**2 * self.downsample_ratio**2)

    def to_dict(self):
        """Serialise with the nested configs as plain dicts, the layout of the official ``config.json``."""
        output = copy.deepcopy(self.__dict__)
        output["vision_config"] = self.vision_config.to_dict()
        output["llm_config"] = self.llm_config.to_dict()
        output["model_type"] = self.__class__.model_type
        self.dict_torch_dtype_to_str(output)
        return output
