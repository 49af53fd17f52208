"""The seed-004 binary socket: uint16 frames of AES-encrypted JSON."""
