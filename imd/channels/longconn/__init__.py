"""The seed-001 long connection: numeric-MsgType JSON frames over TCP."""
