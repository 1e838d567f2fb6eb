"""Where setup put the runners' non-Python parts: Flink job server, Java expansion service, Prism.

``scripts/setup-java`` resolves Beam's Java modules from Maven Central (``scripts/java/pom.xml``)
into one ``lib/`` directory and writes two *launcher jars* beside it: a jar holding only a
manifest (``Main-Class`` + a relative ``Class-Path`` to ``lib/``), so ``java -jar`` -- which is how
Beam's Python side starts a job server or an expansion service -- runs the right main class on
the full classpath. Beam's own shaded jars would do the same, but the Maven mirror these
machines reach serves none of them for a Beam version with the job service (see setup.py).
``scripts/setup-prism`` builds Beam's Prism runner with Go into the same cache.

Paths depend on the *installed* apache-beam version, so a cache left by another Beam version
is not used (a job server must speak the same runner API as the SDK). Every lookup returns
None when setup has not fetched the artifact: callers then keep Beam's own default.

Stdlib only, and runnable as a script (``python3 pipelines/run/java_artifacts.py launcher-jar ...``)
so setup can write launcher jars before the package is installed.
"""
import os
import sys
import zipfile
from importlib import metadata
from typing import List, Optional

#: The Flink minor version whose runner scripts/java/pom.xml resolves (beam-runners-flink-1.19).
FLINK_VERSION = "1.19"
FLINK_JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"
EXPANSION_SERVICE_MAIN = "org.apache.beam.sdk.expansion.service.ExpansionService"
FLINK_JOB_SERVER_JAR = "flink-%s-job-server.jar" % FLINK_VERSION
EXPANSION_SERVICE_JAR = "expansion-service.jar"


def cache_dir() -> str:
    """``$IOMT_CACHE`` or ``~/.cache/iomt-fhir``: shared by worktrees and clones of the repo."""
    return os.environ.get("IOMT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "iomt-fhir")


def beam_version() -> str:
    """The installed apache-beam version, read without importing Beam."""
    return metadata.version("apache-beam")


def java_dir(version: Optional[str] = None) -> str:
    return os.path.join(cache_dir(), "java", "beam-" + (version or beam_version()))


def _existing(path: str) -> Optional[str]:
    return path if os.path.isfile(path) else None


def flink_job_server_jar() -> Optional[str]:
    """Launcher jar of Beam's Flink job server (embedded Flink for ``--flink_master=[local]``)."""
    return _existing(os.path.join(java_dir(), FLINK_JOB_SERVER_JAR))


def kafka_expansion_service_jar() -> Optional[str]:
    """Launcher jar of Beam's Java expansion service with Kafka IO on its classpath.

    Start it as ``java -jar JAR PORT [--defaultEnvironmentType=...]``; the same classpath is
    the Flink job server's, so transforms it expands can run EMBEDDED in that job server.
    """
    return _existing(os.path.join(java_dir(), EXPANSION_SERVICE_JAR))


def prism_binary() -> Optional[str]:
    """Prism (Beam's Go runner) built by scripts/setup-prism for the installed Beam version."""
    path = os.path.join(cache_dir(), "prism", beam_version(), "prism")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _manifest_line(text: str) -> bytes:
    """One manifest header, folded as the jar spec wants: 72 bytes a line, continuation ' '."""
    data = text.encode("utf-8")
    chunks = [data[:72]]
    data = data[72:]
    while data:
        chunks.append(b" " + data[:71])
        data = data[71:]
    return b"\r\n".join(chunks) + b"\r\n"


#: Packages Flink (its Kryo state serializers: Flink's own Java 17 launch options) and the Java
#: SDK harness reflect into. ``java -jar`` takes them from the manifest (``Add-Opens``): without
#: them a checkpoint on Java 17 fails (InaccessibleObjectException on java.util.Arrays$ArrayList),
#: and Kafka IO on Flink needs checkpoints.
JAVA17_ADD_OPENS = ("java.base/java.lang", "java.base/java.lang.reflect", "java.base/java.io",
                    "java.base/java.net", "java.base/java.nio", "java.base/sun.nio.ch",
                    "java.base/java.text", "java.base/java.time", "java.base/java.util",
                    "java.base/java.util.concurrent", "java.base/java.util.concurrent.atomic",
                    "java.base/java.util.concurrent.locks")


def manifest(main_class: str, class_path: List[str]) -> bytes:
    """A manifest that makes ``java -jar`` run ``main_class`` on ``class_path`` (relative URLs)."""
    return (_manifest_line("Manifest-Version: 1.0")
            + _manifest_line("Main-Class: " + main_class)
            + _manifest_line("Class-Path: " + " ".join(class_path))
            + _manifest_line("Add-Opens: " + " ".join(JAVA17_ADD_OPENS))
            + b"\r\n")


#: slf4j-simple's settings (scripts/java/pom.xml says why that backend): warnings and errors of
#: the job server, the expansion service, Flink and the Kafka client, to stderr, which Beam
#: reads; their INFO lines (a Flink checkpoint every 10 s, Kafka consumer set-up) stay out.
SIMPLE_LOGGER_PROPERTIES = (
    "org.slf4j.simpleLogger.defaultLogLevel=warn\n"
    "org.slf4j.simpleLogger.logFile=System.err\n"
    "org.slf4j.simpleLogger.showDateTime=true\n"
    "org.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ\n"
)


def write_launcher_jar(path: str, main_class: str, lib_dir: str) -> None:
    """Write ``path`` as a manifest-only jar over every jar in ``lib_dir`` (atomically), with
    the logging settings (``SIMPLE_LOGGER_PROPERTIES``) as its one resource.

    Class-Path entries are relative to the launcher jar, so the directory can move as a whole.
    """
    rel = os.path.relpath(lib_dir, os.path.dirname(os.path.abspath(path)))
    jars = sorted(name for name in os.listdir(lib_dir) if name.endswith(".jar"))
    if not jars:
        raise ValueError("no jars in %s" % lib_dir)
    class_path = [(rel + "/" + name).replace(os.sep, "/") for name in jars]
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest(main_class, class_path))
        jar.writestr("simplelogger.properties", SIMPLE_LOGGER_PROPERTIES)
    os.replace(tmp, path)


def _main(argv: List[str]) -> int:
    if len(argv) == 4 and argv[0] == "launcher-jar":
        write_launcher_jar(argv[1], argv[2], argv[3])
        return 0
    if len(argv) == 1 and argv[0] in ("flink-job-server", "expansion-service", "prism"):
        path = {"flink-job-server": flink_job_server_jar,
                "expansion-service": kafka_expansion_service_jar,
                "prism": prism_binary}[argv[0]]()
        if path:
            print(path)
        return 0 if path else 1
    print("usage: java_artifacts.py launcher-jar OUT.jar MAIN_CLASS LIB_DIR\n"
          "       java_artifacts.py flink-job-server|expansion-service|prism",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
