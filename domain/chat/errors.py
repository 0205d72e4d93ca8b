"""Errors of the conversation aggregate; each carries the stable problem ``code`` clients switch on."""

from __future__ import annotations

from domain.shared.errors import Conflict, Invalid, NotFound


class ConversationNotFound(NotFound):
    """No conversation with this id."""

    code = "conversation_not_found"


class MessageNotFound(NotFound):
    """No message with this id in the conversation's current branch."""

    code = "message_not_found"


class ConversationExists(Conflict):
    """A conversation with this id already exists."""

    code = "conversation_exists"


class ConversationBusy(Conflict):
    """An assistant turn is running in this conversation; wait for it to end or cancel it."""

    code = "conversation_busy"


class ConversationArchived(Conflict):
    """The conversation is archived; restore it first."""

    code = "conversation_archived"


class ConversationNotArchived(Conflict):
    """The conversation is not archived."""

    code = "conversation_not_archived"


class TurnNotActive(Conflict):
    """This assistant message is not the turn currently running."""

    code = "turn_not_active"


class NothingToAnswer(Conflict):
    """An assistant turn needs a user message (or tool results) to answer."""

    code = "nothing_to_answer"


class MessageNotFinished(Conflict):
    """The message is still being written."""

    code = "message_not_finished"


class ToolCallNotFound(NotFound):
    """No tool call with this id in the running turn."""

    code = "tool_call_not_found"


class ToolCallNotPending(Conflict):
    """The tool call is not waiting for this step (already decided, completed or not awaiting approval)."""

    code = "tool_call_not_pending"


class InvalidConversation(Invalid):
    """A field of the conversation breaks a rule; ``pointer`` names it."""

    code = "invalid"

    def __init__(self, pointer: str, detail: str) -> None:
        super().__init__(detail, pointer=pointer)
        self.pointer = pointer
