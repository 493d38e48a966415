"""The ``nas`` command: every parser and command (:mod:`nas.cli.main`), the quickstart."""
