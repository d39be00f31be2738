"""Configuration of InternViT, the vision encoder of InternVL2 (InternViT-300M-448px in InternVL2-2B).

Part of the model's remote code: this file is copied into every model folder and must import nothing from
outside this folder but torch/transformers.
"""

from transformers.configuration_utils import PretrainedConfig


class InternVisionConfig(PretrainedConfig):
    """A ViT with a class token, learned absolute positions and layer scale (defaults: InternViT-300M-448px)."""

    model_type = "intern_vit_6b"  # the name every InternVL2 checkpoint uses, whatever its ViT size

    def __init__(
        self,
        num_channels=3,
        patch_size=14,
        image_size=448,
        qkv_bias=True,
        hidden_size=1024,
        num_attention_heads=16,
        intermediate_size=4096,
        qk_normalization=False,
        num_hidden_layers=24,
        use_flash_attn=True,
        hidden_act="gelu",
        norm_type="layer_norm",
        layer_norm_eps=1e-6,
        dropout=0.0,
        drop_path_rate=0.0,
        attention_dropout=0.0,
        initializer_range=0.02,
        initializer_factor=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.qkv_bias = qkv_bias
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qk_normalization = qk_normalization
        self.num_hidden_layers = num_hidden_layers
        self.use_flash_attn = use_flash_attn
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor
