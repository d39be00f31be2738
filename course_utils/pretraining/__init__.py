"""The tiny base model's pretraining: its picture corpus (:mod:`.corpus`), its recipe (:mod:`.pretrain`, the command
``pretrain-tiny-base``) and what it learnt, measured on held-out pictures (:mod:`.evaluate`)."""

from .pretrain import register_cli

__all__ = ["register_cli"]
