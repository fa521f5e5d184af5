"""The terminal chat, like the original RemoteGLM `cli_demo.py`: an image path, then questions; answers stream.

    python app.py cli                         # asks for an image path, then for questions
    python app.py cli --image scene.jpg       # starts with that image
    python app.py cli --conversation ID       # resumes a stored conversation (the web chat's too)

Commands at the question prompt: `clear` starts a new conversation (and asks for an image again), `history`
prints the stored conversation, `image PATH` attaches a new image to the next question, `/tiles PATH [--gsd M]`
makes a land-use map of a large image or GeoTIFF (`ui/landuse.py`; later "哪里有储罐？" is answered from it),
`stop` (or Ctrl+D) quits. Ctrl+C while an answer streams stops it and keeps the partial answer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bot.service import (ConversationService, ImageError, NotFound, ServiceBusy, ServiceError, StorageError,
                         load_image)
from ui.chat_view import message_text
from ui.i18n import t
from ui.landuse import map_answer_command, tiles_command

USER_ERRORS = (ServiceError, ImageError, NotFound, StorageError)


@dataclass
class CliState:
    conversation_id: str | None = None
    image: bytes | None = None  # attached to the next question
    image_name: str | None = None
    lang: str = "zh"
    done: bool = False


class TerminalChat:
    def __init__(self, service: ConversationService, lang: str = "zh", input_fn: Callable[[str], str] = input,
                 out: TextIO | None = None):
        self.service = service
        self.state = CliState(lang=lang)
        self.input = input_fn
        self.out = out or sys.stdout
        self.commands: dict[str, Callable[[str], None]] = {
            "stop": self.quit, "exit": self.quit, "quit": self.quit, "clear": self.clear,
            "history": self.history, "image": self.attach, "/tiles": lambda rest: tiles_command(self, rest),
        }

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    # --- commands ---------------------------------------------------------------------------------------------------
    def quit(self, _: str = "") -> None:
        self.state.done = True
        if self.state.conversation_id:
            self.say(t(self.state.lang, "cli_bye", id=self.state.conversation_id))

    def clear(self, _: str = "") -> None:
        self.state.conversation_id = None
        self.state.image = self.state.image_name = None
        self.say(t(self.state.lang, "cli_cleared"))
        self.ask_image()

    def history(self, _: str = "") -> None:
        if not self.state.conversation_id:
            self.say(t(self.state.lang, "no_conversation"))
            return
        view = self.service.history(self.state.conversation_id)
        for message in view.messages:
            images = "".join(f"[{ref.filename} {ref.width}×{ref.height}] " for ref in message.images)
            label = t(self.state.lang, "cli_user" if message.role == "user" else "cli_bot")
            self.say(f"{label}{images}{message_text(message, self.state.lang)}")

    def attach(self, path: str) -> None:
        path = path.strip().strip("'\"")
        if not path:
            return
        try:
            image = load_image(Path(path).expanduser())  # early feedback; the service re-checks when storing
        except ImageError as exc:
            self.say(str(exc))
            return
        self.state.image = Path(path).expanduser().read_bytes()
        self.state.image_name = Path(path).name
        self.say(t(self.state.lang, "cli_image_ok", name=Path(path).name, width=image.width, height=image.height))

    def ask_image(self) -> None:
        self.attach(self.input(t(self.state.lang, "cli_image")))

    # --- turns ----------------------------------------------------------------------------------------------------
    def resume(self, conversation_id: str) -> None:
        view = self.service.history(conversation_id)  # NotFound surfaces to the caller
        self.state.conversation_id = view.id
        self.say(t(self.state.lang, "cli_resumed", id=view.id, title=view.title or t(self.state.lang, "untitled")))
        self.history()

    def ask(self, question: str) -> None:
        state = self.state
        created = None
        if map_answer_command(self, question):
            return
        if state.conversation_id is None:
            state.conversation_id = created = self.service.start().id
        image, image_name = state.image, state.image_name
        try:
            events = self.service.send(state.conversation_id, question, image=state.image,
                                       image_name=state.image_name)
            with closing(events):
                started = False
                try:
                    for event in events:
                        if event.kind == "user":
                            state.image = state.image_name = None  # stored with this question
                            self.say(t(state.lang, "cli_bot"), end="")
                            started = True
                        elif event.kind == "delta":
                            self.say(event.text, end="")
                        elif event.kind == "error":
                            self.say(f"\n{event.error}")
                    self.say()
                except KeyboardInterrupt:  # closing() stores the partial answer as 'interrupted'
                    self.say(f" {t(state.lang, 'cli_stopped')}" if started else "")
        except USER_ERRORS as exc:
            if created and not self.service.history(created).messages:
                self.service.delete(created)
                state.conversation_id = None
            if isinstance(exc, ImageError):
                state.image = state.image_name = None
            elif isinstance(exc, ServiceBusy):  # nothing was stored: the image stays attached for the retry
                state.image, state.image_name = image, image_name
                self.say("")
            self.say(str(exc))

    def run(self, conversation_id: str | None = None, image: str | None = None) -> int:
        self.say(t(self.state.lang, "cli_welcome"))
        if conversation_id:
            try:
                self.resume(conversation_id)
            except NotFound:
                self.say(f"找不到对话 (no conversation) {conversation_id}")
                return 1
        elif image:
            self.attach(image)
        else:
            try:
                self.ask_image()
            except (EOFError, KeyboardInterrupt):
                return 0
        while not self.state.done:
            try:
                line = self.input(t(self.state.lang, "cli_user"))
            except (EOFError, KeyboardInterrupt):
                self.say()
                self.quit()
                break
            command, _, rest = line.strip().partition(" ")
            if command.lower() in self.commands and (rest == "" or command.lower() in ("image", "/tiles")):
                self.commands[command.lower()](rest)
            else:
                self.ask(line)
        return 0


def run_cli(service: ConversationService, conversation_id: str | None = None, image: str | None = None,
            lang: str = "zh") -> int:
    return TerminalChat(service, lang).run(conversation_id, image)
