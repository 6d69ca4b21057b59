"""Our exception tree and the ONE table that maps each error to an API code."""

from __future__ import annotations


class ApiError(Exception):
    """Base of every error that becomes an API answer."""

    default_message = "internal error"

    def __init__(self, message: str | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message


class SignatureExpired(ApiError):
    default_message = "signature expired"


class SignatureInvalid(ApiError):
    default_message = "signature invalid"


class ActionEmpty(ApiError):
    default_message = "Action empty"


class ActionNotSupported(ApiError):
    default_message = "Action not supported"


class AppIdMalformed(ApiError):
    default_message = "AppId malformed"


class TimestampEmpty(ApiError):
    default_message = "Timestamp empty"


class TimestampMalformed(ApiError):
    default_message = "Timestamp malformed"


class NonceEmpty(ApiError):
    default_message = "SignatureNonce empty"


class SignatureEmpty(ApiError):
    default_message = "Signature empty"


class BodyUnreadable(ApiError):
    default_message = "request body unreadable"


class SignatureVersionEmpty(ApiError):
    default_message = "SignatureVersion empty"


class SignatureVersionNotSupported(ApiError):
    default_message = "SignatureVersion not supported"


class InvalidParameter(ApiError):
    default_message = "invalid parameter"


class TaskNotFound(ApiError):
    default_message = "task does not exist"


class TaskAlreadyStopped(ApiError):
    default_message = "task already stopped"


class TaskNotPaused(ApiError):
    default_message = "task is not paused"


class InternalError(ApiError):
    default_message = "internal error"


class NodeBusy(ApiError):
    default_message = "node at capacity"


API_CODES: dict[type[ApiError], int] = {
    SignatureExpired: 100000004,
    SignatureInvalid: 100000005,
    ActionEmpty: 100000006,
    ActionNotSupported: 100000007,
    AppIdMalformed: 100000001,
    TimestampEmpty: 100000002,
    TimestampMalformed: 100000003,
    NonceEmpty: 100000008,
    SignatureEmpty: 100000009,
    BodyUnreadable: 100000012,
    SignatureVersionEmpty: 100000013,
    SignatureVersionNotSupported: 100000014,
    InvalidParameter: 300000004,
    TaskNotFound: 300001000,
    TaskAlreadyStopped: 300001001,
    TaskNotPaused: 300001004,
    InternalError: 300010000,
    NodeBusy: 300010001,
}


def api_code(error: ApiError) -> int:
    for cls in type(error).__mro__:
        if cls in API_CODES:
            return API_CODES[cls]
    return API_CODES[InternalError]


class IngestError(Exception):
    """A publishing request (RTP/WHIP) that cannot be served: an HTTP status and a reason."""

    def __init__(self, status: int, reason: str, *, retry_after: int | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
