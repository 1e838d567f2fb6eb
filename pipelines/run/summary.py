"""What a finished run did, from Beam's metrics, and the exit status that tells the truth.

Why from metrics: the counts are kept by the transforms anyway (reference names), every
runner reports them, and reading them costs nothing extra. Dead letters are counted by
stage from the error counters: ``iomt_fhir/Errors.<stage>.<type>`` (normalization,
fhir_conversion, identity) and ``Errors/<type>`` (the writer's, stage ``fhir_write``).

Exit status (README "Operating it"):

* 0 -- everything was written (data errors may have been dead-lettered: see the summary);
* 1 -- some infrastructure failures were dead-lettered (stages ``fhir_write``, ``identity``:
  the server refused, was unreachable past the retry budget, or a Device/Patient could
  not be resolved), or a stage dead-lettered more than ``--max-dead-letter-fraction`` of
  its input, or the runner failed;
* 2 -- refused at launch (``pipelines.launch_errors``).

The summary holds counts, stages and error types only: no content, no ids.
"""
import dataclasses
import sys
from typing import Dict, List, Optional

from pipelines.launch_errors import EXIT_FAILURES, EXIT_OK

from transforms.fhir.writer import METRIC_SAVED
from transforms.metrics import ERROR_PREFIX
from transforms.records.dead_letter import INFRASTRUCTURE_STAGES, STAGES as STAGE_ORDER

SUMMARY_COUNTERS = ("DeviceEvent", "NormalizedEvent", "DroppedEvent", "LateMeasurementRegrouped",
                    "MeasurementGroup", "DeviceUseOverlap", "ObservationCreated", "ObservationUpdated",
                    "ObservationNoOperation", "FHIRResourceContention")
SAVED = tuple(METRIC_SAVED.values())


@dataclasses.dataclass
class RunSummary:
    #: counter name -> value (reference names; ``Errors.*`` included as reported)
    counters: Dict[str, int]
    #: stage -> error type -> dead-lettered records
    dead_letters: Dict[str, Dict[str, int]]
    dead_letter_prefix: Optional[str] = None
    max_dead_letter_fraction: Optional[float] = None
    metrics_available: bool = True
    #: the glob of the dead-letter files (default ``PREFIX*``; a stream writes ``PREFIX/*``)
    dead_letter_files: Optional[str] = None

    # -- derived ----------------------------------------------------------------------------
    def dead_letter_total(self, stage: Optional[str] = None) -> int:
        stages = [stage] if stage else list(self.dead_letters)
        return sum(sum(self.dead_letters.get(s, {}).values()) for s in stages)

    def stage_inputs(self, stage: str) -> int:
        """How many records entered ``stage`` (the denominator of its dead-letter fraction)."""
        c = self.counters
        if stage in ("read", "normalization"):
            return c.get("DeviceEvent", 0)
        if stage in ("grouping", "fhir_conversion", "identity"):
            return c.get("MeasurementGroup", 0)
        if stage == "fhir_write":
            return sum(c.get(n, 0) for n in SAVED) + self.dead_letter_total("fhir_write")
        return 0

    def fractions(self) -> Dict[str, float]:
        out = {}
        for stage in self.dead_letters:
            total = self.stage_inputs(stage)
            out[stage] = self.dead_letter_total(stage) / total if total else 1.0
        return out

    def over_threshold(self) -> List[str]:
        if self.max_dead_letter_fraction is None:
            return []
        return [s for s, f in self.fractions().items() if f > self.max_dead_letter_fraction]

    def infrastructure_failures(self) -> int:
        return sum(self.dead_letter_total(s) for s in INFRASTRUCTURE_STAGES)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURES if (self.infrastructure_failures() or self.over_threshold()) else EXIT_OK

    def to_json(self) -> dict:
        return {"counters": dict(self.counters), "dead_letters": {s: dict(t) for s, t in self.dead_letters.items()},
                "dead_letter_files": self.dead_letter_pattern(), "exit_code": self.exit_code,
                "over_max_dead_letter_fraction": self.over_threshold(),
                "metrics_available": self.metrics_available}

    def dead_letter_pattern(self) -> Optional[str]:
        if self.dead_letter_files:
            return self.dead_letter_files
        return f"{self.dead_letter_prefix}*" if self.dead_letter_prefix else None

    # -- text -------------------------------------------------------------------------------
    def lines(self, replay_hint: str = "") -> List[str]:
        if not self.metrics_available:
            return ["summary: this runner reports no metrics; check the dead-letter files "
                    f"{self.dead_letter_pattern() or ''}".rstrip()]
        c = self.counters
        parts = [f"{n}={c[n]}" for n in SUMMARY_COUNTERS if n in c]
        parts += [f"{n}={v}" for n, v in sorted(c.items())
                  if n not in SUMMARY_COUNTERS and (n.startswith(ERROR_PREFIX) or "Exception" in n
                                                     or n.endswith("Error"))]
        out = ["summary: " + " ".join(parts)]
        total = self.dead_letter_total()
        if not total:
            out.append("dead letters: none")
        else:
            by_stage = []
            for stage in sorted(self.dead_letters, key=_stage_rank):
                types = ", ".join(f"{t}={n}" for t, n in sorted(self.dead_letters[stage].items()))
                by_stage.append(f"{stage} {self.dead_letter_total(stage)} ({types})")
            out.append(f"dead letters: {total} in {self.dead_letter_pattern()}: " + "; ".join(by_stage))
            if replay_hint:
                out.append("replay them (after fixing the cause): " + replay_hint)
        infra = self.infrastructure_failures()
        if infra:
            out.append(f"exit 1: {infra} infrastructure failure(s) dead-lettered (stages "
                       f"{'/'.join(INFRASTRUCTURE_STAGES)}): not everything was written")
        for stage in self.over_threshold():
            out.append(f"exit 1: stage {stage} dead-lettered {self.fractions()[stage]:.1%} of its input, "
                       f"more than --max-dead-letter-fraction {self.max_dead_letter_fraction:g}")
        return out


def _stage_rank(stage: str) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def from_counters(raw: Dict[tuple, int], dead_letter_prefix: Optional[str] = None,
                  max_dead_letter_fraction: Optional[float] = None) -> RunSummary:
    """``{(namespace, name): value}`` -> summary (pure; tests and other runners' metrics)."""
    counters: Dict[str, int] = {}
    dead: Dict[str, Dict[str, int]] = {}
    for (namespace, name), value in raw.items():
        counters[name] = counters.get(name, 0) + value
        stage = error_type = None
        if name.startswith(ERROR_PREFIX) and name.count(".") >= 2:
            _, stage, error_type = name.split(".", 2)
        elif namespace == "Errors":
            stage, error_type = "fhir_write", name
        if stage and value:
            dead.setdefault(stage, {})
            dead[stage][error_type] = dead[stage].get(error_type, 0) + value
    return RunSummary(counters, dead, dead_letter_prefix, max_dead_letter_fraction)


def summarize(result, dead_letter_prefix: Optional[str] = None,
              max_dead_letter_fraction: Optional[float] = None) -> RunSummary:
    """The summary of a finished Beam ``PipelineResult``."""
    try:
        queried = result.metrics().query()["counters"]
    except Exception:  # some runners do not report metrics
        s = RunSummary({}, {}, dead_letter_prefix, max_dead_letter_fraction)
        s.metrics_available = False
        return s
    raw: Dict[tuple, int] = {}
    for c in queried:
        key = (c.key.metric.namespace, c.key.metric.name)
        raw[key] = raw.get(key, 0) + (c.committed or c.attempted or 0)
    return from_counters(raw, dead_letter_prefix, max_dead_letter_fraction)


def print_summary(result, opts=None, streaming: bool = False) -> RunSummary:
    """Counts by metric name (reference names), dead letters by stage/type, where they are
    and how to replay them: no content, no ids. Returns the ``RunSummary``."""
    from pipelines.commands.replay import dead_letter_glob, replay_hint

    prefix = getattr(opts, "dead_letter", None)
    summary = summarize(result, prefix, getattr(opts, "max_dead_letter_fraction", None))
    if prefix:
        summary.dead_letter_files = dead_letter_glob(prefix, streaming)
    hint = replay_hint(opts, streaming) if opts is not None else ""
    for line in summary.lines(hint):
        print(line, file=sys.stderr)
    return summary
