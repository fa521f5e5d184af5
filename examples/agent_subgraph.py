"""The remote-sensing agent as a subgraph: a larger LangGraph graph runs RemoteSensingAgent's planner and tools as one
node, then its own report node, and keeps the whole thread with the agent's checkpointer.

    python examples/agent_subgraph.py --planner-model qwen2.5-72b-instruct --planner-base-url http://gpu-box:8001/v1 \\
        --image examples/ucm_storagetanks_1991.jpg "哪几块区域有储罐？"
    python examples/agent_subgraph.py --planner-base-url ... --conversation <id printed above> "放大第一块看看。"

The parent graph is compiled with the agent's checkpointer (the store's database: the SQLite file in the data
directory, or REMOTEGLM_DATABASE_URL), thread_id = the conversation id, so a second run continues the thread with
the earlier tool calls, and `RemoteSensingAgent.send` or the web chat can continue it too. Each turn is stored in
the conversation, so it appears in the web chat's sidebar. Prints the tool calls, the report and the conversation id.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in a checkout

from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402

from bot.agent import AgentContext, AgentSettings, RemoteSensingAgent, thread_question  # noqa: E402


class Turn(MessagesState):
    report: str  # what this graph adds after the agent: the answer with the tools it rests on


def build_graph(agent: RemoteSensingAgent):
    """START -> remote_sensing (the agent's planner + tools, a subgraph) -> report -> END, checkpointed."""

    def report(turn: Turn) -> dict[str, Any]:
        since = max(i for i, m in enumerate(turn["messages"]) if isinstance(m, HumanMessage))
        tools = [c["name"] for m in turn["messages"][since:] if isinstance(m, AIMessage) for c in m.tool_calls]
        return {"report": f"{turn['messages'][-1].text}\n(依据 based on: {', '.join(tools) or '无工具 no tools'})"}

    graph = StateGraph(Turn, context_schema=AgentContext)
    graph.add_node("remote_sensing", agent.subgraph())
    graph.add_node("report", report)
    graph.add_edge(START, "remote_sensing")
    graph.add_edge("remote_sensing", "report")
    graph.add_edge("report", END)
    return graph.compile(checkpointer=agent.checkpointer)


def main(question: str, image: Path | None = None, conversation: str | None = None,
         planner_model: str = "gpt-4o-mini", planner_base_url: str | None = None, planner_api_key: str | None = None,
         data_dir: Path | None = None) -> str:
    settings = AgentSettings(planner_model=planner_model, planner_base_url=planner_base_url,
                             planner_api_key=planner_api_key, **({"data_dir": data_dir} if data_dir else {}))
    with RemoteSensingAgent.from_settings(settings) as agent:
        conversation = conversation or agent.start(title=question[:20]).id
        images = [agent.attach_image(conversation, image, image.name)] if image else []
        # Stored like an agent turn, so the web chat's sidebar shows it and the thread knows both stored messages.
        user = agent.store.append_message(conversation, "user", question, images)
        answer = agent.store.append_message(conversation, "assistant", "", status="streaming")
        turn = build_graph(agent).invoke(
            {"messages": [thread_question(question, user.id, answer.id, images)]},
            context=AgentContext(conversation),
            config={"configurable": {"thread_id": conversation}, "recursion_limit": 2 * settings.agent_max_steps + 4})
        agent.store.update_message(answer.id, text=turn["messages"][-1].text, status="complete")
        agent.store.close()
    since = max(i for i, m in enumerate(turn["messages"]) if isinstance(m, HumanMessage))
    for message in turn["messages"][since:]:
        for call in getattr(message, "tool_calls", None) or []:
            print(f"tool call: {call['name']} {call['args']}")
    print(f"conversation: {conversation}")
    print(f"report: {turn['report']}")
    return turn["report"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--image", type=Path, help="a remote-sensing image (JPEG, PNG, GeoTIFF) for this turn")
    parser.add_argument("--conversation", help="continue this conversation id")
    parser.add_argument("--planner-model", default="gpt-4o-mini")
    parser.add_argument("--planner-base-url", help="OpenAI-compatible endpoint of the tool-calling planner")
    parser.add_argument("--planner-api-key", help="API key of the planner endpoint (default: OPENAI_API_KEY)")
    parser.add_argument("--data-dir", type=Path, help="RemoteGLM data directory (database and images)")
    main(**vars(parser.parse_args()))
