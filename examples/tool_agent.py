"""RemoteGLMTool inside LangChain's `create_agent`: a tool-calling planner hands RemoteGLM an image and a question.

The planner is any tool-calling chat model at an OpenAI-compatible endpoint (vLLM serving Qwen2.5-Instruct, or
OpenAI itself); RemoteGLM (the shipped RemoteGLM-mini unless --model says otherwise) answers inside the tool. The
agent keeps no memory here: see chat_model_memory.py and agent_subgraph.py for that.

    python examples/tool_agent.py --planner-model qwen2.5-72b-instruct --planner-base-url http://gpu-box:8001/v1 \\
        "examples/ucm_storagetanks_1991.jpg 里有储罐吗？有几个？"

Prints each tool call with its result, then the planner's answer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in a checkout

from langchain.agents import create_agent  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402

from bot.agent import AgentSettings, build_planner  # noqa: E402
from bot.tool import RemoteGLMTool  # noqa: E402

SYSTEM_PROMPT = ("You answer questions about remote-sensing images. You cannot see images yourself: ask the "
                 "remoteglm tool, with the image path the user gave, and answer from what it says.")


def main(question: str, planner_model: str = "gpt-4o-mini", planner_base_url: str | None = None,
         planner_api_key: str | None = None, model: str | None = None, images_dir: Path | None = None) -> str:
    settings = AgentSettings(planner_model=planner_model, planner_base_url=planner_base_url,
                             planner_api_key=planner_api_key, **({"model": model} if model else {}))
    # allowed_dir: the planner picks the path, so the tool reads local files only under this directory.
    tool = RemoteGLMTool.from_settings(settings, allowed_dir=images_dir or Path.cwd())
    agent = create_agent(build_planner(settings), tools=[tool], system_prompt=SYSTEM_PROMPT)
    result = agent.invoke({"messages": [HumanMessage(question)]})
    for message in result["messages"]:
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                print(f"tool call: {call['name']} {call['args']}")
        elif isinstance(message, ToolMessage):
            print(f"tool result: {message.content}")
    answer = result["messages"][-1].text
    print(f"answer: {answer}")
    return answer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", help="a question naming an image path")
    parser.add_argument("--planner-model", default="gpt-4o-mini")
    parser.add_argument("--planner-base-url", help="OpenAI-compatible endpoint of the planner")
    parser.add_argument("--planner-api-key", help="API key of the planner endpoint (default: OPENAI_API_KEY)")
    parser.add_argument("--model", help="RemoteGLM model directory or name (default: the shipped RemoteGLM-mini)")
    parser.add_argument("--images-dir", type=Path, help="local images are read only under this directory "
                                                        "(default: the current directory)")
    main(**vars(parser.parse_args()))
