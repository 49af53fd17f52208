"""
Seed 003's design: a NetEase-Yunxin-style server API (``/nimserver/...``,
signed with AppKey, Nonce, CurTime and CheckSum) that a business server
calls, and the signed "message copy" webhooks imd posts back to it.
"""
