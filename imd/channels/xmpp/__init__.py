"""
Seed 002's design: an Openfire server whose Smack clients carry the
``tlim`` JSON envelope in XMPP messages, and its sessions API over HTTP
(``/plugin/tlim/…``).  imd serves it as an XMPP c2s channel that stock
XMPP clients can use too.
"""
