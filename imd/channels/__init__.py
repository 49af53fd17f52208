"""
The wire families imd speaks, one package each, plus what they share.

- L{imd.channels.longconn}: the numeric-MsgType long connection, its QID
  short connection and its file server (seed 001).
- L{imd.channels.methodapi}: the signed, AES-encrypted method API and its
  binary socket (seed 004).
- L{imd.channels.native}: imd's own JSON API (log in, health, metrics).
- L{imd.channels.shared}: framing base, session lifecycle, JSON-object
  parsing, HTTP app assembly and request limits.

A family imports L{imd.channels.shared}, the core and the hub, never
another family.  See docs/architecture.rst.
"""
