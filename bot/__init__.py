"""RemoteGLM's conversation layer: the LangChain chat model, the conversation service, tools and agent.

Above `model_adapter/` and `storage/`, below the UI, CLI and API server.
"""
