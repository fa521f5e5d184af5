"""User interfaces over the conversation service: the Gradio web chat (`ui/web.py`) and the terminal chat
(`ui/cli.py`). Both only call `bot.service.ConversationService`; `app.py` builds the service and starts them."""
