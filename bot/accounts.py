"""The web chat's accounts as the UI sees them: the accounts table of `storage.accounts` (scrypt password hashes,
an admin flag, conversations owned per user), handed through `bot/` so that `ui/` imports nothing below it.

    from bot.accounts import Accounts
    accounts.check("alice", "correct horse")   # True (constant-time compare)
"""

from storage.accounts import AccountError, Accounts, AccountView

__all__ = ["AccountError", "AccountView", "Accounts"]
