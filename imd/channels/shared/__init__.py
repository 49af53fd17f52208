"""
What every wire family shares and none owns: the framed-connection base
and session lifecycle, JSON-object parsing, length-prefixed frames, the
HTTP app and its error edges, and request limits.  No wire format lives
here.
"""
