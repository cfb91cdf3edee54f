"""The messaging engine."""

from bridge.engine.engine import BadInput, Engine, EngineError, NotRegistered, SendResult, MESSAGES_WITH_FLAGS, message_dict, messages_of

__all__ = ["Engine", "EngineError", "BadInput", "NotRegistered", "SendResult", "messages_of", "message_dict", "MESSAGES_WITH_FLAGS"]
