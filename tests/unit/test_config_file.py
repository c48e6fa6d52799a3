"""podnode's settings: the option table drives flags, TOML keys and POD_* variables; the file < the environment <
the flags; every bad input is one line naming its source and exit 2; --print-config reads back."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from podnode.config import NodeConfig
from podnode.config_file import render_toml
from podnode.options import OPTIONS
from podnode.server.main import parse_args, settings

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str, mode: int = 0o600) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def fails(capsys, argv: list[str], environ: dict[str, str] | None = None) -> str:
    """parse_args must exit 2 with one line on stderr: that line."""
    with pytest.raises(SystemExit) as exc:
        parse_args(argv, environ or {})
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 or err.startswith("usage:"), err
    return err.strip().splitlines()[-1]


def test_the_file_the_environment_and_the_flags_each_win_over_the_one_before(tmp_path):
    conf = write(tmp_path / "pod.toml", 'id = "f1"\nslots = 2\nmax_voters = 7\ncluster_name = "filec"\n'
                 'http = "127.0.0.1:8181"\npeers = ["h1:1", "h2:2"]\nannounce = false\n')
    cfg = parse_args(["--config", conf], {})
    assert (cfg.node_id, cfg.slots, cfg.max_voters, cfg.cluster_name, cfg.http_port, cfg.peers, cfg.announce) == \
        ("f1", 2, 7, "filec", 8181, ["h1:1", "h2:2"], False)
    env = {"POD_SLOTS": "3", "POD_MAX_VOTERS": "9", "POD_ANNOUNCE": "yes", "POD_PEERS": "h3:3"}
    cfg = parse_args(["--config", conf], env)
    assert (cfg.node_id, cfg.slots, cfg.max_voters, cfg.announce, cfg.peers) == ("f1", 3, 9, True, ["h3:3"])
    cfg = parse_args(["--config", conf, "--slots", "4", "--id", "n9", "--no-announce"], env)
    assert (cfg.node_id, cfg.slots, cfg.max_voters, cfg.announce, cfg.cluster_name) == ("n9", 4, 9, False, "filec")
    assert cfg.data_dir == str(Path("pod-data") / "n9")   # computed from the id that won


def test_a_repeatable_flag_replaces_the_list_of_the_file_and_the_environment(tmp_path):
    conf = write(tmp_path / "pod.toml", 'id = "a"\nallow_origin = ["https://file.example"]\n')
    assert parse_args(["--config", conf], {}).allow_origins == ("https://file.example",)
    env = {"POD_ALLOW_ORIGIN": "https://e1.example, https://e2.example"}
    assert parse_args(["--config", conf], env).allow_origins == ("https://e1.example", "https://e2.example")
    argv = ["--config", conf, "--allow-origin", "https://f1.example", "--allow-origin", "https://f2.example"]
    assert parse_args(argv, env).allow_origins == ("https://f1.example", "https://f2.example")


def test_the_config_file_may_come_from_pod_config(tmp_path):
    conf = write(tmp_path / "pod.toml", 'id = "f2"\nslots = 5\n')
    assert parse_args([], {"POD_CONFIG": conf}).slots == 5


def test_the_older_variables_still_work_and_the_new_names_win(tmp_path):
    cfg = parse_args([], {"POD_NODE_ID": "old", "POD_CLUSTER": "c1", "POD_SECRET": "s3cr3t", "POD_LOG_LEVEL": "DEBUG"})
    assert (cfg.node_id, cfg.cluster_name, cfg.secret, cfg.log_level) == ("old", "c1", "s3cr3t", "debug")
    cfg = parse_args([], {"POD_ID": "new", "POD_NODE_ID": "old", "POD_CLUSTER": "c1", "POD_CLUSTER_NAME": "c2"})
    assert (cfg.node_id, cfg.cluster_name) == ("new", "c2")
    assert parse_args(["--id", "a"], {"POD_SECRET": ""}).secret is None   # empty: not set


def test_every_option_reaches_the_node_config(tmp_path):
    """Set alone to another value than its default, each option of the table changes the NodeConfig: none is
    read and then forgotten."""
    provider_json = tmp_path / "provider.json"
    provider_json.write_text('{"slots": 1}')
    other = {"str": "x1", "int": 3, "float": 1.5, "bool": None, "addr": "127.0.0.2:7001", "list": ["a:1"]}
    special = {"id": "other", "provider_config": str(provider_json), "join": "http://h:1",
               "allow_origin": ["https://ops.example"], "tls_cert": None, "tls_key": None}
    base = parse_args(["--id", "n1", "--slots", "1"], {})
    for opt in OPTIONS:
        if opt.key in ("tls_cert", "tls_key"):   # only together (NodeConfig checks): below
            continue
        value = special.get(opt.key, other[opt.kind])
        if opt.choices:
            value = next(c for c in opt.choices if c != opt.default)
        if opt.kind == "bool":
            value = False if opt.default is None else not opt.default   # allow_file_urls: on loopback, True
        flags = {"id": "n1", "slots": 1, opt.key: value}
        toml = "\n".join(f"{k} = {_toml(v)}" for k, v in flags.items())
        cfg = parse_args(["--config", write(tmp_path / f"{opt.key}.toml", toml)], {})
        assert cfg != base, f"option {opt.key} = {value!r} left the NodeConfig as it was"
    both = write(tmp_path / "tls.toml", 'id = "n1"\nslots = 1\ntls_cert = "c.pem"\ntls_key = "k.pem"\n')
    assert (parse_args(["--config", both], {}).tls_cert, parse_args(["--config", both], {}).tls_key) == \
        ("c.pem", "k.pem")


def _toml(value) -> str:
    import json
    return ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)


def test_an_unknown_key_names_the_key_and_the_file(tmp_path, capsys):
    conf = write(tmp_path / "pod.toml", 'id = "a"\nslot = 3\n')
    line = fails(capsys, ["--config", conf])
    assert line == f"podnode: error: config file {conf}: unknown key 'slot' (did you mean 'slots'?)"
    conf = write(tmp_path / "table.toml", '[raft]\nport = 1\n')
    assert "expected a string HOST:PORT" in fails(capsys, ["--config", conf])


@pytest.mark.parametrize("text, message", [
    ('slots = "four"', "slots: expected an integer, got str 'four'"),
    ("slots = 2.5", "slots: expected an integer, got float 2.5"),
    ("slots = true", "slots: expected an integer, got bool True"),
    ('announce = "no"', "announce: expected true or false, got str 'no'"),
    ("peers = [1, 2]", "peers: expected an array of strings"),
    ('cgroups = "v3"', "cgroups: expected one of auto, v2, v1, none, got 'v3'"),
    ('http = "localhost"', "http: expected HOST:PORT, got 'localhost'"),
])
def test_a_value_of_the_wrong_type_in_the_file_is_refused(tmp_path, capsys, text, message):
    conf = write(tmp_path / "pod.toml", 'id = "a"\n' + text + "\n")
    line = fails(capsys, ["--config", conf])
    assert line.startswith(f"podnode: error: config file {conf}: ") and message in line, line


def test_a_bad_variable_names_the_variable(capsys):
    assert fails(capsys, ["--id", "a"], {"POD_SLOTS": "many"}) == \
        "podnode: error: environment variable POD_SLOTS: expected an integer, got 'many'"
    assert fails(capsys, ["--id", "a"], {"POD_ANNOUNCE": "perhaps"}) == \
        "podnode: error: environment variable POD_ANNOUNCE: expected true or false, got 'perhaps'"


def test_a_missing_or_broken_file_is_one_line(tmp_path, capsys):
    missing = str(tmp_path / "nope.toml")
    assert fails(capsys, ["--config", missing]) == \
        f"podnode: error: cannot read config file {missing}: No such file or directory"
    broken = write(tmp_path / "broken.toml", "slots = \n")
    assert fails(capsys, ["--config", broken]).startswith(f"podnode: error: config file {broken} is not valid TOML")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"id = \"\xff\"\n")
    assert "is not valid TOML" in fails(capsys, ["--config", str(binary)])


def test_no_id_anywhere_is_an_error(capsys):
    assert fails(capsys, []) == "podnode: error: no node id: give --id, id in the config file, or POD_ID"


def test_a_bad_combination_is_one_line(tmp_path, capsys):
    conf = write(tmp_path / "pod.toml", 'id = "a"\nauth = "none"\nhttp = "0.0.0.0:8080"\n')
    assert "auth none is only for a node whose HTTP binds loopback" in fails(capsys, ["--config", conf])


def test_the_secret_is_taken_from_a_file_only_its_owner_can_read(tmp_path, capsys):
    text = 'id = "a"\nsecret = "file-secret"\n'
    assert parse_args(["--config", write(tmp_path / "ok.toml", text, 0o600)], {}).secret == "file-secret"
    assert parse_args(["--config", write(tmp_path / "ro.toml", text, 0o400)], {}).secret == "file-secret"
    for mode in (0o644, 0o640, 0o604, 0o660):
        conf = write(tmp_path / f"m{mode:o}.toml", text, mode)
        assert fails(capsys, ["--config", conf]) == (
            f"podnode: error: config file {conf} holds the cluster secret but others may read it "
            f"(mode {mode:03o}): chmod 600 {conf}, or give the secret in POD_SECRET")
    # a readable file without the secret is fine
    assert parse_args(["--config", write(tmp_path / "pub.toml", 'id = "a"\n', 0o644)], {}).node_id == "a"
    # the environment still wins over the file's secret
    assert parse_args(["--config", str(tmp_path / "ok.toml")], {"POD_SECRET": "env"}).secret == "env"


def test_print_config_reads_back_as_the_same_config_without_the_secret(tmp_path):
    conf = write(tmp_path / "pod.toml", 'id = "f1"\nslots = 2\nsecret = "do-not-print"\n'
                 'allow_origin = ["https://a.example"]\nexec_timeout_s = 12\n')
    env = {"POD_SLOTS": "3", "POD_CLUSTER": "blue"}
    s, _ = settings(["--config", conf, "--max-voters", "4"], env)
    text = render_toml(s)
    assert "do-not-print" not in text
    assert "slots = 3  # env POD_SLOTS" in text and "max_voters = 4  # flag --max-voters" in text
    assert f"exec_timeout_s = 12.0  # file {conf}" in text and 'cluster_name = "blue"  # env POD_CLUSTER' in text
    assert "# secret = (set, not shown)" in text
    again = parse_args(["--config", write(tmp_path / "printed.toml", text, 0o644)], {})
    original = parse_args(["--config", conf, "--max-voters", "4"], env)
    assert dataclasses.replace(original, secret=None) == again


def test_podnode_print_config_runs_and_exits_0(tmp_path):
    conf = write(tmp_path / "pod.toml", 'id = "f1"\nsecret = "hidden-value"\n')
    proc = subprocess.run([sys.executable, "-m", "podnode", "--config", conf, "--print-config"],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "POD_SLOTS": "6"})
    assert proc.returncode == 0, proc.stderr
    assert 'id = "f1"' in proc.stdout and "slots = 6  # env POD_SLOTS" in proc.stdout
    assert "hidden-value" not in proc.stdout + proc.stderr


def test_the_flags_are_the_table(capsys):
    """--help lists every option of the table, with its variable; and nothing the table does not have."""
    from podnode.server.main import build_parser
    flags = {a.option_strings[0] for a in build_parser()._actions if a.option_strings}
    assert flags - {"-h", "--config", "--print-config"} == {o.flag for o in OPTIONS}
    assert NodeConfig(node_id="x").log_format == "text"


def test_the_readme_option_table_is_the_rendered_one():
    """README.md's table between <!-- options:begin --> and <!-- options:end --> is podnode.options.markdown_table()
    (run `python -c 'from podnode.options import markdown_table; print(markdown_table())'` to regenerate it)."""
    from podnode.options import markdown_table
    text = (REPO / "README.md").read_text()
    begin, end = "<!-- options:begin -->", "<!-- options:end -->"
    assert begin in text and end in text, f"README.md has no {begin} ... {end} section for the option table"
    section = text.split(begin, 1)[1].split(end, 1)[0]
    assert section.strip() == markdown_table().strip(), \
        "README.md's option table is not podnode.options.markdown_table(): paste its output between the markers"
