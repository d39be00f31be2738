"""Lesson 02: one engine interface over LMDeploy (GPU) and the course's transformers engine (anywhere), and
OpenAI-compatible serving.

* :func:`choose_backend`, :class:`GenerationSettings`, :class:`Answer` - the interface (:mod:`.interface`);
  backends in :mod:`.transformers_engine` and :mod:`.lmdeploy_engine`, loaded by :func:`load_engine`
  (:mod:`.loader`);
* :func:`serve_openai` - a managed OpenAI-compatible server (:mod:`.serving`): LMDeploy's ``api_server`` on a GPU,
  the course's FastAPI app (:mod:`.openai_app`) over the transformers engine elsewhere;
* :mod:`.client` - the client side with the ``openai`` package.
"""

from .interface import KNOBS, Answer, Engine, GenerationSettings, choose_backend, memory_in_use
from .loader import load_engine

__all__ = ["KNOBS", "Answer", "Engine", "GenerationSettings", "choose_backend", "load_engine", "memory_in_use"]
