"""Griffe extension for the API reference: doctest examples as code blocks.

The package's docstrings end with an `Example:` of doctest lines (`>>>`),
which the test suite runs. Markdown would read them as quotes (and their
outputs, such as `[0, 1]`, as broken links), so this extension wraps each
run of doctest lines, up to the next blank line, in a ```pycon fence before
mkdocstrings renders the docstring. The docstrings themselves stay plain
doctests. Enabled in mkdocs.yml under the python handler's `extensions`.
"""

from __future__ import annotations

import griffe


def fence_doctests(text: str) -> str:
    """Returns `text` with every doctest block inside a ```pycon fence."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fences the doctest examples of every documented object."""

    def on_instance(self, *, node, obj, agent, **kwargs) -> None:
        docstring = obj.docstring
        if docstring is not None and ">>>" in docstring.value:
            docstring.value = fence_doctests(docstring.value)
