# -*- test-case-name: tests.test_web_admin -*-
"""The web family: the chat page, the console page and their files; the console's API is L{admin}."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imd.channels.shared.httpjson import write_error
from imd.channels.shared.web import Family
from imd.channels.web import pages

if TYPE_CHECKING:
    from imd.server import Server


def make_app(server: "Server") -> Family:
    family = Family("web", server.metrics, write_error, prefixes=("/static/", "/admin/"))
    shipped = pages.load()

    @family.app.route("/", methods=["GET", "HEAD"])
    def chat(request):
        return pages.serve(request, shipped, "index.html")

    @family.app.route("/admin/", methods=["GET", "HEAD"])
    def console(request):
        return pages.serve(request, shipped, "admin.html")

    @family.app.route("/static/<string:name>", methods=["GET", "HEAD"])
    def static(request, name):
        return pages.serve(request, shipped, name)

    return family
