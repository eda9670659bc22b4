"""The embedded corpus: all plays, plain text, whole plays held out."""

from lm_recipes import corpus


def test_all_plays_with_their_genres():
    plays = corpus.plays()
    assert len(plays) == 38
    assert plays["hamlet"] == "tragedies" and plays["the-tempest"] == "romances"


def test_scenes_are_plain_text_in_speaker_layout():
    scenes = corpus.scenes(corpus.read_play("hamlet"))
    assert len(scenes) == 20  # 5 acts, 20 scenes
    first = scenes[0]
    assert first.startswith("FRANCISCO at his post. Enter to him BERNARDO")
    assert "BERNARDO:\nWho's there?" in first
    for scene in scenes:
        assert not any(mark in scene for mark in ("**", "#", "_", "\\", "  \n"))


def test_validation_plays_are_held_out_whole():
    train, validation = corpus.split_plays(["hamlet", "macbeth"])
    assert validation == ["hamlet", "macbeth"]
    assert not set(train) & set(validation) and len(train) == 36


def test_documents_carry_play_and_genre():
    docs = list(corpus.generate_documents(["macbeth"], corpus.version()))
    assert {d["play"] for d in docs} == {"macbeth"} and {d["genre"] for d in docs} == {"tragedies"}
    assert any("Double, double toil and trouble" in d["text"] for d in docs)


def test_passages_are_spoken_lines_only():
    passages = corpus.passages(corpus.read_play("hamlet"), 4)
    assert passages[0] == "Who's there?\nNay, answer me: stand, and unfold yourself.\nLong live the king!\nBernardo?"
    assert all(len(p.splitlines()) == 4 for p in passages)
    text = "\n".join(passages)
    assert "HAMLET:" not in text and "Exeunt" not in text  # no speakers' names, no stage directions
    assert "To be, or not to be" in text


def test_genre_task_labels_passages_with_their_play_s_folder():
    rows = list(corpus.generate_passages(["macbeth", "henry-v"], 3, corpus.version()))
    assert {(r["play"], r["label"]) for r in rows} == {("macbeth", "tragedies"), ("henry-v", "histories")}
    assert corpus.genres() == ["comedies", "histories", "problems", "roman", "romances", "tragedies"]
