"""The Hub stand-in (tests/hub_server.py) against the real huggingface_hub client.

The client runs in a fresh Python, as the training script will: it reads HF_ENDPOINT and HF_HUB_OFFLINE at import,
and this session imported it offline (conftest.py). In there, `skip_client_backoff` turns the client's retry waits
(23 s for a refused upload) into a list the tests check, so a failing upload fails at once with the same requests.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hub_server import INVALID_CREDENTIALS, HubServer

TESTS = Path(__file__).resolve().parent
WAITS = [1, 2, 4, 8, 8]  # the client's backoff: 5 retries, 23 s in all

PRELUDE = f"""
import json, os, sys, traceback
from pathlib import Path
sys.path.insert(0, {str(TESTS)!r})
import hub_server
waits = hub_server.skip_client_backoff()
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
api, out = HfApi(), {{}}

def attempt(name, call):
    try:
        out[name] = call()
    except Exception as e:
        response = getattr(e, "response", None)
        out[name] = {{"type": f"{{type(e).__module__}}.{{type(e).__qualname__}}", "message": str(e),
                     "status": getattr(response, "status_code", None), "waits": waits[:],
                     "traceback": "".join(traceback.format_exception(e))}}
    waits.clear()
"""


@pytest.fixture
def hub(tmp_path):
    with HubServer(tmp_path / "hub") as server:
        yield server


def client_env(hub: HubServer, tmp_path: Path, token: str | None = None) -> dict:
    # No token or Hub setting of the machine running the tests may leak in; a fresh cache per test.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    return {**env, **hub.env(token), "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def client(hub: HubServer, tmp_path: Path, code: str, token: str | None = None) -> dict:
    """Run `code` after PRELUDE in a new Python pointed at `hub`; returns what it put in `out`."""
    script = PRELUDE + textwrap.dedent(code) + "\nprint(json.dumps(out))\n"
    env = client_env(hub, tmp_path, token)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def paths(hub: HubServer, method: str, prefix: str = "/") -> list[str]:
    return [path for m, path, _ in hub.requests if m == method and path.startswith(prefix)]


def test_upload_then_download_in_a_new_process_round_trips_the_bytes(hub, tmp_path):
    files = {
        "config.json": b'{"hidden_size": 64}\n',  # regular: base64 in the commit
        "recipe.yaml": b"objective: clm\n",
        "last-checkpoint/model.safetensors": os.urandom(64 * 1024),  # LFS by its name
        "last-checkpoint/trainer_state.json": b'{"global_step": 10}\n',
        "big.txt": b"x" * (10 * 1024 * 1024 + 1),  # LFS by its size (over 10 MiB)
    }
    folder = write(tmp_path / "out", files)
    out = client(
        hub,
        tmp_path,
        f"""
        repo = api.create_repo("run", private=True, exist_ok=True)  # bare name: under the token's user
        out["repo"] = [str(repo), repo.repo_id]
        out["again"] = api.create_repo("tester/run", exist_ok=True).repo_id
        out["commit"] = api.upload_folder(repo_id="tester/run", folder_path={str(folder)!r}).oid
        out["unchanged"] = api.upload_folder(repo_id="tester/run", folder_path={str(folder)!r}).oid
        out["waits"] = waits
        """,
    )
    assert out["repo"] == [f"{hub.url}/tester/run", "tester/run"] and out["again"] == "tester/run"
    stored = hub.files("tester/run")
    assert stored.pop(".gitattributes").startswith(b"*.bin filter=lfs")  # as the Hub makes a new repo
    assert stored == files
    commits = hub.commits("tester/run")
    # Re-uploading the same files makes no commit: the preupload's oids tell the client nothing changed.
    assert [c.title for c in commits] == ["initial commit", "Upload folder using huggingface_hub"]
    assert out["commit"] == out["unchanged"] == commits[-1].oid and len(commits[-1].oid) == 40
    lfs = {"last-checkpoint/model.safetensors", "big.txt"}
    assert {p.rsplit("/", 1)[1] for p in paths(hub, "PUT", "/__lfs/")} == {commits[-1].tree[p].sha256 for p in lfs}
    assert {p for p, blob in commits[-1].tree.items() if blob.lfs} == lfs
    assert not [p for _, p, _ in hub.requests if "xet" in p] and out["waits"] == []

    out = client(
        hub,
        tmp_path,
        """
        out["snapshot"] = snapshot_download("tester/run", allow_patterns=["last-checkpoint/*", "recipe.yaml"])
        out["fetched"] = [p.relative_to(out["snapshot"]).as_posix() for p in Path(out["snapshot"]).rglob("*.*")]
        out["file"] = hf_hub_download("tester/run", "config.json")
        out["listing"] = api.list_repo_files("tester/run")
        out["exists"] = [api.file_exists("tester/run", "recipe.yaml"), api.file_exists("tester/run", "nope.yaml")]
        out["sha"] = api.model_info("tester/run").sha
        """,
    )
    snapshot = Path(out["snapshot"])
    got = {path: (snapshot / path).read_bytes() for path in out["fetched"]}
    assert got == {k: v for k, v in files.items() if k.startswith("last-checkpoint/") or k == "recipe.yaml"}
    assert Path(out["file"]).read_bytes() == files["config.json"]
    assert out["listing"] == sorted([".gitattributes", *files]) and out["exists"] == [True, False]
    assert out["sha"] == commits[-1].oid
    assert sorted(paths(hub, "GET", "/tester/run/resolve/")) == [
        f"/tester/run/resolve/{commits[-1].oid}/last-checkpoint/model.safetensors",
        f"/tester/run/resolve/{commits[-1].oid}/last-checkpoint/trainer_state.json",
        f"/tester/run/resolve/{commits[-1].oid}/recipe.yaml",
        "/tester/run/resolve/main/config.json",
    ]


def test_background_upload_with_ignore_and_delete_patterns(hub, tmp_path):
    first = write(tmp_path / "first", {"keep.txt": b"keep\n", "logs/a.json": b"{}", "logs/b.json": b"[]"})
    second = write(tmp_path / "second", {"c.json": b'{"c": 1}', "scratch.tmp": b"no"})
    out = client(
        hub,
        tmp_path,
        f"""
        api.create_repo("run")
        api.upload_folder(repo_id="tester/run", folder_path={str(first)!r})
        future = api.upload_folder(repo_id="tester/run", folder_path={str(second)!r}, path_in_repo="logs",
                                   commit_message="step 20", ignore_patterns="*.tmp", delete_patterns="*.json",
                                   run_as_future=True)
        out["done"] = future.result(timeout=60).commit_message
        out["file"] = api.upload_file(repo_id="tester/run", path_or_fileobj=b"v2", path_in_repo="keep.txt").oid
        """,
    )
    assert out["done"] == "step 20"
    stored = hub.files("tester/run")
    del stored[".gitattributes"]
    assert stored == {"keep.txt": b"v2", "logs/c.json": b'{"c": 1}'}  # scratch.tmp ignored, a.json and b.json gone
    *_, step, last = hub.commits("tester/run")
    assert (step.title, step.added, sorted(step.deleted)) == (
        "step 20",
        ["logs/c.json"],
        ["logs/a.json", "logs/b.json"],
    )
    assert (last.added, last.oid) == (["keep.txt"], out["file"])


def create_upload_download(folder: Path) -> str:
    """Client code that tries the three calls a run makes, recording each one's outcome."""
    return f"""
        attempt("create", lambda: api.create_repo("run", exist_ok=True))
        attempt("upload", lambda: api.upload_folder(repo_id="tester/run", folder_path={str(folder)!r}))
        attempt("download", lambda: snapshot_download("tester/run"))
        """


@pytest.mark.parametrize("token", ["hf_not_the_token", ""])
def test_a_wrong_or_missing_token_is_an_http_401(hub, tmp_path, token):
    folder = write(tmp_path / "out", {"config.json": b"{}"})
    out = client(
        hub,
        tmp_path,
        create_upload_download(folder),
        token=token,
    )
    for name, url in [("create", "/api/repos/create"), ("upload", "/api/models/tester/run/preupload/main"),
                      ("download", "/api/models/tester/run/revision/main")]:  # fmt: skip
        error = out[name]
        assert (error["type"], error["status"], error["waits"]) == ("huggingface_hub.errors.HfHubHTTPError", 401, [])
        assert error["message"].startswith(f"Client error '401 Unauthorized' for url '{hub.url}{url}' (Request ID: ")
        assert error["message"].endswith(f"\n\n{INVALID_CREDENTIALS}")
        if token:
            assert token not in error["traceback"]  # nor, so, in the message
    assert {status for _, path, status in hub.requests if path != "/api/agent-harnesses"} == {401}


def test_refused_commits_are_an_http_500_after_five_retries(hub, tmp_path):
    hub.mode = "refuse_commits"
    folder = write(tmp_path / "out", {"config.json": b"{}", "model.safetensors": b"\0" * 1024})
    out = client(
        hub,
        tmp_path,
        f"""
        out["repo"] = api.create_repo("run").repo_id  # creating works; committing does not
        attempt("upload", lambda: api.upload_folder(repo_id="tester/run", folder_path={str(folder)!r}))
        attempt("future", lambda: api.upload_folder(repo_id="tester/run", folder_path={str(folder)!r},
                                                    run_as_future=True).result())
        """,
    )
    assert out["repo"] == "tester/run"
    for name in ["upload", "future"]:
        error = out[name]
        assert error["type"] == "huggingface_hub.errors.HfHubHTTPError" and error["status"] == 500
        assert error["waits"] == WAITS  # retried 5 times first: 23 s without skip_client_backoff
        assert error["message"].startswith(f"Server error '500 Internal Server Error' for url '{hub.url}/api/models/")
        assert error["message"].endswith("Internal Error - We're working hard to fix this as soon as possible!")
    assert paths(hub, "POST", "/api/models/tester/run/preupload/") == ["/api/models/tester/run/preupload/main"] * 12
    assert [c.title for c in hub.commits("tester/run")] == ["initial commit"]


def test_a_stopped_hub_is_a_refused_connection(hub, tmp_path):
    hub.stop()
    folder = write(tmp_path / "out", {"config.json": b"{}"})
    out = client(
        hub,
        tmp_path,
        create_upload_download(folder),
    )
    for name, kind, waits in [("create", "httpx2.ConnectError", []), ("upload", "httpx2.ConnectError", WAITS),
                              ("download", "huggingface_hub.errors.LocalEntryNotFoundError", [])]:  # fmt: skip
        assert (out[name]["type"], out[name]["status"], out[name]["waits"]) == (kind, None, waits)
        assert "[Errno 111] Connection refused" in out[name]["message"]
    assert out["download"]["message"].startswith("Got: ConnectError: [Errno 111] Connection refused\nAn error")


def test_the_hub_can_go_down_and_come_back_under_a_running_client(hub, tmp_path):
    folder = write(tmp_path / "out", {"config.json": b"{}"})
    script = PRELUDE + textwrap.dedent(f"""
        api.create_repo("run")
        for step in range(4):
            input()  # the test changes the Hub, then says go
            (Path({str(folder)!r}) / "step.txt").write_text(str(step))
            attempt("step", lambda: api.upload_folder(repo_id="tester/run", folder_path={str(folder)!r}).oid)
            print(json.dumps(out["step"] if isinstance(out["step"], str) else out["step"]["type"]), flush=True)
    """)  # fmt: skip
    env = client_env(hub, tmp_path)
    with subprocess.Popen([sys.executable, "-c", script], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as proc:  # fmt: skip

        def step() -> str:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())

        assert step() == hub.commits("tester/run")[-1].oid  # its connections to the Hub are now open and idle
        hub.stop()
        assert step() == "httpx2.ConnectError"
        hub.start()  # same port, same repos
        assert step() == hub.commits("tester/run")[-1].oid
        hub.mode = "refuse_commits"
        assert step() == "huggingface_hub.errors.HfHubHTTPError"
        assert proc.wait(timeout=30) == 0
    assert hub.files("tester/run")["step.txt"] == b"2"
    assert [c.title for c in hub.commits("tester/run")][1:] == ["Upload folder using huggingface_hub"] * 2
