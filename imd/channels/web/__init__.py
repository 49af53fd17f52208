"""imd's own web pages: the chat client at / and the admin console at /admin/."""
