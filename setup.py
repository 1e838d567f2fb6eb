"""IoMT-to-FHIR connector on Apache Beam, compatible with iomt-fhir / Azure MedTech mappings."""
from setuptools import find_packages, setup

setup(
    name="iomt-fhir-beam",
    version="0.1.0",
    description="Apache Beam pipeline turning device readings into FHIR R4 Observations "
                "with iomt-fhir / MedTech device and FHIR mappings.",
    python_requires=">=3.9",
    packages=find_packages(include=["pipelines", "pipelines.*", "transforms", "transforms.*"]),
    # The mapping debugger's page and examples, so an installed package serves them.
    # The template packs (iomt-fhir templates, the debugger's menu) likewise.
    package_data={"pipelines.debugger": ["static/*", "examples/*"], "pipelines.packs": ["*/*"]},
    install_requires=[
        # A range, so a user's environment takes the newest Beam (Dataflow deprecates old SDKs).
        # Floor 2.62: the oldest Beam this code is run and tested on here (.venv-flink: Flink
        # and Kafka IO, whose Java jars are served here only for 2.62); older ones are untested.
        # The repo's own environments pin exact versions: constraints.txt, constraints-flink.txt.
        # gcp: Pub/Sub, Dataflow, gs://; aws/azure: Beam's s3:// and azfs:// filesystems, where
        # device archives live (Event Hubs Capture writes to Blob Storage / ADLS).
        "apache-beam[gcp,aws,azure]>=2.62,<3",
        # JSON-array archives: a well-kept incremental parser (C backend, yajl2_c) so a
        # file of hundreds of MB is never held in memory; json.JSONDecoder has no
        # incremental mode and a hand-written tokenizer would be slower and ours to fix.
        "ijson>=3.2",
        # On the design card. Runtime JSONPath is our Newtonsoft port (the reference's
        # semantics differ from jsonpath-ng's); jsonpath-ng is the oracle in the tests.
        "jsonpath-ng>=1.6",
        # JMESPath: the reference's second expression language; a full interpreter we
        # would otherwise have to write and keep conformant ourselves.
        "jmespath>=1.0",
        "fhir.resources>=7",
        "google-auth>=2",
        "requests>=2.31",
        "azure-eventhub>=5.11",
    ],
    # confluent-kafka: the simulator's Kafka sender (librdkafka wheels: idempotent producer,
    # SASL_SSL for Event Hubs' Kafka endpoint); not needed by the pipeline itself.
    # playwright: drives Debian's Chromium in the mapping debugger's browser test (its own
    # browser download is not used; scripts/setup-chromium installs /usr/bin/chromium).
    # moto[server], gcp-storage-emulator: storage emulators the archive tests start on loopback.
    # pytest-timeout: every test is bounded (pytest.ini's default, larger marks on heavy tests),
    # so a hung emulator or job fails one test with a stack instead of stalling CI.
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2.2", "confluent-kafka>=2.3", "playwright>=1.40",
                             "moto[server]>=5", "gcp-storage-emulator>=2024.8"],
                    "simulator": ["confluent-kafka>=2.3"]},
    entry_points={"console_scripts": ["iomt-fhir=pipelines.cli:main"]},
)
