"""Framework adapters.

Import ``ce_rerank_plugins.integrations.langchain`` (extra ``langchain``) or
``ce_rerank_plugins.integrations.llamaindex`` (extra ``llamaindex``); the two never import each other.
"""
