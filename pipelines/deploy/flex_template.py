"""Dataflow Flex Template: its parameter metadata, its spec, and its launcher entry point.

Why generated: ``deploy/dataflow/metadata.json`` must list exactly the pipeline's options
(``pipelines.options.IomtFhirOptions``), and options are added all the time. Writing the
file by hand drifts; here it is derived from the options' own argparse definitions (name,
help, choices, default, type), and ``scripts/dataflow-flex-template --write-metadata``
rewrites it in one command. ``tests/test_flex_template.py`` fails when it is stale.

Why a launcher entry point: Dataflow passes every template parameter as ``--name=value``.
That is what our options parse, except on/off flags (``store_true``), which take no
value; :func:`launcher_argv` turns ``--flag=true`` into ``--flag`` and drops ``=false``.

Standard Beam/Dataflow options (``--runner``, ``--project``, ``--region``, ``--temp_location``,
``--sdk_container_image``, ``--streaming`` ...) are the service's own launch settings and are not
template parameters. Secrets are never parameters (they would be visible in the job): auth
reads them from the worker environment, as on every runner.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Iterable, List, Optional

from pipelines.options import IomtFhirOptions
from transforms.beam_private import option_actions

TEMPLATE_NAME = "iomt-fhir"
TEMPLATE_DESCRIPTION = ("IoMT-to-FHIR connector: device messages (files, Pub/Sub or Event Hubs / Kafka) -> "
                        "FHIR R4 Observations, with iomt-fhir / Azure MedTech device and FHIR mappings.")
#: options ``pipelines.run.launch.main`` refuses to run without (argparse cannot require them:
#: Beam parses every options class for every pipeline in the process)
REQUIRED = ("device_mapping", "fhir_mapping", "dead_letter")
#: parameter types the Dataflow console uses to pick an input widget
_PARAM_TYPES = {"pubsub_subscription": "PUBSUB_SUBSCRIPTION"}


def _option_actions() -> List[argparse.Action]:
    """The argparse actions ``IomtFhirOptions`` registers, in definition order."""
    return option_actions(IomtFhirOptions)  # the options class's own definitions, nothing copied


def _is_flag(action: argparse.Action) -> bool:
    return action.nargs == 0  # store_true / store_false / store_const: no value


def _label(name: str) -> str:
    text = name.replace("_", " ")
    for word, upper in (("fhir", "FHIR"), ("pubsub", "Pub/Sub"), ("id ", "ID ")):
        text = text.replace(word, upper)
    return text[:1].upper() + text[1:]


def _help_text(action: argparse.Action) -> str:
    parts = [action.help or _label(action.dest)]
    if action.choices:
        parts.append("one of " + ", ".join(str(c) for c in action.choices))
    if _is_flag(action):
        parts.append("true or false (default false)")
    elif action.default not in (None, "", argparse.SUPPRESS):
        parts.append(f"default {action.default}")
    return parts[0] + (" (" + "; ".join(parts[1:]) + ")" if parts[1:] else "")


def parameter(action: argparse.Action) -> Dict[str, object]:
    """One ``metadata.json`` parameter (Dataflow ``ParameterMetadata``) for one option."""
    p: Dict[str, object] = {"name": action.dest, "label": _label(action.dest),
                            "helpText": _help_text(action), "isOptional": action.dest not in REQUIRED}
    if _is_flag(action):
        p.update(paramType="BOOLEAN", regexes=["^(true|false)$"])
    elif action.choices:
        p.update(paramType="ENUM", enumOptions=[{"value": str(c)} for c in action.choices],
                 regexes=["^(" + "|".join(str(c) for c in action.choices) + ")$"])
    elif action.type is int:
        p.update(paramType="NUMBER", regexes=["^-?[0-9]+$"])
    else:
        p["paramType"] = _PARAM_TYPES.get(action.dest, "TEXT")
    return p


def metadata() -> Dict[str, object]:
    """The template's ``metadata.json``: every pipeline option, with help text."""
    return {"name": TEMPLATE_NAME, "description": TEMPLATE_DESCRIPTION,
            "parameters": [parameter(a) for a in _option_actions()]}


def metadata_json() -> str:
    return json.dumps(metadata(), indent=2, ensure_ascii=False) + "\n"


def template_spec(image: str, sdk_container_image: Optional[str] = None) -> Dict[str, object]:
    """The Flex Template spec file (what ``gcloud dataflow flex-template build`` writes).

    The launcher image is also the workers' SDK container (our Dockerfile builds one image
    for both), so the workers run exactly the package the launcher translated."""
    return {"image": image, "sdkInfo": {"language": "PYTHON"}, "metadata": metadata(),
            "defaultEnvironment": {"sdkContainerImage": sdk_container_image or image}}


def _flag_names() -> Dict[str, str]:
    """Every spelling of every on/off option -> its canonical ``--dest``."""
    out = {}
    for a in _option_actions():
        if _is_flag(a):
            for s in a.option_strings:
                out[s] = "--" + a.dest
    return out


def launcher_argv(argv: Iterable[str]) -> List[str]:
    """Template parameters as Dataflow passes them -> arguments our options parse.

    ``--single_file_outputs=true`` -> ``--single_file_outputs``; ``=false`` -> dropped.
    Anything else passes through unchanged (Beam's own options included)."""
    flags = _flag_names()
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if eq and name in flags:
            if value.strip().lower() in ("true", "1", "yes"):
                out.append(flags[name])
            elif value.strip().lower() not in ("false", "0", "no", ""):
                raise SystemExit(f"{name} takes true or false")
            continue
        out.append(arg)
    return out


def docker_build_args() -> List[str]:
    """``docker build`` arguments that make deploy/dataflow/Dockerfile's image hold the Beam this
    package is installed with (the launcher translates the job with it; workers must run the same)."""
    from importlib import metadata as importlib_metadata
    return ["--build-arg", "BEAM_VERSION=" + importlib_metadata.version("apache-beam")]


def tool_main(argv: Optional[List[str]] = None, metadata_path: str = "deploy/dataflow/metadata.json") -> int:
    """``scripts/dataflow-flex-template``: regenerate or check ``metadata.json``, write the spec."""
    import pathlib

    metadata_file = pathlib.Path(metadata_path)
    p = argparse.ArgumentParser(prog="dataflow-flex-template")
    p.add_argument("--write-metadata", action="store_true", help=f"rewrite {metadata_file}")
    p.add_argument("--check", action="store_true", help=f"exit 1 when {metadata_file} is stale")
    p.add_argument("--image", help="the launcher/worker image (REGION-docker.pkg.dev/PROJECT/REPO/iomt-fhir:TAG)")
    p.add_argument("--sdk-container-image", help="workers' image, if not --image")
    p.add_argument("--output", help="where to write the template spec JSON (local path or gs://...)")
    p.add_argument("--build-args", action="store_true",
                   help="print docker build's --build-arg for the installed Beam (the image's SDK version)")
    a = p.parse_args(argv)
    if a.build_args:
        print(" ".join(docker_build_args()))
        return 0
    if not (a.write_metadata or a.check or a.output):
        p.error("give --write-metadata, --check, --build-args or --image IMAGE --output SPEC")
    if a.output and not a.image:
        p.error("--output needs --image")
    text = metadata_json()
    if a.write_metadata:
        metadata_file.write_text(text, encoding="utf-8")
        print(f"wrote {metadata_file} ({len(metadata()['parameters'])} parameters)", file=sys.stderr)
    if a.check and (not metadata_file.is_file() or metadata_file.read_text(encoding="utf-8") != text):
        print(f"{metadata_file} is stale: run scripts/dataflow-flex-template --write-metadata", file=sys.stderr)
        return 1
    if a.output:
        from apache_beam.io.filesystems import FileSystems

        spec = json.dumps(template_spec(a.image, a.sdk_container_image), indent=2) + "\n"
        with FileSystems.create(a.output, mime_type="application/json") as f:
            f.write(spec.encode("utf-8"))
        print(f"wrote template spec {a.output}", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the template launcher (``FLEX_TEMPLATE_PYTHON_PY_FILE``)."""
    from pipelines.run import launch

    return launch.main(launcher_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
