"""InternVL2: InternViT -> pixel shuffle -> MLP projector ``mlp1`` -> InternLM2, with the official chat API.

An image becomes tiles (see ``preprocessing.py``); each tile's ViT patch features are pixel-shuffled (2x2
neighbouring patches folded into channels, so 4x fewer tokens), projected by ``mlp1`` into the LLM's embedding
space, and written over the ``<IMG_CONTEXT>`` placeholder tokens of the prompt ``<img><IMG_CONTEXT>...</img>``.

Part of the model's remote code: copied into every model folder; imports only this folder, torch, transformers.
"""

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

from .configuration_internvl_chat import InternVLChatConfig
from .conversation import get_conv_template
from .modeling_intern_vit import InternVisionModel
from .modeling_internlm2 import DECODE_SETTINGS, InternLM2ForCausalLM

IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"


def pixel_shuffle(features, scale_factor=0.5, version="v2"):
    """Fold each 2x2 block of a (batch, w, h, channels) feature grid into one position with 4x the channels.

    The reshapes follow the published InternVL2 order (``ps_version`` v2 transposes back at the end), which
    decides how trained ``mlp1`` weights read the folded channels.
    """
    batch, width, height, channels = features.shape
    features = features.reshape(batch, width, int(height * scale_factor), int(channels / scale_factor))
    features = features.permute(0, 2, 1, 3).contiguous()
    features = features.reshape(
        batch, int(height * scale_factor), int(width * scale_factor), int(channels / (scale_factor * scale_factor))
    )
    if version != "v1":
        features = features.permute(0, 2, 1, 3).contiguous()
    return features


def build_prompt(template_name, system_message, num_image_token, question, history=None, num_patches_list=()):
    """The full chat prompt for ``question`` after ``history`` [(q, a), ...], each ``<image>`` expanded to
    ``<img>`` + ``num_image_token`` ``<IMG_CONTEXT>`` per tile + ``</img>`` (one entry of ``num_patches_list`` each)."""
    template = get_conv_template(template_name)
    template.system_message = system_message
    for old_question, old_answer in history or []:
        template.append_message(template.roles[0], old_question)
        template.append_message(template.roles[1], old_answer)
    template.append_message(template.roles[0], question)
    template.append_message(template.roles[1], None)
    prompt = template.get_prompt()
    for num_patches in num_patches_list:
        placeholder = IMG_START_TOKEN + IMG_CONTEXT_TOKEN * num_image_token * num_patches + IMG_END_TOKEN
        prompt = prompt.replace("<image>", placeholder, 1)
    return prompt


class InternVLChatModel(PreTrainedModel):
    config_class = InternVLChatConfig
    main_input_name = "pixel_values"
    base_model_prefix = "language_model"
    _no_split_modules = ["InternVisionEncoderLayer", "InternLM2DecoderLayer"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True

    def __init__(self, config: InternVLChatConfig, vision_model=None, language_model=None, use_flash_attn=True):
        super().__init__(config)
        if not use_flash_attn:  # the model card's switch: explicit attention weights instead of fused kernels
            config.llm_config.attn_implementation = "eager"
        self.template = config.template
        self.num_image_token = config.num_image_token
        self.downsample_ratio = config.downsample_ratio
        self.ps_version = config.ps_version
        self.select_layer = config.select_layer
        self.vision_model = vision_model or InternVisionModel(config.vision_config)
        self.language_model = language_model or InternLM2ForCausalLM(config.llm_config)
        vit_hidden = config.vision_config.hidden_size
        llm_hidden = config.llm_config.hidden_size
        folded = vit_hidden * int(1 / self.downsample_ratio) ** 2
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(folded), nn.Linear(folded, llm_hidden), nn.GELU(), nn.Linear(llm_hidden, llm_hidden)
        )
        self.img_context_token_id = None
        self.system_message = get_conv_template(self.template).system_message
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and any(module is m for m in self.mlp1):
            nn.init.normal_(module.weight, std=self.config.llm_config.initializer_range)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def extract_feature(self, pixel_values):
        """Tiles (n, 3, S, S) -> LLM-ready image embeddings (n, num_image_token, llm_hidden)."""
        if self.select_layer == -1:
            features = self.vision_model(pixel_values=pixel_values, output_hidden_states=False).last_hidden_state
        else:
            features = self.vision_model(pixel_values=pixel_values, output_hidden_states=True).hidden_states[
                self.select_layer
            ]
        features = features[:, 1:, :]  # drop the class token
        side = int(features.shape[1] ** 0.5)
        features = features.reshape(features.shape[0], side, side, -1)
        features = pixel_shuffle(features, self.downsample_ratio, self.ps_version)
        features = features.reshape(features.shape[0], -1, features.shape[-1])
        return self.mlp1(features)

    def merge_image_features(self, input_ids, pixel_values, image_flags=None):
        """Token embeddings of ``input_ids`` with every ``<IMG_CONTEXT>`` position replaced by image features."""
        if self.img_context_token_id is None:
            raise ValueError("set model.img_context_token_id = tokenizer.convert_tokens_to_ids('<IMG_CONTEXT>') first")
        embeds = self.language_model.get_input_embeddings()(input_ids)
        image_features = self.extract_feature(pixel_values)
        if image_flags is not None:  # text-only samples carry an all-zero dummy tile
            image_features = image_features[image_flags.view(-1) == 1]
        selected = input_ids == self.img_context_token_id
        needed, available = int(selected.sum()), image_features.shape[0] * image_features.shape[1]
        if needed != available:
            raise ValueError(
                f"the prompt has {needed} {IMG_CONTEXT_TOKEN} tokens but the images give {available} features; "
                f"build the prompt with {self.num_image_token} tokens per tile (num_patches_list)"
            )
        embeds = embeds.clone()
        embeds[selected] = image_features.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
        return embeds

    def forward(
        self,
        pixel_values,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        image_flags=None,
        past_key_values=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """Training/scoring forward: image features merged into the prompt, next-token loss when ``labels`` given."""
        embeds = self.merge_image_features(input_ids, pixel_values, image_flags)
        outputs = self.language_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
        )
        result = CausalLMOutputWithPast(
            loss=outputs.loss,
            logits=outputs.logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return result if return_dict is not False else result.to_tuple()

    def build_prompt(self, question, history=None, num_patches_list=()):
        """This model's prompt for ``question`` (see the module-level ``build_prompt``)."""
        return build_prompt(self.template, self.system_message, self.num_image_token, question, history, num_patches_list)

    def _answers(self, tokenizer, pixel_values, prompts, generation_config):
        """Generate and decode one answer per prompt, each cut at the template's end token (``<|im_end|>``)."""
        end_token = get_conv_template(self.template).sep.strip()
        padding_side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # generation continues every row from its last column
        try:
            inputs = tokenizer(prompts, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = padding_side
        device = self.language_model.device
        generation_config = dict(generation_config)
        generation_config.setdefault("eos_token_id", tokenizer.convert_tokens_to_ids(end_token))
        output_ids = self.generate(
            pixel_values=pixel_values,
            input_ids=inputs["input_ids"].to(device),
            attention_mask=inputs["attention_mask"].to(device),
            **generation_config,
        )
        return [answer.split(end_token)[0].strip() for answer in tokenizer.batch_decode(output_ids, skip_special_tokens=True)]

    def chat(
        self,
        tokenizer,
        pixel_values,
        question,
        generation_config,
        history=None,
        return_history=False,
        num_patches_list=None,
        IMG_CONTEXT_TOKEN=IMG_CONTEXT_TOKEN,
        verbose=False,
    ):
        """Answer one question about ``pixel_values`` (None for text only); the official model card's API."""
        if history is None and pixel_values is not None and "<image>" not in question:
            question = "<image>\n" + question
        if num_patches_list is None:
            num_patches_list = [pixel_values.shape[0]] if pixel_values is not None else []
        if pixel_values is not None and sum(num_patches_list) != pixel_values.shape[0]:
            raise ValueError(f"num_patches_list {num_patches_list} does not add up to {pixel_values.shape[0]} tiles")
        self.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        prompt = self.build_prompt(question, history, num_patches_list)
        if verbose:
            print(prompt.replace(IMG_CONTEXT_TOKEN * self.num_image_token, "<IMG_CONTEXT>*tile"))
        answer = self._answers(tokenizer, pixel_values, [prompt], generation_config)[0]
        history = list(history or []) + [(question, answer)]
        return (answer, history) if return_history else answer

    def batch_chat(
        self,
        tokenizer,
        pixel_values,
        questions,
        generation_config,
        num_patches_list=None,
        history=None,
        return_history=False,
        IMG_CONTEXT_TOKEN=IMG_CONTEXT_TOKEN,
    ):
        """Answer several questions at once, one image each (``num_patches_list[i]`` tiles), left-padded."""
        if history is not None or return_history:
            raise NotImplementedError("batch_chat answers fresh questions only; use chat() for multi-turn history")
        if num_patches_list is None or len(num_patches_list) != len(questions):
            raise ValueError("batch_chat needs num_patches_list with one tile count per question")
        self.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        prompts = []
        for question, num_patches in zip(questions, num_patches_list):
            if pixel_values is not None and "<image>" not in question:
                question = "<image>\n" + question
            prompts.append(self.build_prompt(question, None, [num_patches] if pixel_values is not None else []))
        return self._answers(tokenizer, pixel_values, prompts, generation_config)

    @torch.no_grad()
    def generate(self, pixel_values=None, input_ids=None, attention_mask=None, **generate_kwargs):
        """Generate new tokens for prompts whose ``<IMG_CONTEXT>`` tokens are filled with the images' features.

        Greedy or sampled answers of a known length (``max_new_tokens`` and only ``DECODE_SETTINGS``) run the
        language model's static-cache ``decode``; anything else runs transformers' ``generate``. Both return the
        new tokens only (batch, n) and choose the same tokens.
        """
        if pixel_values is not None:
            pixel_values = pixel_values.to(device=self.vision_model.device, dtype=self.vision_model.dtype)
            embeds = self.merge_image_features(input_ids, pixel_values)
        else:
            embeds = self.language_model.get_input_embeddings()(input_ids)
        if "max_new_tokens" in generate_kwargs and set(generate_kwargs) <= DECODE_SETTINGS | {"streamer"}:
            return self.language_model.decode(embeds, attention_mask, **generate_kwargs)
        return self.language_model.generate(
            inputs_embeds=embeds, attention_mask=attention_mask, use_cache=True, **generate_kwargs
        )
