"""Every problem found at launch: one line on stderr, exit 2, no traceback (issue 12).

Run through the real console script (``.venv/bin/iomt-fhir``), as a newcomer meets it.
The cases start together (each process spends most of its time importing Beam), so the
table costs about as much as two runs.
"""
import json
import pathlib
import subprocess

import pytest

from cli_fixtures import command
from pipelines.launch_errors import check_http_url, LaunchError, safe_url, take_debug_flag
from transforms.fhir.identity import MODES as IDENTITY_MODES

REPO = pathlib.Path(__file__).resolve().parent.parent
DM = REPO / "templates" / "devicecontent.json"
FM = REPO / "templates" / "fhirmapping.json"
SAMPLE = REPO / "templates" / "sample" / "messages.jsonl"


def start(args, env=None):
    return subprocess.Popen(command() + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def finish(proc):
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("launch")
    (d / "binary.json").write_bytes(b"\xff\xfe{\x00}")
    (d / "broken.json").write_text('{"templateType": "CollectionContent", "template": [\n')
    (d / "unreadable.json").write_text("{}")
    (d / "unreadable.json").chmod(0)
    return d


def base(tmp, **over):
    args = {"--device-mapping": DM, "--fhir-mapping": FM, "--input": SAMPLE,
            "--output": tmp / "obs", "--dead-letter": tmp / "dead", "--runner": "FnApiRunner"}
    args.update(over)
    out = ["run"]
    for k, v in args.items():
        if v is not None:
            out.append(f"{k}={v}")
    return out


CASES = {
    "missing mapping": (dict(**{"--device-mapping": "nope.json"}),
                        "iomt-fhir: error: --device-mapping nope.json: cannot read the mapping: No such file or directory"),
    "not UTF-8": (dict(**{"--fhir-mapping": "{d}/binary.json"}),
                  "iomt-fhir: error: --fhir-mapping {d}/binary.json: not UTF-8 text (byte 0)"),
    "pattern matches nothing": (dict(**{"--input": "/nonexistent/*.jsonl"}),
                                "iomt-fhir: error: --input '/nonexistent/*.jsonl' matches no file (quote a glob, "
                                "e.g. --input 'archive/*.jsonl', so the shell does not expand it)"),
    "out of range": (dict(**{"--max-in-flight": "0"}), "iomt-fhir: error: --max-in-flight must be at least 1"),
    "unknown runner": (dict(**{"--runner": "Nope"}),
                       "iomt-fhir: error: --runner Nope: not a Beam runner (e.g. FnApiRunner, DirectRunner, "
                       "PrismRunner, DataflowRunner, FlinkRunner, or a runner class's full name)"),
    "not http(s)": (dict(**{"--fhir-url": "ftp://user:secret@x/fhir?key=k", "--output": None}),
                    "iomt-fhir: error: --fhir-url ftp://x/fhir is not an http(s) URL (e.g. https://fhir.example.org/fhir)"),
}


IN_PROCESS = {  # the same path as above, checked in this process (no Beam start-up per case)
    "not an int": ({"--bundle-size": "abc"},
                   "iomt-fhir: error: argument --bundle_size/--bundle-size: invalid int value: 'abc'"),
    "fraction out of range": ({"--max-dead-letter-fraction": "1.5"},
                              "iomt-fhir: error: --max-dead-letter-fraction must be between 0 and 1"),
    "missing option": ({"--dead-letter": None},
                       "iomt-fhir: error: missing required options: --dead-letter (iomt-fhir run --help)"),
    "unreadable (a folder)": ({"--fhir-mapping": REPO / "templates"},
                              f"iomt-fhir: error: --fhir-mapping {REPO / 'templates'}: cannot read the mapping: "
                              "Is a directory"),
    "not a choice": ({"--identity-mode": "Foo"},
                     "iomt-fhir: error: argument --identity_mode/--identity-mode: invalid choice: 'Foo' "
                     "(choose from " + ", ".join(repr(m) for m in IDENTITY_MODES) + ")"),
}


@pytest.mark.parametrize("name", sorted(IN_PROCESS))
def test_option_errors_in_process(name, tmp_path, capsys):
    from pipelines import cli
    over, expected = IN_PROCESS[name]
    assert cli.main(base(tmp_path, **over)) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", expected + "\n")


@pytest.mark.timeout(360)  # ~20 launches as processes: ~21 s idle, past 120 s at load average 20
def test_each_launch_error_is_one_line_exit_2_no_traceback(files, tmp_path):
    import os
    if os.geteuid() == 0:  # root reads any file: the unreadable case cannot happen here
        unreadable = None
    else:
        unreadable = start(base(tmp_path, **{"--device-mapping": files / "unreadable.json"}))
    procs = {name: start([a.replace("{d}", str(files)) for a in base(tmp_path, **over)])
             for name, (over, _) in CASES.items()}
    procs["broken JSON"] = start(base(tmp_path, **{"--device-mapping": files / "broken.json"}))
    results = {name: finish(p) for name, p in procs.items()}
    for name, (_, expected) in CASES.items():
        rc, out, err = results[name]
        assert (name, rc, err) == (name, 2, expected.replace("{d}", str(files)) + "\n")
        assert "Traceback" not in err and out == ""
    rc, out, err = results["broken JSON"]
    # an invalid mapping still lists the validator's line-numbered problems
    assert (rc, err) == (2, f"Invalid mappings:\n{files / 'broken.json'}: Invalid JSON: unexpected end of "
                            "content. Line 2, position 1.\n")
    if unreadable is not None:
        rc, _, err = finish(unreadable)
        assert rc == 2 and "Permission denied" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "obs.jsonl").exists() and not list(tmp_path.glob("dead*"))


def test_debug_shows_the_traceback_and_version_help_are_plain(tmp_path):
    debug = start(base(tmp_path, **{"--device-mapping": "nope.json"}) + ["--debug"])
    version = start(["--version"])
    top = start(["--help"])
    run_help = start(["run", "--help"])
    rc, _, err = finish(debug)
    assert rc == 2 and "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == "iomt-fhir: error: --device-mapping nope.json: cannot read the mapping: " \
                                   "No such file or directory"
    rc, out, _ = finish(version)
    import apache_beam
    import platform
    assert rc == 0 and out == f"iomt-fhir 0.1.0 (apache-beam {apache_beam.__version__}, " \
                              f"Python {platform.python_version()})\n"
    rc, out, _ = finish(top)
    assert rc == 0 and "``" not in out and out.startswith("usage: iomt-fhir")
    rc, out, err = finish(run_help)
    assert rc == 0 and err == ""
    groups = [line for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert groups[:5] == ["mappings:", "source (exactly one of --input, --pubsub_subscription, "
                          "--kafka_topic / --eventhub_name):", "grouping:", "FHIR destination:", "outputs:"]
    assert "--bundle-size N  " in out and "default 50, AWS HealthLake 150" in out and "(default: 86400)" in out
    assert "iomt-fhir run --help-beam" in out and "--runner=DataflowRunner" in out and "FnApiRunner" in out
    assert "``" not in out


def test_safe_url_and_debug_flag(monkeypatch):
    monkeypatch.setenv("IOMT_FHIR_DEBUG", "0")  # take_debug_flag sets it; restored afterwards
    assert take_debug_flag(["run", "--x"]) == (False, ["run", "--x"])
    assert safe_url("https://u:p@h.example:8443/fhir?code=s#x") == "https://h.example:8443/fhir"
    assert take_debug_flag(["run", "--debug", "--x"]) == (True, ["run", "--x"])
    with pytest.raises(LaunchError):
        check_http_url("--fhir-url", "localhost:8080/fhir")
    check_http_url("--fhir-url", "http://127.0.0.1:8080/fhir")


def test_every_help_text_is_plain_text():
    from pipelines import cli
    from pipelines.run import help as run_help
    parser = cli.build_parser()
    helps = {"iomt-fhir": parser.format_help(), "run": run_help.pipeline_parser().format_help()}
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            helps[name] = sub.format_help()
    assert {"validate", "normalize", "transform", "run", "check", "replay"} <= set(helps)
    assert {name for name, text in helps.items() if "`" in text} == set()
