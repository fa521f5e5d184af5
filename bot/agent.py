"""The multi-turn remote-sensing agent: a tool-calling planner that looks at the conversation's image through RemoteGLM.

Questions one model call cannot answer (a 6000 x 6000 scene, "哪几块区域有储罐？", "放大左上角再看", "这张图的坐标系是什么？")
are planned by any tool-calling chat model (`AgentSettings.planner_*`: an OpenAI-compatible endpoint, e.g. vLLM
serving Qwen2.5-Instruct, or any `init_chat_model` name) built with LangChain's `create_agent`. Its tools work on
the conversation's latest image: `image_info`, `ask_image` (whole view or a box), `zoom` (set / reset the view),
`ask_tiles` (split the view into tiles and ask each), `land_use_map` (a land-use class per tile of the whole
scene, `bot/landuse.py`). RemoteGLM itself is the `ChatBackend` from settings.

Turns are stored like any conversation (user message with its image, assistant answer), so they appear in the web
chat's sidebar. The planner's own thread (questions, tool calls, tool results, answers) is kept by a LangGraph
checkpointer on the same database (`bot/agent_thread.py`), thread_id = conversation id:
`langgraph-checkpoint-sqlite` in the store's SQLite file (its own `checkpoints` / `writes` tables beside the
store's), `langgraph-checkpoint-postgres` on the store's PostgreSQL URL. A restarted process or another replica
continues the thread with its earlier tool calls; turns typed in the web chat in between are added to the thread on
the next agent turn. The full-resolution scene, its metadata and the current view live in the conversation's
settings under "agent".

    agent = RemoteSensingAgent.from_settings(AgentSettings(planner_model="qwen2.5-72b-instruct",
                                                           planner_base_url="http://gpu-box:8001/v1"))
    conv = agent.start()
    agent.send(conv.id, "哪几块区域有储罐？", image=Path("port.tif").read_bytes()).text
    agent.send(conv.id, "放大第一块，数一数有几个储罐。").text
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain.agents import create_agent
from langchain.tools import ToolRuntime, tool
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, ToolException
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphRecursionError
from PIL import Image
from pydantic import Field, SecretStr

from bot.agent_thread import (ANSWER_ID, MESSAGE_ID, STATE_KEY, close_checkpointer, message_refs, open_checkpointer,
                              thread_config, thread_question)
from bot.scene import describe_metadata
from bot.service import TITLE_CHARS, ServiceError, clean_question
from imagery import downscale, load_image
from imagery.geotiff import map_bounds, rescaled
from imagery.probe import read_metadata
from imagery.tiles import Box, resolve_box, split_box
from model_adapter import ChatBackend, ChatMessage, GenerationParams, load_backend
from settings import Settings
from storage import ConversationStore, ConversationView, ImageRef
from storage.images import ImageStore

log = logging.getLogger(__name__)

# Keys of a thread message's additional_kwargs: the stored message it stands for, its images, the stored answer.
TILE_BATCH = 4  # tiles per generate_batch call: bounds activation memory on a local model

SYSTEM_PROMPT = """你是遥感图像分析助手。You are a remote-sensing image analyst.
You cannot see the image yourself: look at it only through the tools, which ask RemoteGLM, a vision-language
model for satellite and aerial images. Never guess what the image shows without a tool result.
- image_info: size, bands, georeferencing (CRS, pixel size, bounds) and the current view.
- ask_image: one question about the current view, or about a box.
- zoom: make a box the current view (later questions and tiles use it); zoom with no box returns to the scene.
- ask_tiles: split the current view into tiles and ask each tile the same question; use it for large scenes and
  for "where / which areas" questions (e.g. 哪几块区域有储罐？ -> ask_tiles("图中有储罐吗？")).
Boxes are [x0, y0, x1, y1] in pixels of the full scene, or fractions 0..1 of it ([0, 0, 0.5, 0.5] = top-left
quarter). Ask RemoteGLM short, concrete questions. Answer in the user's language and name the tiles or boxes
your answer rests on."""


class AgentSettings(Settings):
    """Settings plus the agent's planner and tiling (REMOTEGLM_PLANNER_MODEL, ...)."""

    planner_model: str = "gpt-4o-mini"
    """Tool-calling chat model that plans the agent's steps: a model name served at planner_base_url, or any
    LangChain `init_chat_model` id such as 'openai:gpt-4o-mini' or 'anthropic:claude-sonnet-4-5'."""

    planner_base_url: str | None = None
    """OpenAI-compatible endpoint of the planner (vLLM serving a tool-calling instruct model). Unset: the
    provider's own endpoint."""

    planner_api_key: SecretStr | None = None
    """API key for the planner endpoint. Unset: the provider's environment variable (OPENAI_API_KEY...)."""

    planner_temperature: float = Field(0.0, ge=0.0)
    """Planner sampling temperature; 0 keeps its plans repeatable."""

    agent_max_steps: int = Field(12, ge=1)
    """Most planner / tool rounds in one turn before the agent gives up with a message."""

    tile_size: int = Field(512, ge=32)
    """Side in scene pixels of the tiles ask_tiles cuts (grown when the view would need more than max_tiles)."""

    max_tiles: int = Field(16, ge=1)
    """Most tiles one ask_tiles call may ask about."""

    scene_max_pixels: int = Field(36_000_000, ge=28 * 28)
    """Scenes the agent tiles are kept up to this many pixels (6000 x 6000); the chat view is max_image_pixels."""

    agent_checkpoint_url: str | None = None
    """Database of the agent's LangGraph threads (REMOTEGLM_AGENT_CHECKPOINT_URL): a sqlite:/// or postgresql:// URL.
    Unset: the conversation store's own database (database_url), so one file or server holds everything."""


def build_planner(settings: AgentSettings) -> BaseChatModel:
    """The planner chat model named by settings (it must support tool calling)."""
    from langchain.chat_models import init_chat_model

    kwargs: dict[str, Any] = {"temperature": settings.planner_temperature}
    if settings.planner_base_url:
        kwargs["base_url"] = settings.planner_base_url
    if settings.planner_api_key is not None:
        kwargs["api_key"] = settings.planner_api_key.get_secret_value()
    provider = None if ":" in settings.planner_model else "openai"
    return init_chat_model(settings.planner_model, model_provider=provider, **kwargs)


@dataclass
class AgentContext:
    """What the tools of one run know: whose image they look at."""

    conversation_id: str


@dataclass
class SceneState:
    """The agent's view of a conversation's latest image, stored in conversation.settings['agent']."""

    image_sha256: str  # the image of the user message it came with
    path: str  # full-resolution scene, relative to the image directory
    width: int
    height: int
    metadata: dict[str, Any]
    view: list[int] | None = None  # the zoomed box, None = whole scene


@dataclass
class AgentStep:
    tool: str
    args: dict[str, Any]
    result: str
    call_id: str = ""


@dataclass
class AgentReply:
    conversation_id: str
    message_id: int
    text: str
    status: str  # 'complete' | 'error'
    steps: list[AgentStep] = field(default_factory=list)
    error: str | None = None


@dataclass
class AgentEvent:
    """One step of an agent turn: 'user' (question stored), 'step' (a tool finished), 'done' / 'error'."""

    kind: Literal["user", "step", "done", "error"]
    conversation_id: str
    message_id: int
    step: AgentStep | None = None
    reply: AgentReply | None = None


class RemoteSensingAgent:
    """The agent over one store; `checkpointer` defaults to one opened on the store's database (closed by close())."""

    def __init__(self, planner: BaseChatModel, backend: ChatBackend, store: ConversationStore,
                 settings: AgentSettings | None = None, params: GenerationParams | None = None,
                 checkpointer: BaseCheckpointSaver | None = None):
        self.planner = planner
        self.backend = backend
        self.store = store
        self.settings = settings or AgentSettings()
        self.params = params or GenerationParams()
        self.image_root = store.images.root
        self.scenes = ImageStore(self.image_root / "scenes", self.settings.scene_max_pixels)
        self._open: OrderedDict[str, Image.Image] = OrderedDict()  # a few decoded scenes, most recent last
        self._owns_checkpointer = checkpointer is None
        self.checkpointer = checkpointer or open_checkpointer(
            self.settings.agent_checkpoint_url or store.engine.url.render_as_string(hide_password=False))
        self.graph = create_agent(planner, tools=self.tools(), system_prompt=SYSTEM_PROMPT,
                                  context_schema=AgentContext, checkpointer=self.checkpointer)

    def subgraph(self, name: str = "remote_sensing"):
        """The planner and its tools as a graph to embed as a node of a larger LangGraph graph (examples/
        agent_subgraph.py). It has no checkpointer of its own: the parent's persists the thread. Invoke the parent
        with context=AgentContext(conversation_id) so the tools know whose image to look at."""
        return create_agent(self.planner, tools=self.tools(), system_prompt=SYSTEM_PROMPT,
                            context_schema=AgentContext, name=name)

    def close(self) -> None:
        """Close the checkpointer this agent opened (not the store, nor a checkpointer passed in)."""
        if self._owns_checkpointer:
            close_checkpointer(self.checkpointer)

    def __enter__(self) -> RemoteSensingAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> RemoteSensingAgent:
        return cls(build_planner(settings), load_backend(settings), ConversationStore.from_settings(settings),
                   settings)

    # --- conversations --------------------------------------------------------------------------------------------
    def start(self, title: str = "") -> ConversationView:
        return self.store.create(title=title, model=f"agent:{self.backend.model_name}", settings={STATE_KEY: {}})

    def attach_image(self, conversation_id: str, image: bytes | str | Path, image_name: str | None = None) -> ImageRef:
        """Store an image for the conversation's next user message and make it the agent's scene (kept at full
        resolution for tiles, with its GeoTIFF metadata). Raises ImageError for something that is not an image."""
        conv = self.store.get(conversation_id)
        ref = self.store.add_image(image, image_name)
        self._save_scene(conversation_id, conv, self._new_scene(ref, image, _metadata(image)))
        return ref

    def delete(self, conversation_id: str) -> None:
        """Delete the conversation (messages, images no other message uses) and its agent thread."""
        self.store.delete(conversation_id)
        self.checkpointer.delete_thread(conversation_id)

    def thread(self, conversation_id: str) -> list[AnyMessage]:
        """The planner's checkpointed thread: every question, tool call, tool result and answer so far.

        The last committed checkpoint, without the pending writes of a step that was stopped (graph.get_state shows
        those, but a new turn's input discards them)."""
        saved = self.checkpointer.get_tuple(thread_config(conversation_id))
        return list(saved.checkpoint["channel_values"].get("messages", [])) if saved else []

    def send(self, conversation_id: str, text: str, image: bytes | str | Path | None = None,
             image_name: str | None = None) -> AgentReply:
        """One blocking agent turn (see `stream`); returns the stored answer with the steps that led to it."""
        reply = None
        for event in self.stream(conversation_id, text, image, image_name):
            reply = event.reply or reply
        assert reply is not None
        return reply

    def stream(self, conversation_id: str, text: str, image: bytes | str | Path | None = None,
               image_name: str | None = None) -> Iterator[AgentEvent]:
        """One agent turn: store the question (and image), plan and call tools, store the answer.

        Yields 'user' (question stored), one 'step' per finished tool call (for a progress display), then 'done'
        or 'error' with the `AgentReply`. Raises ServiceError / ImageError / NotFound before storing anything
        when the input is unusable; closing the iterator early keeps the turn as 'interrupted'."""
        text = clean_question(text, self.settings.max_question_chars, image_given=True)
        if not text:  # unlike a chat turn, an agent turn needs a question even with an image
            raise ServiceError("请输入问题 (please type a question)")
        conv = self.store.get(conversation_id)
        # ImageError here, before any message is stored
        images = [] if image is None else [self.attach_image(conversation_id, image, image_name)]
        config = {**thread_config(conversation_id), "recursion_limit": 2 * self.settings.agent_max_steps + 1}
        catch_up = self._catch_up(conv, self.thread(conversation_id))
        user = self.store.append_message(conversation_id, "user", text, images)
        if not conv.title:
            self.store.rename(conversation_id, text[:TITLE_CHARS])
        yield AgentEvent("user", conversation_id, user.id)
        answer = self.store.append_message(conversation_id, "assistant", "", status="streaming")
        question = thread_question(self._with_state_note(conversation_id, text, bool(images)), user.id, answer.id,
                                   images)
        started = time.perf_counter()
        new: list[AnyMessage] = []
        finished = False
        updates = None

        def elapsed_ms() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            updates = self.graph.stream({"messages": catch_up + [question]}, context=AgentContext(conversation_id),
                                        config=config, stream_mode="updates")
            for update in updates:
                for value in update.values():
                    for message in value.get("messages", []) if isinstance(value, dict) else []:
                        new.append(message)
                        if isinstance(message, ToolMessage):
                            step = next(s for s in _steps(new) if s.call_id == message.tool_call_id)
                            yield AgentEvent("step", conversation_id, answer.id, step=step)
            if not (new and isinstance(new[-1], AIMessage) and not new[-1].tool_calls):
                raise RuntimeError("the planner stopped without an answer")
        except Exception as exc:  # noqa: BLE001 - a failed turn is stored as an error, like a failed chat turn
            log.exception("agent turn failed in conversation %s", conversation_id)
            reason = (f"步骤过多，已停止 (gave up after {self.settings.agent_max_steps} steps)"
                      if isinstance(exc, GraphRecursionError) else f"智能体失败 (agent failed): {exc}")
            self.store.update_message(answer.id, status="error", error=reason[:2000], latency_ms=elapsed_ms())
            finished = True
            yield AgentEvent("error", conversation_id, answer.id, reply=AgentReply(
                conversation_id, answer.id, "", "error", steps=_steps(new), error=reason))
            return
        finally:
            if updates is not None:
                updates.close()  # stops the graph at once when our consumer went away
            if not finished and not (new and isinstance(new[-1], AIMessage) and not new[-1].tool_calls):
                # The consumer closed the stream mid-turn (stop button, disconnect).
                self.store.update_message(answer.id, status="interrupted", latency_ms=elapsed_ms())
        final = _text(new[-1])
        self.store.update_message(answer.id, text=final, status="complete", latency_ms=elapsed_ms())
        yield AgentEvent("done", conversation_id, answer.id, reply=AgentReply(
            conversation_id, answer.id, final, "complete", steps=_steps(new)))

    @staticmethod
    def planner_messages(conv: ConversationView, after: int = 0) -> list[AnyMessage]:
        """Stored turns (message id > after) as the planner sees them: text turns, images as short notes."""
        messages: list[AnyMessage] = []
        for m in conv.messages:
            if m.id <= after:
                continue
            if m.role == "user":
                notes = [f"[用户上传了图像 uploaded an image {r.width}×{r.height}]" for r in m.images]
                messages.append(HumanMessage("\n".join(notes + [m.text]),
                                             additional_kwargs=message_refs(m.id, m.images)))
            elif m.role == "assistant" and m.status == "complete" and m.text:
                messages.append(AIMessage(m.text, additional_kwargs=message_refs(m.id, [])))
        return messages

    def _catch_up(self, conv: ConversationView, thread: list[AnyMessage]) -> list[AnyMessage]:
        """What the checkpointed thread lacks before this turn's question.

        A new thread (a conversation begun in the web chat, or before checkpoints) starts from the stored turns.
        An existing one gets the turns stored after the last stored message it knows (its messages carry their
        store ids: turns typed in the web chat since), after results for tool calls a stopped turn left
        unanswered (an OpenAI-style planner refuses a call without its result)."""
        if not thread:
            return self.planner_messages(conv)
        answered = {m.tool_call_id for m in thread if isinstance(m, ToolMessage)}
        patched: list[AnyMessage] = [
            ToolMessage("工具调用被中断 (interrupted before this tool finished)", tool_call_id=call["id"],
                        name=call["name"], status="error")
            for m in thread if isinstance(m, AIMessage) for call in m.tool_calls if call["id"] not in answered]
        upto = max((m.additional_kwargs.get(key, 0) for m in thread for key in (MESSAGE_ID, ANSWER_ID)), default=0)
        return patched + self.planner_messages(conv, after=upto)

    # --- scene state ----------------------------------------------------------------------------------------------
    def _new_scene(self, ref: ImageRef, image: bytes, metadata: dict[str, Any]) -> SceneState:
        width, height = metadata.get("width", ref.width), metadata.get("height", ref.height)
        if width * height > ref.width * ref.height:  # the chat copy was downscaled: keep the detail for tiles
            record, _ = self.scenes.put(image)
            path, width, height = f"scenes/{record.filename}", record.width, record.height
        else:
            path, width, height = ref.filename, ref.width, ref.height
        metadata = metadata or {"width": width, "height": height, "bands": 3}
        if metadata.get("geo") and (width, height) != (metadata["width"], metadata["height"]):
            # Boxes are in the kept scene's pixels: scale the pixel -> map transform to them.
            geo = rescaled(metadata["geo"], metadata["width"] / width, metadata["height"] / height)
            metadata = {**metadata, "geo": geo}
        return SceneState(ref.sha256, path, width, height, metadata)

    @staticmethod
    def _scene_state(conv: ConversationView) -> SceneState | None:
        state = conv.settings.get(STATE_KEY) or {}
        return SceneState(**state["scene"]) if state.get("scene") else None

    @staticmethod
    def _latest_image(conv: ConversationView) -> ImageRef | None:
        refs = [r for m in conv.messages if m.role == "user" for r in m.images]
        return refs[-1] if refs else None

    def _save_scene(self, conversation_id: str, conv: ConversationView, scene: SceneState) -> None:
        state = {**(conv.settings.get(STATE_KEY) or {}), "scene": asdict(scene)}
        self.store.update_settings(conversation_id, {**conv.settings, STATE_KEY: state})

    def scene(self, conversation_id: str) -> tuple[SceneState, Image.Image]:
        """The conversation's current scene and its full-resolution image (a chat-only image works too)."""
        conv = self.store.get(conversation_id)
        state = self._scene_state(conv)
        latest = self._latest_image(conv)
        if state is None or (latest is not None and latest.sha256 != state.image_sha256):
            if latest is None:
                raise ToolException("这个对话里还没有图像 (no image in this conversation yet): ask the user for one")
            # An image that arrived through the plain chat: the stored copy is the scene.
            state = SceneState(latest.sha256, latest.filename, latest.width, latest.height,
                               {"width": latest.width, "height": latest.height, "bands": 3})
            self._save_scene(conversation_id, conv, state)
        if state.path not in self._open:
            self._open[state.path] = load_image(self.image_root / state.path, self.settings.scene_max_pixels)
            while len(self._open) > 2:
                self._open.popitem(last=False)
        self._open.move_to_end(state.path)
        return state, self._open[state.path]

    def set_view(self, conversation_id: str, view: Box | None) -> None:
        conv = self.store.get(conversation_id)
        state = dict(conv.settings.get(STATE_KEY) or {})
        state["scene"] = {**state["scene"], "view": list(view) if view else None}
        self.store.update_settings(conversation_id, {**conv.settings, STATE_KEY: state})

    def _with_state_note(self, conversation_id: str, text: str, new_image: bool) -> str:
        try:
            state, _ = self.scene(conversation_id)
        except ToolException:
            return text
        view = f", 当前视图 view {state.view}" if state.view else ""
        fresh = "新" if new_image else "当前"
        return f"{text}\n\n[{fresh}图像 {'new' if new_image else 'current'} image: {state.width}×{state.height} px{view}]"

    # --- asking RemoteGLM ---------------------------------------------------------------------------------------------
    def _region(self, image: Image.Image, box: Box) -> Image.Image:
        return downscale(image.crop(box), self.settings.max_image_pixels)

    def _ask(self, image: Image.Image, boxes: list[Box], question: str) -> list[str]:
        answers = []
        for start in range(0, len(boxes), TILE_BATCH):
            batch = [[ChatMessage("user", question, [self._region(image, box)])]
                     for box in boxes[start:start + TILE_BATCH]]
            answers += [c.text.strip() for c in self.backend.generate_batch(batch, self.params)]
        return answers

    def _box(self, state: SceneState, box: list[float] | None) -> Box:
        try:
            return resolve_box(box, state.width, state.height) if box is not None else \
                tuple(state.view or (0, 0, state.width, state.height))
        except ValueError as exc:
            raise ToolException(str(exc)) from exc

    def _where(self, state: SceneState, box: Box) -> str:
        geo = state.metadata.get("geo")
        if not geo:
            return f"box {list(box)}"
        return f"box {list(box)} (map {[round(v, 6) for v in map_bounds(geo, box)]})"

    # --- tools -------------------------------------------------------------------------------------------------------
    def tools(self) -> list[BaseTool]:
        agent = self

        @tool(parse_docstring=True)
        def image_info(runtime: ToolRuntime[AgentContext]) -> str:
            """Size, bands, georeferencing (CRS, pixel size, bounds) and current view of the conversation's image."""
            state, _ = agent.scene(runtime.context.conversation_id)
            view = f"当前视图 current view: box {state.view}" if state.view else "当前视图 current view: 整幅 whole scene"
            lines = [describe_metadata(state.metadata)]
            if (state.width, state.height) != (state.metadata.get("width"), state.metadata.get("height")):
                lines.append(f"分析用图像 analysed at {state.width}×{state.height} px; boxes use these pixels")
            return "\n".join(lines + [view])

        @tool(parse_docstring=True)
        def ask_image(question: str, runtime: ToolRuntime[AgentContext], box: list[float] | None = None) -> str:
            """Ask RemoteGLM one question about the current view, or about a box of the scene.

            Args:
                question: A short question in Chinese or English, e.g. "图中有储罐吗？".
                box: Optional [x0, y0, x1, y1] in scene pixels or fractions 0..1; omitted = the current view.
            """
            state, image = agent.scene(runtime.context.conversation_id)
            region = agent._box(state, box)
            return f"[{agent._where(state, region)}] {agent._ask(image, [region], question)[0]}"

        @tool(parse_docstring=True)
        def zoom(runtime: ToolRuntime[AgentContext], box: list[float] | None = None) -> str:
            """Make a box the current view, so later ask_image / ask_tiles calls look only at it (also in later turns).

            Args:
                box: [x0, y0, x1, y1] in scene pixels or fractions 0..1 of the whole scene; omitted = back to the
                    whole scene.
            """
            state, _ = agent.scene(runtime.context.conversation_id)
            view = agent._box(state, box) if box is not None else None
            agent.set_view(runtime.context.conversation_id, view)
            if view is None:
                return f"视图已恢复为整幅图像 view reset to the whole scene ({state.width}×{state.height} px)"
            return f"视图已设为 view set to {agent._where(state, view)}, {view[2] - view[0]}×{view[3] - view[1]} px"

        @tool(parse_docstring=True)
        def ask_tiles(question: str, runtime: ToolRuntime[AgentContext], rows: int | None = None,
                      cols: int | None = None) -> str:
            """Split the current view into tiles and ask RemoteGLM the same question about each tile.

            Args:
                question: A yes/no or short question, e.g. "图中有储罐吗？" or "Are there ships?".
                rows: Optional number of tile rows (with cols); omitted = tiles of the configured size.
                cols: Optional number of tile columns.
            """
            state, image = agent.scene(runtime.context.conversation_id)
            view = agent._box(state, None)
            try:
                grid = split_box(view, agent.settings.tile_size, agent.settings.max_tiles, rows, cols)
            except ValueError as exc:
                raise ToolException(str(exc)) from exc
            answers = agent._ask(image, [box for _, _, box in grid], question)
            n_rows, n_cols = grid[-1][0], grid[-1][1]
            lines = [f"共 {len(grid)} 块 tiles ({n_rows} 行 rows × {n_cols} 列 cols), 行列从左上角数起 counted from the top-left:"]
            lines += [f"[r{r}c{c}] {agent._where(state, box)}: {answer}" for (r, c, box), answer in zip(grid, answers)]
            return "\n".join(lines)

        @tool(parse_docstring=True)
        def land_use_map(runtime: ToolRuntime[AgentContext], question: str = "") -> str:
            """Classify every ~77 m tile of the whole scene into 21 land-use classes (a batched scene classifier,
            no text generation) and return the class shares; with a question such as "哪里有储罐？" or
            "港口占多大面积？", also the tiles or the area of that class. Computed once per scene.

            Args:
                question: Optional where / area question about one land-use class.
            """
            from bot.landuse_store import agent_map_text, classifier_for

            state, _ = agent.scene(runtime.context.conversation_id)
            geo = state.metadata.get("geo") or {}
            gsd = sum(geo["pixel_size"]) / 2 if geo.get("model_type") == "projected" else None  # metres assumed
            return agent_map_text(agent.store, runtime.context.conversation_id, state.image_sha256,
                                  agent.image_root / state.path, classifier_for(agent.backend), gsd, question)

        tools = [image_info, ask_image, zoom, ask_tiles, land_use_map]
        for t in tools:
            t.handle_tool_error = True  # a bad box or a missing image goes back to the planner as text
        return tools


def _metadata(image: Any) -> dict[str, Any]:
    """Metadata of the original upload (GeoTIFF tags survive only there); {} when it cannot be read."""
    try:
        data = bytes(image) if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
        return read_metadata(data)
    except Exception:  # noqa: BLE001 - metadata is a bonus; the image itself was already accepted
        log.warning("cannot read image metadata", exc_info=True)
        return {}


def _text(message: AIMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(b if isinstance(b, str) else b.get("text", "") for b in message.content)


def _steps(messages: list[AnyMessage]) -> list[AgentStep]:
    results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    return [
        AgentStep(call["name"], call["args"], str(results[call["id"]].content) if call["id"] in results else "",
                  call["id"])
        for m in messages if isinstance(m, AIMessage) for call in m.tool_calls
    ]


__all__ = ["AgentContext", "AgentEvent", "AgentReply", "AgentSettings", "AgentStep", "RemoteSensingAgent", "SceneState",
           "build_planner", "close_checkpointer", "open_checkpointer", "thread_question"]
