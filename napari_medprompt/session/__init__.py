"""An annotation session: objects, prompts, per-slice status, provenance, undo, autosave, recovery.

Qt-free. ``AnnotationSession`` holds the committed label map of one image; ``session_folder_for`` /
``find_session`` locate the per-image session folder; ``image_key`` builds the key a restore checks.
"""

from napari_medprompt.session.folders import (
    SessionCandidate,
    content_key,
    find_session,
    find_sessions,
    image_key,
    new_session_folder,
    peek_session,
    session_folder_for,
)
from napari_medprompt.session.objects import REVIEW_STATUSES, SLICE_STATUSES, SegObject
from napari_medprompt.session.session import AnnotationSession, ObjectLockedError, SessionEvent
from napari_medprompt.session.store import (
    SessionCorruptError,
    SessionError,
    SessionMismatchError,
    SessionSaveError,
)

__all__ = [
    "AnnotationSession",
    "ObjectLockedError",
    "REVIEW_STATUSES",
    "SLICE_STATUSES",
    "SegObject",
    "SessionCandidate",
    "SessionCorruptError",
    "SessionError",
    "SessionEvent",
    "SessionMismatchError",
    "SessionSaveError",
    "content_key",
    "find_session",
    "find_sessions",
    "image_key",
    "new_session_folder",
    "peek_session",
    "session_folder_for",
]
