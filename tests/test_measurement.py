import pytest

from transforms.mapping.errors import IncompatibleDataException
from transforms.mapping.measurement import Measurement
from transforms.mapping.timeutil import parse_iso


def test_json_round_trip():
    m = Measurement("heartrate", parse_iso("2019-02-01T22:46:01.875Z"), "device123", (("hr", "78"),),
                    patient_id="p1", ingestion_time=parse_iso("2019-02-01T22:46:02.1Z"))
    j = m.to_json()
    assert j == {"Type": "heartrate", "OccurrenceTimeUtc": "2019-02-01T22:46:01.875Z",
                 "IngestionTimeUtc": "2019-02-01T22:46:02.1Z", "DeviceId": "device123",
                 "PatientId": "p1", "EncounterId": None, "CorrelationId": None,
                 "Properties": [{"Name": "hr", "Value": "78"}]}
    assert list(j) == ["Type", "OccurrenceTimeUtc", "IngestionTimeUtc", "DeviceId", "PatientId",
                       "EncounterId", "CorrelationId", "Properties"]
    assert Measurement.from_json(j) == m


@pytest.mark.parametrize("obj", [
    {"OccurrenceTimeUtc": "2019-01-01T00:00:00Z", "DeviceId": "d"},
    {"Type": "t", "DeviceId": "d"},
    {"Type": "t", "OccurrenceTimeUtc": "yesterday", "DeviceId": "d"},
    {"Type": "t", "OccurrenceTimeUtc": "2019-01-01T00:00:00Z"},
    [1, 2],
    {"Type": "t", "OccurrenceTimeUtc": "2019-01-01T00:00:00Z", "DeviceId": "d", "Properties": 5},
    {"Type": "t", "OccurrenceTimeUtc": "2019-01-01T00:00:00Z", "DeviceId": "d",
     "Properties": [{"Name": "hr", "Value": None}]},
    {"Type": "t", "OccurrenceTimeUtc": "2019-01-01T00:00:00Z", "DeviceId": "d",
     "Properties": [{"Name": "hr", "Value": {"x": 1}}]},
])
def test_from_json_rejects(obj):
    with pytest.raises(IncompatibleDataException):
        Measurement.from_json(obj)
