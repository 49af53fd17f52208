# -*- test-case-name: tests.test_qid -*-
"""Signs, avatars and profiles: anyone signed in may read, only the owner writes."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks, returnValue

from imd.core import fields
from imd.errors import NotFound
from imd.store.profiles import PROFILE_FIELDS

LIMITS = {
    "sex": 8,
    "age": 8,
    "birthday": 32,
    "telephone": 32,
    "cellphone": 32,
    "email": 255,
    "address": 500,
    "zipcode": 16,
    "position": 100,
}


class ProfileService:
    def __init__(self, store: Any, clock: Any, files: Any = None) -> None:
        """
        @param files: the L{imd.core.files.FileService}; with it an avatar
            must name an uploaded, complete file (seed 001 sets
            C{"avatar": "/file/1.jpg"}).
        """
        self._profiles = store.profiles
        self._clock = clock
        self._files = files

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    def set_sign(self, uid: str, sign: Any):
        return self._profiles.set_user_fields(
            uid, self._now(), sign=fields.text("sign", sign, 500, required=False)
        )

    @inlineCallbacks
    def set_avatar(self, uid: str, avatar: Any, uploaded: bool = True):
        """
        C{uid}'s avatar: with C{uploaded}, the name of a file uploaded here;
        without, any reference (a business server's URL).
        """
        avatar = fields.text("avatar", avatar, 500, required=False)
        if uploaded and self._files is not None:
            # Stored as given ("name" or "/file/name"): clients read back
            # what they set.
            yield self._files.check_avatar(avatar)
        changed = yield self._profiles.set_user_fields(uid, self._now(), avatar=avatar)
        returnValue(changed)

    @inlineCallbacks
    def get(self, uid: str):
        profile = yield self._profiles.get(fields.uid("uid", uid))
        if profile is None:
            raise NotFound(f"no user {uid}")
        returnValue(profile)

    @inlineCallbacks
    def set(self, uid: str, values: dict[str, Any]):
        """
        Set C{uid}'s profile from C{values}: the profile fields and C{name}
        (the display name); other keys are ignored.
        """
        changes = {
            key: fields.text(key, values[key], LIMITS[key], required=False)
            for key in PROFILE_FIELDS
            if key in values
        }
        if changes:
            yield self._profiles.set(uid, changes, self._now())
        if "name" in values:
            yield self._profiles.set_user_fields(
                uid, self._now(), name=fields.text("name", values["name"], 100, required=False)
            )
