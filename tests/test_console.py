"""zoo.console: notes and warnings print their text as it is, whatever brackets it holds."""

from __future__ import annotations

import pytest

from zoo import console

# File names and values users give: rich would read these as markup (or fail on them).
TEXTS = ["lesion[red]1[/red].jpg", "folder [/oops]/x.png", "[bold]", "a [link=x]b[/link] c"]


@pytest.mark.parametrize("text", TEXTS)
def test_info_and_warn_print_brackets_as_they_are(text, capsys):
    console.info(f"read {text}")
    console.warn(f"skipped {text}")
    out, err = capsys.readouterr()
    assert out == f"read {text}\n"
    assert err == f"warning: skipped {text}\n"
