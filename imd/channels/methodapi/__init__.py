"""
The method-API design (seed 004): a signed, AES-encrypted HTTP method API
and a binary socket of uint16-framed (encrypted) JSON, and a client library
of the socket.
"""
