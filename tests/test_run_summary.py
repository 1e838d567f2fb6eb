"""Exit status and summary that tell the truth (issue 11): 0 all written, 1 infrastructure
failures dead-lettered or a stage over --max-dead-letter-fraction, 2 refused at launch."""
import pytest

from pipelines.run import launch
from pipelines.run.summary import from_counters
from pipeline_fixtures import read_lines, write_inputs


def test_data_errors_alone_exit_0_infrastructure_failures_exit_1():
    raw = {("iomt_fhir", "DeviceEvent"): 100, ("iomt_fhir", "MeasurementGroup"): 10,
           ("iomt_fhir", "Errors.normalization.InvalidDataFormatException"): 3,
           ("FhirResourceSaved", "ObservationCreated"): 9}
    s = from_counters(raw, "out/dead")
    assert s.exit_code == 0 and s.dead_letters == {"normalization": {"InvalidDataFormatException": 3}}
    assert s.lines("iomt-fhir replay ...")[1:] == [
        "dead letters: 3 in out/dead*: normalization 3 (InvalidDataFormatException=3)",
        "replay them (after fixing the cause): iomt-fhir replay ..."]
    assert from_counters(raw, "out/dead", 0.05).exit_code == 0  # 3 % <= 5 %
    over = from_counters(raw, "out/dead", 0.02)
    assert over.exit_code == 1 and over.lines()[-1] == (
        "exit 1: stage normalization dead-lettered 3.0% of its input, more than --max-dead-letter-fraction 0.02")
    raw[("Errors", "FHIRServiceError")] = 1  # the writer's counter: stage fhir_write
    s = from_counters(raw, "out/dead")
    assert s.exit_code == 1 and s.dead_letters["fhir_write"] == {"FHIRServiceError": 1}
    assert s.lines()[-1] == ("exit 1: 1 infrastructure failure(s) dead-lettered (stages fhir_write/identity): "
                             "not everything was written")
    assert s.to_json()["exit_code"] == 1 and s.to_json()["dead_letter_files"] == "out/dead*"


def test_max_dead_letter_fraction_fails_a_run(tmp_path, capsys):
    d = write_inputs(tmp_path)  # 7 messages, 2 of them fail normalization
    base = ["--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}", f"--fhir-mapping={d / 'fm.json'}",
            f"--input={d / 'in.jsonl'}", f"--output={d / 'obs'}", f"--dead-letter={d / 'dead'}",
            "--single-file-outputs"]
    assert launch.main(base + ["--max-dead-letter-fraction=0.2"]) == 1
    err = capsys.readouterr().err
    assert "exit 1: stage normalization dead-lettered 28.6% of its input, more than " \
           "--max-dead-letter-fraction 0.2" in err
    assert len(read_lines(d / "dead.jsonl")) == 2


@pytest.mark.fhir_server
def test_identity_lookups_refused_exit_1_with_where_and_how_to_replay(tmp_path, fault_proxy, capsys):
    fault_proxy.require_tokens = {"nobody-has-it"}  # every request: 401, a permanent failure
    d = write_inputs(tmp_path)
    rc = launch.main(["--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}",
                            f"--fhir-mapping={d / 'fm.json'}", f"--input={d / 'in.jsonl'}",
                            f"--fhir-url={fault_proxy.url}", "--skip-preflight",
                            f"--dead-letter={d / 'dead'}", "--single-file-outputs"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = [l for l in err.splitlines() if l.startswith(("dead letters:", "replay them", "exit 1"))]
    assert lines == [
        f"dead letters: 4 in {d / 'dead'}*: normalization 2 (IncompatibleDataException=1, "
        "InvalidDataFormatException=1); identity 2 (FHIRServiceError=2)",
        f"replay them (after fixing the cause): iomt-fhir replay --dead-letter '{d / 'dead'}*' --device-mapping "
        f"{d / 'dm.json'} --fhir-mapping {d / 'fm.json'} --fhir-url {fault_proxy.url}",
        "exit 1: 2 infrastructure failure(s) dead-lettered (stages fhir_write/identity): not everything was written"]
    # and without --skip-preflight the same destination is refused at launch
    rc = launch.main(["--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}",
                            f"--fhir-mapping={d / 'fm.json'}", f"--input={d / 'in.jsonl'}",
                            f"--fhir-url={fault_proxy.url}", f"--dead-letter={d / 'dead2'}"])
    assert rc == 2 and capsys.readouterr().err == (
        f"iomt-fhir: error: FHIR server check: GET {fault_proxy.url}/metadata answered 401 (credentials "
        "refused): Unauthorized\n")
