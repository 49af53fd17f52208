"""
The house rules that keep imd easy to live in, checked on the source: a
wire family imports no other, the core and the store import no channel,
the core speaks no wire vocabulary, and a client library pulls in no
server.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from twisted.trial import unittest

from tests.support import child_env, repo_root

IMD = os.path.join(repo_root(), "imd")
FAMILIES = ("longconn", "methodapi", "native", "serverapi", "web", "xmpp")
# Keys and values that belong to one seed's wire format, not to imd: seed
# 001's group and roster words, seed 004's status codes and envelope, seed
# 003's parameters and webhook fields.
SEED_WORDS = {"fname", "gname", "uname", "right", "peers", "grp", "frd", "exit", "1111", "0000", "status", "_t",
              # seed 003's server API and webhooks
              "accid", "faccid", "attach", "msgtype", "eventType", "convType", "tid", "tname"}


def modules(package: str):
    base = os.path.join(IMD, *package.split("."))
    for folder, _, files in os.walk(base):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, repo_root()), ast.parse(f.read())


def imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


class LayeringTests(unittest.TestCase):
    def assertImportsNone(self, package: str, forbidden: tuple[str, ...]):
        for path, tree in modules(package):
            bad = sorted(m for m in imports(tree) if m.startswith(forbidden))
            self.assertEqual(bad, [], path)

    def test_a_family_imports_no_other(self):
        for family in FAMILIES:
            others = tuple(f"imd.channels.{f}" for f in FAMILIES if f != family)
            self.assertImportsNone(f"channels.{family}", others)

    def test_shared_imports_no_family(self):
        self.assertImportsNone("channels.shared", tuple(f"imd.channels.{f}" for f in FAMILIES))

    def test_core_imports_no_channel(self):
        self.assertImportsNone("core", ("imd.channels", "imd.server"))

    def test_store_imports_neither_core_nor_channel(self):
        self.assertImportsNone("store", ("imd.core", "imd.channels", "imd.hub", "imd.server"))

    def test_core_speaks_no_wire_vocabulary(self):
        for path, tree in modules("core"):
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            words = {
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            }
            self.assertEqual(sorted(words & SEED_WORDS), [], path)

    def test_the_check_sees_a_seed_word(self):
        tree = ast.parse('def f():\n    """fname"""\n    return {"fname": 1}\n')
        words = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        self.assertIn("fname", words & SEED_WORDS)

    def test_client_libraries_import_no_server(self):
        code = (
            "import sys, imd.channels.longconn.client, imd.channels.methodapi.client, imd.channels.xmpp.client, imd.channels.serverapi.client\n"
            "print('\\n'.join(m for m in sys.modules if m.startswith(('imd.core', 'imd.hub', 'imd.store', 'imd.server'))))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=child_env(), cwd=repo_root(), capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(out.split(), [])


class StandAloneDocsTests(unittest.TestCase):
    """The repository's docs and code state their rules; they cite no document it lacks."""

    def test_no_citation_of_a_missing_document(self):
        root = repo_root()
        paths = [os.path.join(root, "README.rst")]
        for top in ("docs", "imd", "tests", "etc"):
            for directory, _, names in os.walk(os.path.join(root, top)):
                paths += [os.path.join(directory, name) for name in names if name.endswith((".py", ".rst", ".toml"))]
        citing = []
        for path in paths:
            # imd/bench/ belongs to the benchmark's owner (issue 15, point 15).
            if path == __file__ or os.path.join("imd", "bench", "") in path:
                continue
            with open(path, encoding="utf-8") as f:
                if "PROTOCOL" + ".md" in f.read():
                    citing.append(os.path.relpath(path, root))
        self.assertEqual(citing, [])
