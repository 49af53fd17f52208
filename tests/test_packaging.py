"""What a plain (not editable) install ships."""

import configparser
import os

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PackagingTests(unittest.TestCase):
    def test_every_package_is_listed(self):
        """setup.cfg lists packages by hand (twisted/plugins must not be a package)."""
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        listed = set(config["options"]["packages"].split())
        found = set()
        for directory, _, files in os.walk(os.path.join(ROOT, "imd")):
            if "__init__.py" in files or any(f.endswith(".py") for f in files):
                if "__pycache__" in directory:
                    continue
                found.add(os.path.relpath(directory, ROOT).replace(os.sep, "."))
        self.assertEqual(found - listed, set())


class ServiceUnitTests(unittest.TestCase):
    def test_systemd_unit_runs_twistd_in_the_foreground_without_pidfile(self):
        """etc/imd.service, as docs/operations.rst describes it."""
        unit = configparser.ConfigParser(strict=True, interpolation=None)
        unit.optionxform = str
        unit.read(os.path.join(ROOT, "etc", "imd.service"))
        self.assertEqual(unit.sections(), ["Unit", "Service", "Install"])
        service = unit["Service"]
        start = service["ExecStart"].split()
        self.assertTrue(start[0].endswith("/twistd"), start)
        # twistd's options come before the plugin's name, imd's after it.
        self.assertEqual(start[1:5], ["-n", "--pidfile=", "imd", "--config"])
        self.assertEqual(service["WorkingDirectory"], "/var/lib/" + service["StateDirectory"])
        self.assertIn(service["WorkingDirectory"], service["ReadWritePaths"])
        self.assertEqual(service["Restart"], "on-failure")
        self.assertGreaterEqual(int(service["LimitNOFILE"]), 65536)
