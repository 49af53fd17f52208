"""
Tests for L{imd.config}: defaults, the sample file, TOML and environment
overrides, and the one-line errors an operator sees.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from typing import Any, Mapping

from twisted.trial import unittest

from imd.config import Config, ConfigError, describe

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SAMPLE = os.path.join(REPO, "etc", "imd.toml")


class ConfigTestCase(unittest.TestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(self, text: str | None = None, environ: Mapping[str, str] = {}) -> Config:
        # An explicit environ keeps the developer's own IMD_* variables out.
        return Config.load(None if text is None else self.write(text), environ=environ)

    def assertConfigError(self, text: str | None, *fragments: str, environ: Mapping[str, str] = {}) -> str:
        """
        Loading C{text} with C{environ} fails, and the message contains every
        fragment: the operator must learn which key is wrong.
        """
        e = self.assertRaises(ConfigError, self.load, text, environ)
        message = str(e)
        for fragment in fragments:
            self.assertIn(fragment, message)
        # twistd and the CLI print the message as one line.
        self.assertNotIn("\n", message)
        return message


class DefaultsTests(ConfigTestCase):
    def test_no_file_is_defaults(self) -> None:
        self.assertEqual(Config.load(None, environ={}), Config())

    def test_empty_file_is_defaults(self) -> None:
        self.assertEqual(self.load(""), Config())

    def test_describe_matches_defaults(self) -> None:
        config = Config()
        rows = describe()
        self.assertTrue(rows)
        for section, key, default, _doc in rows:
            self.assertEqual(getattr(getattr(config, section), key), default, f"{section}.{key}")

    def test_environ_defaults_to_process_environment(self) -> None:
        self.patch(os, "environ", {"IMD_HTTP_MAX_BODY": "77"})
        self.assertEqual(Config.load(None).http.max_body, 77)

    def test_default_listeners_queue_20000_connects(self) -> None:
        # Twisted's backlog of 50 made 16 of 1,000 sequential connects wait a
        # second for a SYN retry.
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.protocol import Factory

        config = Config()
        for section in ("http", "longconn", "socket", "xmpp"):
            endpoint = getattr(config, section).endpoint
            # The default, on a port of the system's choosing.
            description = endpoint.replace(endpoint.split(":")[1], "0", 1)
            ports = []
            serverFromString(reactor, description).listen(Factory()).addCallback(ports.append)
            (port,) = ports
            self.addCleanup(port.stopListening)
            self.assertEqual(port.backlog, 20000, section)

    def test_frozen(self) -> None:
        # Services keep references to sections; nobody may change them under them.
        config = Config()
        self.assertRaises(AttributeError, setattr, config.http, "max_body", 1)


class SampleFileTests(ConfigTestCase):
    def test_sample_is_defaults(self) -> None:
        self.assertEqual(Config.load(SAMPLE, environ={}), Config())

    def test_sample_sets_every_key(self) -> None:
        with open(SAMPLE, "rb") as f:
            raw = tomllib.load(f)
        in_file = [(section, key) for section, table in raw.items() for key in table]
        in_code = [(section, key) for section, key, _default, _doc in describe()]
        self.assertEqual(set(in_file) - set(in_code), set(), "keys in etc/imd.toml that config.py lacks")
        self.assertEqual(set(in_code) - set(in_file), set(), "keys missing from etc/imd.toml")
        self.assertEqual(in_file, in_code, "etc/imd.toml should follow config.py's order")

    def test_sample_comments_every_key(self) -> None:
        with open(SAMPLE, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        for number, line in enumerate(lines):
            if re.match(r"^\w+\s*=", line):
                self.assertTrue(
                    number > 0 and lines[number - 1].startswith("#"),
                    f"etc/imd.toml line {number + 1} ({line!r}) has no comment above it",
                )


class FileTests(ConfigTestCase):
    def test_overrides(self) -> None:
        config = self.load(
            """
            [http]
            endpoint = ""
            max_body = 2048

            [socket]
            encrypt = false
            aes_key = "0123456789abcdef0123456789abcdef"

            [database]
            url = "postgresql://imd@db.example:5432/imd"
            pool_size = 10

            [redis]
            url = "redis://localhost:6379/0"

            [sms]
            mode = "http"
            url = "https://sms.example/send"
            resend_interval = 0

            [messages]
            friends_only = true
            recall_window = 0
            """
        )
        self.assertEqual(config.http.endpoint, "")
        self.assertEqual(config.http.max_body, 2048)
        self.assertFalse(config.socket.encrypt)
        self.assertEqual(config.socket.aes_key, "0123456789abcdef0123456789abcdef")
        self.assertEqual(config.database.url, "postgresql://imd@db.example:5432/imd")
        self.assertEqual(config.database.pool_size, 10)
        self.assertEqual(config.redis.url, "redis://localhost:6379/0")
        self.assertEqual(config.sms.mode, "http")
        self.assertEqual(config.sms.url, "https://sms.example/send")
        self.assertEqual(config.sms.resend_interval, 0)
        self.assertTrue(config.messages.friends_only)
        self.assertEqual(config.messages.recall_window, 0)
        # Keys not in the file keep their defaults, even in a section that is.
        self.assertEqual(config.socket.endpoint, Config().socket.endpoint)
        self.assertTrue(config.database.migrate_on_start)
        self.assertEqual(config.sms.code_ttl, 300)
        self.assertEqual(config.auth, Config().auth)

    def test_other_valid_values(self) -> None:
        config = self.load(
            """
            [http]
            endpoint = "unix:/tmp/imd-test.sock"
            [longconn]
            endpoint = "tcp:0"
            [socket]
            aes_key = "0123456789abcdef01234567"
            [database]
            url = "sqlite:////tmp/imd-test.sqlite3"
            [redis]
            url = "unix:///tmp/redis.sock"
            [sms]
            mode = "off"
            """
        )
        self.assertEqual(config.http.endpoint, "unix:/tmp/imd-test.sock")
        self.assertEqual(config.longconn.endpoint, "tcp:0")
        self.assertEqual(config.sms.mode, "off")
        self.assertEqual(config.redis.url, "unix:///tmp/redis.sock")

    def test_missing_file(self) -> None:
        path = os.path.abspath(self.mktemp())
        e = self.assertRaises(ConfigError, Config.load, path, {})
        self.assertIn(path, str(e))
        self.assertIn("cannot read", str(e))

    def test_unreadable_file(self) -> None:
        # A directory cannot be read as a file, even by root (chmod 000 can).
        path = self.mktemp()
        os.mkdir(path)
        e = self.assertRaises(ConfigError, Config.load, path, {})
        self.assertIn(path, str(e))

    def test_invalid_toml(self) -> None:
        path = self.write("[http\nendpoint = \n")
        e = self.assertRaises(ConfigError, Config.load, path, {})
        self.assertIn(path, str(e))
        self.assertIn("not valid TOML", str(e))


class EnvironmentTests(ConfigTestCase):
    def test_str(self) -> None:
        config = self.load(environ={"IMD_DATABASE_URL": "postgresql://imd@localhost:5432/imd"})
        self.assertEqual(config.database.url, "postgresql://imd@localhost:5432/imd")

    def test_empty_str_turns_listener_off(self) -> None:
        self.assertEqual(self.load(environ={"IMD_HTTP_ENDPOINT": ""}).http.endpoint, "")

    def test_int(self) -> None:
        config = self.load(environ={"IMD_HTTP_MAX_BODY": "4096", "IMD_LONGCONN_IDLE_TIMEOUT": " 60 "})
        self.assertEqual(config.http.max_body, 4096)
        self.assertEqual(config.longconn.idle_timeout, 60)

    def test_bool(self) -> None:
        for text in ("true", "True", "1", "yes", "YES", "on", " on "):
            config = self.load(environ={"IMD_MESSAGES_FRIENDS_ONLY": text})
            self.assertIs(config.messages.friends_only, True, text)
        for text in ("false", "FALSE", "0", "no", "off", "Off"):
            config = self.load(environ={"IMD_SOCKET_ENCRYPT": text})
            self.assertIs(config.socket.encrypt, False, text)

    def test_env_beats_file(self) -> None:
        config = self.load(
            '[http]\nendpoint = "tcp:9000"\nmax_body = 10\n',
            environ={"IMD_HTTP_ENDPOINT": "tcp:9001"},
        )
        self.assertEqual(config.http.endpoint, "tcp:9001")
        self.assertEqual(config.http.max_body, 10)

    def test_env_fixes_bad_file_value(self) -> None:
        # The file's value is replaced before it is checked, so an operator
        # can override a broken shared file from the environment.
        config = self.load('[sms]\nmode = "email"\n', environ={"IMD_SMS_MODE": "off"})
        self.assertEqual(config.sms.mode, "off")

    def test_unrelated_variables_ignored(self) -> None:
        config = self.load(
            environ={
                "IMD_TEST_POSTGRES_URL": "postgresql://test@localhost/test",
                "IMD_TEST_REDIS_URL": "redis://localhost",
                "IMD_CONFIG": "/nonexistent/imd.toml",
                "IMD_NOSUCH_KEY": "x",
                "imd_http_max_body": "x",
                "PATH": "/usr/bin",
                "HTTP_ENDPOINT": "x",
            }
        )
        self.assertEqual(config, Config())

    def test_env_value_is_checked(self) -> None:
        self.assertConfigError(None, "http.max_body", "IMD_HTTP_MAX_BODY", environ={"IMD_HTTP_MAX_BODY": "0"})
        self.assertConfigError(None, "http.endpoint", "IMD_HTTP_ENDPOINT", environ={"IMD_HTTP_ENDPOINT": "tcp:x"})


class ErrorTests(ConfigTestCase):
    def test_unknown_section(self) -> None:
        self.assertConfigError("[nosuch]\nkey = 1\n", "[nosuch]")

    def test_unknown_key_in_file(self) -> None:
        message = self.assertConfigError('[http]\nendpont = "tcp:1"\n', "http.endpont")
        self.assertEqual(message, "unknown config key http.endpont")

    def test_unknown_key_in_env(self) -> None:
        self.assertConfigError(None, "http.endpont", "IMD_HTTP_ENDPONT", environ={"IMD_HTTP_ENDPONT": "tcp:1"})

    def test_nested_table_is_unknown_key(self) -> None:
        self.assertConfigError("[http.tls]\nkey = 1\n", "http.tls")

    def test_section_not_a_table(self) -> None:
        self.assertConfigError("http = 1\n", "[http]", "table")
        self.assertConfigError("[[http]]\nendpoint = \"\"\n", "[http]", "table")

    def test_string_for_int(self) -> None:
        self.assertConfigError('[http]\nmax_body = "1024"\n', "http.max_body", "integer")

    def test_float_for_int(self) -> None:
        self.assertConfigError("[http]\nmax_body = 1024.0\n", "http.max_body", "integer")

    def test_bool_for_int(self) -> None:
        # TOML's true is a Python bool, which is an int: it must still be refused.
        self.assertConfigError("[http]\nmax_body = true\n", "http.max_body", "integer")

    def test_int_for_str(self) -> None:
        self.assertConfigError("[http]\nendpoint = 8080\n", "http.endpoint", "string")

    def test_int_for_bool(self) -> None:
        self.assertConfigError("[socket]\nencrypt = 1\n", "socket.encrypt", "true or false")

    def test_string_for_bool_in_file(self) -> None:
        # Only the environment spells booleans as text.
        self.assertConfigError('[socket]\nencrypt = "yes"\n', "socket.encrypt")

    def test_env_not_an_int(self) -> None:
        self.assertConfigError(
            None, "http.max_body", "IMD_HTTP_MAX_BODY", "'abc'", environ={"IMD_HTTP_MAX_BODY": "abc"}
        )

    def test_env_not_a_bool(self) -> None:
        self.assertConfigError(
            None, "socket.encrypt", "IMD_SOCKET_ENCRYPT", "'maybe'", environ={"IMD_SOCKET_ENCRYPT": "maybe"}
        )

    def test_bad_endpoint(self) -> None:
        self.assertConfigError('[http]\nendpoint = "tcp:notaport"\n', "http.endpoint", "endpoint string")
        self.assertConfigError('[xmpp]\nendpoint = "nosuch:5222"\n', "xmpp.endpoint")
        self.assertConfigError('[longconn]\nendpoint = "8283"\n', "longconn.endpoint")

    def test_bad_database_url(self) -> None:
        self.assertConfigError('[database]\nurl = "not a url"\n', "database.url")
        self.assertConfigError('[database]\nurl = ""\n', "database.url")

    def test_unsupported_database_backend(self) -> None:
        self.assertConfigError('[database]\nurl = "mysql://imd@localhost/imd"\n', "database.url", "postgresql://")

    def test_bad_redis_url(self) -> None:
        self.assertConfigError('[redis]\nurl = "http://localhost:6379"\n', "redis.url")
        self.assertConfigError('[redis]\nurl = "localhost:6379"\n', "redis.url")

    def test_bad_sms_mode(self) -> None:
        self.assertConfigError('[sms]\nmode = "email"\n', "sms.mode", "'log'", "'http'", "'off'")

    def test_sms_http_needs_url(self) -> None:
        self.assertConfigError('[sms]\nmode = "http"\n', "sms.url", "sms.mode")

    def test_bad_sms_url(self) -> None:
        self.assertConfigError('[sms]\nmode = "http"\nurl = "ftp://sms.example"\n', "sms.url")

    def test_aes_key_length(self) -> None:
        self.assertConfigError('[socket]\naes_key = "0123456789abcde"\n', "socket.aes_key", "16, 24 or 32")
        self.assertConfigError('[socket]\naes_key = "0123456789abcdef0"\n', "socket.aes_key")
        self.assertConfigError('[socket]\naes_key = ""\n', "socket.aes_key")

    def test_aes_key_counts_bytes(self) -> None:
        # Eight three-byte characters are 24 bytes: a valid AES-192 key.
        self.assertEqual(self.load('[socket]\naes_key = "密钥密钥密钥密钥"\n').socket.aes_key, "密钥密钥密钥密钥")
        self.assertConfigError('[socket]\naes_key = "密钥密钥密钥密钥密钥密钥密钥密钥"\n', "socket.aes_key")

    def test_positive(self) -> None:
        for section, key in [
            ("http", "max_body"),
            ("longconn", "max_frame"),
            ("longconn", "idle_timeout"),
            ("database", "pool_size"),
            ("database", "sqlite_checkpoint_pages"),
            ("files", "max_size"),
            ("sms", "code_ttl"),
            ("sms", "max_attempts"),
            ("auth", "token_ttl"),
            ("auth", "sign_window"),
            ("auth", "hash_time_cost"),
            ("auth", "hash_memory_kib"),
            ("messages", "history_days"),
        ]:
            for value in (0, -1):
                self.assertConfigError(f"[{section}]\n{key} = {value}\n", f"{section}.{key}", "greater than 0")

    def test_not_negative(self) -> None:
        for section, key in [("sms", "resend_interval"), ("messages", "recall_window")]:
            self.assertConfigError(f"[{section}]\n{key} = -1\n", f"{section}.{key}", "negative")
            self.assertEqual(getattr(getattr(self.load(f"[{section}]\n{key} = 0\n"), section), key), 0)


class TwistdTests(unittest.TestCase):
    def test_config_error_is_one_line(self) -> None:
        """
        C{twistd imd} with a bad config exits non-zero after one line naming
        the key, not a traceback or twistd's usage text.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "bad.toml"), "w") as f:
            f.write('[http]\nendpont = "x"\n')
        env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("IMD_")}
        # twistd finds plugins in every twisted/plugins folder on sys.path,
        # so the repository root on PYTHONPATH finds imd's plugin without
        # installing anything.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
        # twisted.scripts.twistd has no __main__ guard, so "-m" would run
        # nothing and exit 0: call its run() instead.
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "imd",
                "--config",
                "bad.toml",
            ],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0, output)
        mentions = [line for line in output.splitlines() if "http.endpont" in line]
        self.assertEqual(mentions, ["imd: config error: unknown config key http.endpont"], output)
        self.assertNotIn("Traceback", output)
