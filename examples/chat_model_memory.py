"""ChatRemoteGLM with RemoteGLM's memory in a LangGraph graph: recall -> answer -> remember.

The memory is `RemoteGLMChatMessageHistory` over the project's store (SQLite in the data directory, or the
PostgreSQL at REMOTEGLM_DATABASE_URL), so every turn, image included, is in the web chat's sidebar and can be
continued there; a web-chat conversation's id continues here the same way.

    python examples/chat_model_memory.py --image examples/ucm_airplane_191.jpg "这张遥感图像展现了什么场景？"
    python examples/chat_model_memory.py --conversation <id printed above> "图中有飞机吗？"

Options: --data-dir (default: REMOTEGLM_DATA_DIR or the usual data directory), --model (default: the shipped
RemoteGLM-mini). Prints the conversation id, how much it remembered, and the answer.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import sys
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in a checkout

from langchain_core.messages import AnyMessage, HumanMessage  # noqa: E402
from langchain_core.runnables import RunnableConfig  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402

from bot.chat_model import ChatRemoteGLM  # noqa: E402
from bot.history import RemoteGLMChatMessageHistory  # noqa: E402
from settings import Settings  # noqa: E402
from storage import ConversationStore  # noqa: E402


class Turn(TypedDict, total=False):
    question: HumanMessage  # this turn's message (text, maybe an image block)
    history: list[AnyMessage]  # what the conversation said before, from the store
    answer: AnyMessage


def build_graph(llm: ChatRemoteGLM, store: ConversationStore):
    """recall (stored turns) -> answer (ChatRemoteGLM on history + question) -> remember (both turns stored)."""

    def memory(config: RunnableConfig) -> RemoteGLMChatMessageHistory:
        return RemoteGLMChatMessageHistory(store, config["configurable"]["conversation_id"])

    def recall(turn: Turn, config: RunnableConfig) -> dict[str, Any]:
        return {"history": memory(config).messages}

    def answer(turn: Turn) -> dict[str, Any]:
        return {"answer": llm.invoke([*turn["history"], turn["question"]])}

    def remember(turn: Turn, config: RunnableConfig) -> dict[str, Any]:
        memory(config).add_messages([turn["question"], turn["answer"]])
        return {}

    graph = StateGraph(Turn)
    graph.add_node("recall", recall)
    graph.add_node("answer", answer)
    graph.add_node("remember", remember)
    graph.add_edge(START, "recall")
    graph.add_edge("recall", "answer")
    graph.add_edge("answer", "remember")
    graph.add_edge("remember", END)
    return graph.compile()


def question_message(text: str, image: Path | None) -> HumanMessage:
    if image is None:
        return HumanMessage(text)
    mime = mimetypes.guess_type(image.name)[0] or "image/jpeg"
    return HumanMessage(content=[{"type": "image", "base64": base64.b64encode(image.read_bytes()).decode(),
                                  "mime_type": mime},
                                 {"type": "text", "text": text}])


def main(question: str, image: Path | None = None, conversation: str | None = None, data_dir: Path | None = None,
         model: str | None = None) -> str:
    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    store = ConversationStore.from_settings(settings)
    try:
        llm = ChatRemoteGLM(**({"model": model} if model else {}))
        conversation = conversation or RemoteGLMChatMessageHistory(store, title=question[:20]).conversation_id
        turn = build_graph(llm, store).invoke({"question": question_message(question, image)},
                                              {"configurable": {"conversation_id": conversation}})
        images = sum(isinstance(b, dict) and b.get("type") == "image"
                     for m in turn["history"] if isinstance(m.content, list) for b in m.content)
        print(f"conversation: {conversation}")
        print(f"memory: {len(turn['history'])} earlier messages, {images} images")
        print(f"answer: {turn['answer'].content}")
        return turn["answer"].content
    finally:
        store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--image", type=Path, help="a remote-sensing image for this turn")
    parser.add_argument("--conversation", help="continue this conversation id (from a run, or the web chat)")
    parser.add_argument("--data-dir", type=Path, help="RemoteGLM data directory (database and images)")
    parser.add_argument("--model", help="model directory or name (default: the shipped RemoteGLM-mini)")
    main(**vars(parser.parse_args()))
