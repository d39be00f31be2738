"""Chat templates of InternVL2: how a conversation becomes one prompt string.

Part of the model's remote code: copied into every model folder; imports nothing outside the standard library.
InternVL2-2B uses ``internlm2-chat``: ``<|im_start|>role\\ncontent<|im_end|>`` turns, joined without newlines,
the prompt ending with ``<|im_start|>assistant\\n`` for the model to continue.
"""

import dataclasses

INTERNVL_SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)


@dataclasses.dataclass
class Conversation:
    """A conversation in one template: a system message and alternating (role, message) turns."""

    name: str
    system_template: str
    system_message: str
    roles: tuple
    sep: str
    messages: list = dataclasses.field(default_factory=list)

    def append_message(self, role: str, message) -> None:
        """Add a turn; ``message=None`` leaves the turn open for the model to write."""
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        """The prompt string: system turn, then each turn closed by ``sep``; an open last turn stays open."""
        prompt = self.system_template.format(system_message=self.system_message) + self.sep
        for role, message in self.messages:
            prompt += role + message + self.sep if message else role
        return prompt

    def copy(self) -> "Conversation":
        return dataclasses.replace(self, messages=[list(turn) for turn in self.messages])


TEMPLATES = {
    "internlm2-chat": Conversation(
        name="internlm2-chat",
        system_template="<|im_start|>system\n{system_message}",
        system_message=INTERNVL_SYSTEM_MESSAGE,
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
        sep="<|im_end|>",
    ),
}


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of the named template."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown chat template {name!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[name].copy()
