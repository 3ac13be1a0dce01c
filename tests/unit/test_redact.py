"""No password in anything lrlab or Hydra prints or writes, whatever characters it holds: ``redact`` (free text),
``redact_uri`` (one URI), ``RedactPasswords`` (log lines) and ``scrub_hydra_files`` (Hydra's own files)."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hydra._internal.grammar.utils import escape_special_characters
from omegaconf import OmegaConf

from lrlab.record.redact import RedactPasswords, redact, redact_uri
from lrlab.sweep.scrub import reserve_private, scrub_hydra_files

HOST = "127.0.0.1:5000"
MARK = "SECRET"  # each password starts and ends with it: a contiguous *** that hides both hides all of it

# What a password may hold: MLflow's basic auth takes "Bob@Tail_Secret99" raw in a URI. "/ ? #" and
# whitespace make the URI one that does not work, but the error it causes prints it.
PASSWORDS = {
    "at": "Bob@Tail_Secret99",
    "ats": "@a@@b@",
    "colon": "a:b@c:d",
    "percent": "%40%3A%2F%23",
    "hash": "a#b",
    "query": "a?b=c",
    "slash": "a/b/",
    "all-delims": "/?#@[]",
    "sub-delims": "!$&()*+,;=",
    "quote": "it's",
    "double-quote": 'say "hi"',
    "both-quotes": "'\"",
    "backslash": "a\\b\\",
    "braces": "{x}<y>`z`|^~",
    "space": "pass word",
    "tab": "a\tb",
    "nbsp": "a\u00a0b",
    "scheme": "a://b",
    "unicode": "ü密码🔑",
    "long": "x@" * 5000,
}
URI = "http://bob:{}@" + HOST


def _uri(password: str) -> str:
    return URI.format(f"{MARK}{password}{MARK}")


# Where a URI appears: printed lines, Hydra's escaped log lines, tags, YAML, reprs, JSON.
FORMS: dict[str, Callable[[str], str]] = {
    "bare": lambda uri: uri,
    "override list": lambda uri: f"tracking_uri='{uri}' lr=0.1" if "'" not in uri else f'tracking_uri="{uri}" lr=0.1',
    "error line": lambda uri: f"lrlab: error: no MLflow server answered at {uri}; start one: mlflow server",
    "hydra log": lambda uri: f"\t#0 : lr=0.1 tracking_uri={escape_special_characters(uri)} seed=1",
    "hydra log last": lambda uri: f"\t#0 : tracking_uri={escape_special_characters(uri)}",
    "yaml": lambda uri: OmegaConf.to_yaml({"lr": 0.1, "tracking_uri": uri, "seed": 1}),
    "yaml overrides": lambda uri: OmegaConf.to_yaml([f"tracking_uri={escape_special_characters(uri)}", "lr=0.1"]),
    "yaml quoted override": lambda uri: yaml.safe_dump([f"tracking_uri='{uri}'", "lr=0.1"]),
    "yaml flow": lambda uri: yaml.safe_dump({"x": [uri, "a@b"]}, default_flow_style=True),
    "repr": repr,
    "repr list": lambda uri: repr([f"tracking_uri={uri}", "lr=0.1"]),
    "repr dict": lambda uri: str({"tracking_uri": uri, "user": "a@b"}),
    "json": lambda uri: json.dumps({"tracking_uri": uri}),
    "json ascii": lambda uri: json.dumps({"tracking_uri": uri}, ensure_ascii=True),
    "sweep": lambda uri: f"tracking_uri={uri},{uri.replace('bob', 'ann')} lr=0.1",
    "two uris": lambda uri: f"a={uri} b={uri.replace('bob', 'ann')}",
    "nested": lambda uri: f"http://example.com/login?next={uri}",
}


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
@pytest.mark.parametrize("password", PASSWORDS.values(), ids=PASSWORDS.keys())
def test_no_password_in_any_form_whatever_it_holds(password: str, form: Callable[[str], str]) -> None:
    text = form(_uri(password))
    assert MARK in text
    hidden = redact(text)
    assert MARK not in hidden and password not in hidden.replace("***", "")
    assert "bob" in hidden and HOST.split(":")[0] in hidden  # who connects, and where, stay


# Raw whitespace after an @ ("a@b c"): in a sentence, "http://u:a@b c@d" may be a URI then a word. Where the
# URI's end is marked (a quote, Hydra's escape, a YAML value that runs to its line's end), it is hidden whole.
DELIMITED = (
    *("override list", "hydra log", "hydra log last", "yaml", "yaml overrides", "yaml quoted override"),
    *("repr", "repr list", "repr dict", "json", "json ascii"),
)


@pytest.mark.parametrize("form", [FORMS[name] for name in DELIMITED], ids=DELIMITED)
@pytest.mark.parametrize("password", ["a@b c", "a@b\tc@d e", "@ @ @"])
def test_whitespace_after_an_at_where_the_uri_is_delimited(password: str, form: Callable[[str], str]) -> None:
    hidden = redact(form(_uri(password)))
    assert MARK not in hidden and "bob" in hidden
    assert redact_uri(_uri(password)) == f"http://bob:***@{HOST}"


@pytest.mark.parametrize("password", PASSWORDS.values(), ids=PASSWORDS.keys())
def test_the_password_alone_is_replaced(password: str) -> None:
    uri = _uri(password)
    assert redact(uri) == redact_uri(uri) == f"http://bob:***@{HOST}"
    assert redact_uri(f"{uri}/api/2.0?x=1") == f"http://bob:***@{HOST}/api/2.0?x=1"
    escaped = escape_special_characters(uri)
    assert redact(f"tracking_uri={escaped} lr=0.1") == "tracking_uri=http\\://bob\\:***@127.0.0.1\\:5000 lr=0.1"


def test_a_password_with_an_at_was_shown_past_its_first_at() -> None:
    # What the reviewer saw: bob:***@Tail_Secret99@127.0.0.1.
    line = "tracking_uri=http://bob:Bob@Tail_Secret99@127.0.0.1:5000"
    assert redact(line) == "tracking_uri=http://bob:***@127.0.0.1:5000"
    assert redact("http\\://bob\\:Bob@Tail_Secret99@127.0.0.1\\:5000") == "http\\://bob\\:***@127.0.0.1\\:5000"


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("http://bob:@h:1", "http://bob:***@h:1"),  # an empty password: *** all the same
        ("http://:pw@h", "http://:***@h"),  # no user name
        ("http://bob@corp.com:pw@h", "http://bob@corp.com:***@h"),  # an e-mail as the user name
        ("postgresql+psycopg2://u:p@db/x", "postgresql+psycopg2://u:***@db/x"),
        ("http://u:p@[::1]:5000/x", "http://u:***@[::1]:5000/x"),
        ("a=http://u:p@h:1,http://v:q@g:2", "a=http://u:***@h:1,http://v:***@g:2"),  # a sweep over two URIs
        ("x http://u:p@h and https://v:q@g.", "x http://u:***@h and https://v:***@g."),
        ("'http://u:p@h', 'a@b'", "'http://u:***@h', 'a@b'"),
        ('{"uri": "http://u:p@h", "who": "a@b"}', '{"uri": "http://u:***@h", "who": "a@b"}'),
        ("- 'tracking_uri=''http://u:it''s@h'''", "- 'tracking_uri=''http://u:***@h'''"),
        ("tracking_uri: http://u:pass word@h:1\nuser: a@b", "tracking_uri: http://u:***@h:1\nuser: a@b"),
        (
            "uri: http://u:a@b c@h:1 # x\n- http://v:q@g\\\n- a@b",
            "uri: http://u:***@h:1 # x\n- http://v:***@g\\\n- a@b",
        ),
        # A later @ in the same URI is taken as the password's end: a path never shows a password.
        ("http://u:p@h:1/x?mail=a@b", "http://u:***@b"),
    ],
)
def test_what_is_hidden(text: str, hidden: str) -> None:
    assert redact(text) == hidden


@pytest.mark.parametrize(
    "text",
    [
        "http://bob@127.0.0.1:5000",  # no password
        "http://127.0.0.1:5000/#/experiments/1",
        "sqlite:///tmp/mlflow.db",
        "file:///tmp/a@b:c/mlruns",
        "http://[::1]:5000/x@y",
        "http://host/a:b@c",  # a colon and an @ in the path
        "at http://127.0.0.1:5000 is down; ask admin@example.com",
        "at http://127.0.0.1:5000', 'user=a@b'",
        "MLFLOW_TRACKING_URI=http://127.0.0.1:5000 (backend postgresql://u:***@db/x)",
        "see https://hydra.cc/docs/1.2/upgrades/ and mail me@x.org: done",
        "user:pass@host without a scheme",
        "",
    ],
)
def test_what_stays(text: str) -> None:
    assert redact(text) == text


def test_redact_uri_takes_one_uri_and_falls_back_to_text() -> None:
    assert redact_uri("http://u:p q@h/x y@z") == "http://u:***@z"  # all of it is the URI
    assert redact_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert redact_uri(" http://u:p@h") == " http://u:***@h"


def test_hydra_log_lines_lose_their_passwords() -> None:
    record = logging.LogRecord("hydra", logging.INFO, __file__, 1, "#%d : %s", (0, _uri("a b")), None)
    assert RedactPasswords().filter(record) and record.getMessage() == f"#0 : http://bob:***@{HOST}"


# Hydra's files: what they hold for `lrlab -m lr=0.1,0.2 tracking_uri=...` (excerpts).
HYDRA_YAML = """\
hydra:
  run:
    dir: outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}
  overrides:
    task:
    - lr=0.1
    - tracking_uri=http\\://bob\\:Bob@Tail_Secret99@127.0.0.1\\:5000
  job:
    override_dirname: lr=0.1,tracking_uri=http\\://bob\\:Bob@Tail_Secret99@127.0.0.1\\:5000
"""
FILES = {
    ".hydra/config.yaml": "lr: 0.1\ntracking_uri: http://bob:Bob@Tail_Secret99@127.0.0.1:5000\n",
    ".hydra/hydra.yaml": HYDRA_YAML,
    ".hydra/overrides.yaml": "- lr=0.1\n- tracking_uri=http\\://bob\\:Bob@Tail_Secret99@127.0.0.1\\:5000\n",
    "multirun.yaml": HYDRA_YAML + "lr: 0.1\ntracking_uri: http://bob:Bob@Tail_Secret99@127.0.0.1:5000\n",
}


def test_scrub_rewrites_hydras_files_private_and_leaves_the_rest(tmp_path: Path) -> None:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o644)
    clean = tmp_path / ".hydra" / "clean.yaml"
    clean.write_text("lr: 0.1\n")
    clean.chmod(0o644)
    inode = clean.stat().st_ino
    other = tmp_path / "notes.yaml"  # not Hydra's
    other.write_text("uri: http://u:p@h\n")

    scrub_hydra_files(tmp_path)

    for name, text in FILES.items():
        path = tmp_path / name
        assert "Secret" not in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == text.replace("Bob@Tail_Secret99", "***")
        yaml.safe_load(path.read_text())  # still YAML
    assert OmegaConf.load(tmp_path / ".hydra/config.yaml").tracking_uri == "http://bob:***@127.0.0.1:5000"
    assert clean.stat().st_ino == inode and stat.S_IMODE(clean.stat().st_mode) == 0o644  # nothing to change
    assert other.read_text() == "uri: http://u:p@h\n"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")) == []
    scrub_hydra_files(tmp_path)  # again: nothing left to do
    scrub_hydra_files(tmp_path / "missing")
    scrub_hydra_files(tmp_path, output_subdir=None)


def test_reserve_private_makes_hydras_write_private(tmp_path: Path) -> None:
    path = tmp_path / "sweep" / "multirun.yaml"
    reserve_private(path)
    with open(path, "w", encoding="utf-8") as file:  # as OmegaConf.save writes it
        file.write("tracking_uri: http://u:p@h\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reserve_private(path)  # there already: left as it is
    assert path.read_text() == "tracking_uri: http://u:p@h\n"


# A bare Hydra app whose callback scrubs where lrlab's does: on_multirun_start reserves multirun.yaml,
# on_job_start scrubs the job's folder and the sweep's, on_multirun_end the sweep's.
APP = """\
import hydra
from omegaconf import DictConfig

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    pass

if __name__ == "__main__":
    main()
"""
CALLBACK = """\
import stat
from pathlib import Path
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lrlab.sweep.scrub import reserve_private, scrub_hydra_files

def _sweep_dir(config):
    return Path(config.hydra.runtime.cwd, config.hydra.sweep.dir)

class Scrub(Callback):
    def on_multirun_start(self, config, **kwargs):
        reserve_private(_sweep_dir(config) / "multirun.yaml")

    def on_job_start(self, config, **kwargs):
        job = Path(config.hydra.runtime.output_dir)
        written = sorted((job / config.hydra.output_subdir).glob("*.yaml"))
        with open(job / "seen.txt", "w") as seen:  # what Hydra left before the scrub
            for path in written:
                print(path.name, "Tail_Secret99" in path.read_text(), file=seen)
            if config.hydra.mode == RunMode.MULTIRUN:
                multirun = _sweep_dir(config) / "multirun.yaml"
                print(multirun.name, oct(stat.S_IMODE(multirun.stat().st_mode)), file=seen)
        scrub_hydra_files(job, config.hydra.output_subdir)
        if config.hydra.mode == RunMode.MULTIRUN:
            scrub_hydra_files(_sweep_dir(config))

    def on_multirun_end(self, config, **kwargs):
        scrub_hydra_files(_sweep_dir(config))
"""
CONFIG = """\
tracking_uri: null
lr: 0.1
hydra:
  job:
    chdir: {chdir}
  callbacks:
    scrub:
      _target_: scrub_callback.Scrub
"""


@pytest.mark.parametrize("chdir", [False, True])
def test_hydra_leaves_no_password_when_the_callback_scrubs(tmp_path: Path, chdir: bool) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(CONFIG.format(chdir=str(chdir).lower()))
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "scrub_callback.py").write_text(textwrap.dedent(CALLBACK))
    uri = "http://bob:Bob@Tail_Secret99@127.0.0.1:5000"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[2])])}
    for args in (["hydra.run.dir=run"], ["-m", "lr=0.1,0.2", "hydra.sweep.dir=multi"]):
        command = [sys.executable, "app.py", *args, f"tracking_uri={uri}"]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    seen = sorted(p.read_text() for p in tmp_path.rglob("seen.txt"))
    assert len(seen) == 3 and all("config.yaml True" in s and "overrides.yaml True" in s for s in seen)
    assert sum("multirun.yaml 0o600" in s for s in seen) == 2  # reserved: private before any scrub
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".yaml", ".log")]
    assert {p.name for p in written} >= {"config.yaml", "hydra.yaml", "overrides.yaml", "multirun.yaml"}
    assert [p for p in written if "Tail_Secret99" in p.read_text()] == []
    hydras = [p for p in written if p.parent.name == ".hydra" or p.name == "multirun.yaml"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in hydras if "tracking_uri" in p.read_text())
