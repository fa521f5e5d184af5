"""A scripted tool-calling planner behind the real OpenAI chat-completions protocol, served over HTTP.

The agent and the examples reach it through `langchain_openai.ChatOpenAI` (`build_planner` with planner_base_url), so
requests, tool calls and tool results cross a real HTTP connection in OpenAI's JSON. Each step of the script is a
reply message dict, or a function of the request's messages that returns one:

    with FakePlanner([tool_call("ask_image", question="图中有储罐吗？"),
                      lambda messages: {"content": "结果：" + last_tool_result(messages)}]) as planner:
        build_planner(AgentSettings(planner_model=FakePlanner.MODEL, planner_base_url=planner.url, ...))

Like OpenAI it refuses (400) a conversation where an assistant tool call has no tool result after it, and a
request for a model it does not serve. `requests` keeps every request body for assertions.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.server.running import RunningServer

Step = dict[str, Any] | Callable[[list[dict[str, Any]]], dict[str, Any]]
_ids = itertools.count(1)


def tool_call(name: str, **args: Any) -> dict[str, Any]:
    """A reply that calls one tool."""
    return tool_calls((name, args))


def tool_calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A reply that calls several tools at once."""
    return {"content": None, "tool_calls": [
        {"id": f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        for name, args in calls]}


def last_tool_result(messages: list[dict[str, Any]]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "tool")


def last_user_text(messages: list[dict[str, Any]]) -> str:
    content = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def protocol_error(messages: list[dict[str, Any]]) -> str | None:
    """OpenAI's rule: each assistant tool call is answered by a tool message before the next non-tool message."""
    pending: set[str] = set()
    for m in messages:
        if m["role"] == "tool":
            pending.discard(m.get("tool_call_id"))
            continue
        if pending:
            return ("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                    f"'tool_call_id'. The following tool_call_ids did not have response messages: {sorted(pending)}")
        if m["role"] == "assistant":
            pending = {c["id"] for c in m.get("tool_calls") or []}
    return None


class FakePlanner:
    MODEL = "fake-planner"

    def __init__(self, steps: list[Step]):
        self.steps = list(steps)
        self.requests: list[dict[str, Any]] = []
        app = FastAPI()
        app.post("/v1/chat/completions")(self._complete)
        self.server = RunningServer(app)

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> FakePlanner:
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)

    async def _complete(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        if body.get("model") != self.MODEL:
            return _error(404, f"The model `{body.get('model')}` does not exist", "model_not_found")
        problem = protocol_error(body["messages"])
        if problem:
            return _error(400, problem, None, "messages")
        if not self.steps:
            return _error(500, "the fake planner's script is used up", None)
        step = self.steps.pop(0)
        message = {"role": "assistant", "content": None, **(step(body["messages"]) if callable(step) else step)}
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        if body.get("stream"):
            return StreamingResponse(_sse(body["model"], message, finish), media_type="text/event-stream")
        return {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def _error(status: int, message: str, code: str | None, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": code}}, status)


def _sse(model: str, message: dict[str, Any], finish: str):
    base = {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
    for choice in ({"index": 0, "delta": delta, "finish_reason": None},
                   {"index": 0, "delta": {}, "finish_reason": finish}):
        yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
    yield "data: [DONE]\n\n"
