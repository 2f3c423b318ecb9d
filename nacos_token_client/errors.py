"""Every error the SDK raises, in one tree.

::

    NacosTokenError                      base of everything below; catch this to catch all of ours
    ├── ConfigurationError (ValueError)  bad options: an unparsable server address, a ratio out of range
    ├── AuthenticationError              the server refused the credentials (no retry, briefly remembered)
    ├── LoginUnavailableError            no server answered a login usefully: connection errors, timeouts,
    │                                    5xx/429/408 after all retries, or a wait for another login timed out
    ├── LoginResponseError               a login answered 200 but the body is not a usable token answer
    ├── StoreError                       a shared token store failed in a way the client cannot route around
    └── RequestFailedError               a wrapper-client helper (get_config …) got an error answer
        └── PermissionDeniedError        a 403 that no re-login can fix (``authorization failed!``)

Messages never contain a password or a token: at most a fingerprint (the first 8 hex digits of its SHA-256).
Rejected requests are *not* errors: a 403 that a re-login cannot fix comes back as the response it is.
"""

from __future__ import annotations

from typing import Literal, cast

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "LoginResponseError",
    "LoginUnavailableError",
    "NacosTokenError",
    "PermissionDeniedError",
    "RequestFailedError",
    "StoreError",
    "ErrorName",
    "public_name",
]

ErrorName = Literal["NacosTokenError", "ConfigurationError", "AuthenticationError", "LoginUnavailableError",
                    "LoginResponseError", "StoreError", "RequestFailedError", "PermissionDeniedError"]
"""The names of the classes in the tree: what ``TokenEvent.outcome`` is for a ``failure`` event (a ``Literal``,
so a type checker flags a comparison with a name that can never occur)."""


class NacosTokenError(Exception):
    """Base class of every error raised by nacos_token_client."""


class ConfigurationError(NacosTokenError, ValueError):
    """An option or server address cannot be used."""


class AuthenticationError(NacosTokenError):
    """The server refused the username/password (HTTP 403, or a 500 ``caused: User … not found;``).

    Not retried: the same credentials would be refused again, and every retry is a failed login on the server's
    books. Requests fail at once for ``negative_cache_seconds`` afterwards. ``message`` says which server
    refused and why; ``status_code`` is the refusing answer's status and ``server`` the server that gave it (both
    None when unknown).
    """

    def __init__(self, message: str, *, status_code: int | None = None, server: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.server = server


class LoginUnavailableError(NacosTokenError):
    """No login succeeded: every server was unreachable or answered a transient error.

    Worth retrying later (unlike :class:`AuthenticationError`). ``message`` names the last failure; ``attempts``
    is how many login attempts the last failed login made (0 when none was recorded, e.g. the login a request
    waited for was abandoned by its owner).
    """

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


class LoginResponseError(NacosTokenError):
    """A login answer could not be understood (not JSON, no ``accessToken``, a bad ``tokenTtl`` …).

    Usually a proxy or a server that is not Nacos answering the login path; not retried, since the same server
    would answer the same. ``message`` says what is wrong with the answer; ``server`` is the server that gave it.
    """

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(message)
        self.server = server


class StoreError(NacosTokenError):
    """A token store could not be read or written."""


class RequestFailedError(NacosTokenError):
    """A config helper of the wrapper clients got an answer it cannot turn into a result.

    Raised instead of returning a misleading value (``False`` or ``None``). ``message`` names the request and the
    status; ``status_code`` is the HTTP status and ``server_message`` the server's own words (at most 300
    characters).
    """

    def __init__(self, message: str, *, status_code: int, server_message: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message


class PermissionDeniedError(RequestFailedError):
    """The token is fine but the user may not touch this resource; logging in again cannot help."""


def public_name(error: NacosTokenError) -> ErrorName:
    """The name of ``error``'s nearest class in the tree above, for logs and events: internal subclasses
    (``TransientLoginError``, ``StormBackOff`` …) are details a user cannot catch by name."""
    for cls in type(error).__mro__:
        if cls.__module__ == __name__ and cls.__name__ in __all__:
            return cast(ErrorName, cls.__name__)
    return "NacosTokenError"  # unreachable: every NacosTokenError has it in its MRO
