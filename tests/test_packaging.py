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
