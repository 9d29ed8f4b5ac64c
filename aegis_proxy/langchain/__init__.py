"""LangChain's side of aegis_proxy: ``ChatAegis``, a chat model whose every call goes
through an ``AegisLLMProxy``.

``chat`` is the model; ``messages`` turns LangChain messages into OpenAI chat messages and
back; ``structured`` is ``with_structured_output`` over JSON schemas.
"""

from aegis_proxy.langchain.chat import ChatAegis

__all__ = ["ChatAegis"]
