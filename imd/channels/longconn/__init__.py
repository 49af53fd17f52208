"""
The long-connection design (seed 001): numeric-MsgType JSON frames over
TCP, QID queries over HTTP, the signed file server, and a client library.
"""
