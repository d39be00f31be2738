"""Configuration of InternLM2, the language model of InternVL2-2B (InternLM2-1.8B by default).

Part of the model's remote code: copied into every model folder; imports only torch/transformers.
"""

from transformers.configuration_utils import PretrainedConfig


class InternLM2Config(PretrainedConfig):
    """A decoder-only LLM with packed ``wqkv`` grouped-query attention, RMSNorm, SwiGLU and rotary positions.

    ``attn_implementation`` is a plain config field (as in the official checkpoints): ``"eager"`` computes
    attention weights explicitly (inspectable), anything else - including ``"flash_attention_2"``, which XTuner
    forces - runs PyTorch's ``scaled_dot_product_attention``, which picks a FlashAttention kernel on GPUs where
    one applies, so no ``flash_attn`` package is needed.
    """

    model_type = "internlm2"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size=92553,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=8,
        hidden_act="silu",
        max_position_embeddings=32768,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        use_cache=True,
        pad_token_id=2,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        bias=False,
        rope_theta=1000000,
        rope_scaling=None,
        attn_implementation="eager",
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.bias = bias
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.attn_implementation = attn_implementation
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}")
        if num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads (grouped-query attention)")
        if rope_scaling is not None and rope_scaling.get("type") not in ("linear", "dynamic"):
            raise ValueError(f"rope_scaling type must be 'linear' or 'dynamic', got {rope_scaling!r}")
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
