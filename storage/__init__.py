"""Conversations, messages and images in any SQLAlchemy database (SQLite by default); images on disk by hash."""

from storage.accounts import AccountError, Accounts, AccountView
from storage.db import DatabaseError
from storage.repository import (AlternativeView, ConversationStore, ConversationView, ImageRef, MessageView,
                                NotFound, StorageError)

__all__ = ["AccountError", "AccountView", "Accounts",
           "AlternativeView", "ConversationStore", "ConversationView", "DatabaseError", "ImageRef", "MessageView",
           "NotFound", "StorageError"]
