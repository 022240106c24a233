"""YAML for test inputs, written without aliases (anchors and ``*refs``), which the loaders refuse."""

import yaml


class NoAliases(yaml.SafeDumper):
    """Writes shared objects out in full."""

    def ignore_aliases(self, data):
        return True


def dump(data) -> str:
    """``data`` as YAML, keys in their own order, no aliases."""
    return yaml.dump(data, Dumper=NoAliases, sort_keys=False)
