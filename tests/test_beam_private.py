"""The private Beam (and argparse) API kept in transforms/beam_private.py still works with the
installed Beam. Run in both environments (Beam 2.77 in .venv, 2.62 in .venv-flink); an upgrade
that breaks it fails here, with a message saying what changed, before it breaks a coder or the help."""
import argparse

import apache_beam as beam
import pytest
from apache_beam import coders
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import IomtFhirOptions
from transforms import beam_private
from transforms.mapping.measurement import Measurement
from transforms.records.measurement_set import MeasurementSet, MeasurementsCoder

WHERE = f"(apache-beam {beam.__version__}; see transforms/beam_private.py)"


def sample() -> MeasurementSet:
    ms = [Measurement("hr", 10 + i, "dev", (("hr", str(60 + i)),), "pat", None, None, None) for i in range(3)]
    return MeasurementSet((m.occurrence_time, m) for m in ms)


def test_beam_builds_our_stream_coder_impl():
    try:
        impl = MeasurementsCoder().get_impl()
    except NotImplementedError:
        pytest.fail(f"Beam no longer builds a FastCoder's implementation from _create_impl {WHERE}", pytrace=False)
    assert isinstance(impl, beam_private.StreamCoderImpl), (
        f"Beam no longer builds a FastCoder's implementation from _create_impl {WHERE}")
    assert type(impl).__name__ == "_MeasurementsCoderImpl", f"Beam wrapped our coder impl in {type(impl)} {WHERE}"


def test_the_stream_coder_round_trips_alone_nested_and_through_the_registry():
    value = sample()
    coder = MeasurementsCoder()
    test_beam_builds_our_stream_coder_impl()
    assert coder.decode(coder.encode(value)) == value, f"StreamCoderImpl's encode/decode contract changed {WHERE}"
    pair = coders.TupleCoder([coders.StrUtf8Coder(), coder])  # nested: written into Beam's stream
    assert pair.decode(pair.encode(("k", value))) == ("k", value), (
        f"StreamCoderImpl's nested encode_to_stream/decode_from_stream contract changed {WHERE}")
    assert isinstance(coders.registry.get_coder(MeasurementSet), MeasurementsCoder), (
        f"the coder registry no longer maps MeasurementSet to its coder {WHERE}")


def test_options_are_declared_and_read_back_through_add_argparse_args():
    flags = [s for a in beam_private.option_actions(IomtFhirOptions) for s in a.option_strings]
    assert "--device-mapping" in flags and "--fhir-url" in flags, (
        f"_add_argparse_args no longer declares the options on a given parser, or argparse's _actions moved {WHERE}")
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument_group("g").add_argument("--in-a-group")
    assert [a.dest for a in beam_private.parser_actions(parser)] == ["in_a_group"], (
        "argparse's _actions no longer lists a group's arguments (see transforms/beam_private.py)")
    # Beam itself still parses a PipelineOptions subclass through _add_argparse_args
    assert PipelineOptions(["--device-mapping=d.json"]).view_as(IomtFhirOptions).device_mapping == "d.json", (
        f"Beam no longer reads a PipelineOptions subclass's _add_argparse_args {WHERE}")
