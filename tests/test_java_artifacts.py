"""Launcher jars and the cache layout of pipelines/run/java_artifacts.py; the pins agree."""
import os
import re
import zipfile

import pytest

from ci_fixtures import missing
from conftest import REPO
from pipelines.run import java_artifacts


def test_manifest_lines_are_folded_at_72_bytes():
    text = java_artifacts.manifest("a.B", ["lib/%03d-some-long-artifact-name-1.2.3.jar" % i for i in range(40)])
    lines = text.split(b"\r\n")
    assert max(len(line) for line in lines) <= 72
    unfolded = text.replace(b"\r\n ", b"")
    assert b"Main-Class: a.B\r\n" in unfolded
    assert b"lib/039-some-long-artifact-name-1.2.3.jar\r\n" in unfolded


def test_launcher_jar_class_path_is_relative_to_the_jar(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("b.jar", "a.jar", "notes.txt"):
        (lib / name).write_bytes(b"")
    out = tmp_path / "run.jar"
    java_artifacts.write_launcher_jar(str(out), "x.Main", str(lib))
    with zipfile.ZipFile(out) as jar:
        text = jar.read("META-INF/MANIFEST.MF").replace(b"\r\n ", b"").decode()
    assert "Class-Path: lib/a.jar lib/b.jar\r\n" in text
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError):
        java_artifacts.write_launcher_jar(str(tmp_path / "x.jar"), "x.Main", str(tmp_path / "empty"))


def test_paths_are_none_until_setup_fetched_them(tmp_path, monkeypatch):
    monkeypatch.setenv("IOMT_CACHE", str(tmp_path))
    assert (java_artifacts.flink_job_server_jar(), java_artifacts.kafka_expansion_service_jar(),
            java_artifacts.prism_binary()) == (None, None, None)


def constraint(name: str, path: str) -> str:
    (version,) = re.findall(rf"^{re.escape(name)}==(\S+)$", (REPO / path).read_text(), re.M)
    return version


def test_java_and_go_pins_are_the_beam_of_their_environment():
    """A job server or Prism of another Beam version may not speak this SDK's runner API: the Java
    jars are .venv-flink's Beam (constraints-flink.txt), Prism is built at .venv's (constraints.txt)
    and at every version it has a folder for, and the installed Beam is one of the two."""
    pom = (REPO / "scripts/java/pom.xml").read_text()
    main, flink = constraint("apache-beam", "constraints.txt"), constraint("apache-beam", "constraints-flink.txt")
    assert re.search(r"<beam.version>(.*)</beam.version>", pom).group(1) == flink
    assert re.search(r"<flink.version>(.*)</flink.version>", pom).group(1) == java_artifacts.FLINK_VERSION
    assert (REPO / "scripts/prism" / main / "go.mod").is_file(), "no Prism module for constraints.txt's Beam"
    for gomod in (REPO / "scripts/prism").glob("*/go.mod"):
        required = re.search(r"github.com/apache/beam/sdks/v2 v(\S+)", gomod.read_text()).group(1)
        assert required == gomod.parent.name, gomod
    assert java_artifacts.beam_version() in (main, flink), "run the tests in .venv or .venv-flink (scripts/test)"


def test_launcher_jar_carries_the_logging_settings(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "a.jar").write_bytes(b"")
    out = tmp_path / "run.jar"
    java_artifacts.write_launcher_jar(str(out), "x.Main", str(lib))
    with zipfile.ZipFile(out) as jar:
        props = jar.read("simplelogger.properties").decode()
    assert "org.slf4j.simpleLogger.defaultLogLevel=warn" in props.splitlines()


def test_cached_java_jars_log_through_slf4j_simple_never_back_into_java_util_logging():
    """With Kafka IO EMBEDDED, the Java SDK harness inside the job server forwards every
    java.util.logging record to the job server's logging service, which logs it again through
    SLF4J: an SLF4J binding to java.util.logging (slf4j-jdk14) made each line go round forever
    and kept a core busy. The jars setup caches must bind SLF4J elsewhere."""
    lib = java_artifacts.java_dir("2.62.0")
    if not os.path.isdir(os.path.join(lib, "lib")):
        missing(f"Beam 2.62's Java jars not cached at {lib} (scripts/setup-java)")
    jars = os.listdir(os.path.join(lib, "lib"))
    assert not [j for j in jars if j.startswith("slf4j-jdk14")]
    assert [j for j in jars if j.startswith("slf4j-simple")]
    with zipfile.ZipFile(os.path.join(lib, java_artifacts.FLINK_JOB_SERVER_JAR)) as jar:
        assert "simplelogger.properties" in jar.namelist()
