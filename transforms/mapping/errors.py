"""Error types of the mapping engine, named after the reference's exceptions.

Why reference names: operators migrating from iomt-fhir / MedTech search logs and
dashboards for these names (``IncompatibleDataException`` ...). Every error carries
``error_type`` (the reference name) so dead-letter records and metrics use it
verbatim, and ``stage`` says which pipeline stage raised it.
"""


class MappingError(Exception):
    """Base class: a problem with data or templates, never a bug of ours."""

    error_type = "MappingError"
    stage = "unknown"

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- template (configuration) problems -------------------------------------------------
class InvalidTemplateException(MappingError):
    error_type = "InvalidTemplateException"
    stage = "setup"


class TemplateExpressionException(MappingError):
    """An expression could not be compiled, or returned several tokens where one was expected."""

    error_type = "TemplateExpressionException"
    stage = "normalization"


class TemplateNotFoundException(MappingError):
    error_type = "TemplateNotFoundException"
    stage = "fhir_conversion"


# --- data problems ----------------------------------------------------------------------
class InvalidDataFormatException(MappingError):
    """The device message body is not JSON."""

    error_type = "InvalidDataFormatException"
    stage = "normalization"


class IncompatibleDataException(MappingError):
    """A required value is missing or cannot be converted."""

    error_type = "IncompatibleDataException"
    stage = "normalization"


class ExpressionEvaluationException(MappingError):
    """A custom function failed at run time (division by zero, overflow, out of range...)."""

    error_type = "ExpressionEvaluationException"
    stage = "normalization"


class CorrelationIdNotDefinedException(MappingError):
    error_type = "CorrelationIdNotDefinedException"
    stage = "grouping"


class InvalidQuantityFhirValueException(MappingError):
    error_type = "InvalidQuantityFhirValueException"
    stage = "fhir_conversion"


class FhirDataMappingException(MappingError):
    """A group of measurements cannot be turned into an Observation (e.g. several String values)."""

    error_type = "FhirDataMappingException"
    stage = "fhir_conversion"


class NotSupportedException(MappingError):
    """An existing Observation has a shape the merge cannot handle, or an unsupported period interval."""

    error_type = "NotSupportedException"
    stage = "fhir_conversion"
