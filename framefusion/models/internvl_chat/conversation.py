"""InternVL's conversation templates (config.json "template"), as the published chat code renders them.

Facts from OpenGVLab/InternVL `internvl_chat/internvl/conversation.py` (commit 22839cef, 2024-12-17, the InternVL2.5
release). Every InternVL2 / 2.5 template is of the "MPT" separator style:
    system_template(system_message) + sep, then per message role + text + sep, and the open assistant role last.
"""

from __future__ import annotations

from dataclasses import dataclass

_SYSTEM_V2 = ("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
              "是一个有用无害的人工智能助手。")
_SYSTEM_V2_5 = ("你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
                "多模态大语言模型。")
_CHATML_ROLES = ("<|im_start|>user\n", "<|im_start|>assistant\n")


@dataclass(frozen=True)
class Template:
    """One MPT-style conversation template."""

    name: str
    system_template: str  # with "{system_message}"
    system_message: str
    roles: tuple[str, str]  # (user, assistant) prefixes
    sep: str  # after the system prompt and after every message

    @property
    def stop_token(self) -> str:
        """The token that ends an answer (the chat code stops at sep without surrounding whitespace)."""
        return self.sep.strip()

    def render(self, turns: list[tuple[str, str | None]], system_message: str | None = None) -> str:
        """The prompt for (role index 0 user / 1 assistant, text) turns; a None text leaves that role open."""
        system = self.system_message if system_message is None else system_message
        prompt = self.system_template.format(system_message=system) + self.sep
        for role, text in turns:
            prompt += self.roles[role] + text + self.sep if text else self.roles[role]
        return prompt


TEMPLATES = {
    "internvl2_5": Template("internvl2_5", "<|im_start|>system\n{system_message}", _SYSTEM_V2_5, _CHATML_ROLES,
                            "<|im_end|>\n"),
    "internlm2-chat": Template("internlm2-chat", "<|im_start|>system\n{system_message}", _SYSTEM_V2, _CHATML_ROLES,
                               "<|im_end|>"),
    "Hermes-2": Template("Hermes-2", "<|im_start|>system\n{system_message}", _SYSTEM_V2, _CHATML_ROLES, "<|im_end|>"),
}


def get_template(name: str | None) -> Template:
    """The template of a config's "template" name, or a ValueError listing the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown InternVL conversation template {name!r}; known: {', '.join(TEMPLATES)}") from None
