"""``iomt-fhir replay``: re-drive dead letters from where they failed (placeholder: hint only)."""
import shlex


def replay_hint(opts) -> str:
    """The command that replays this run's dead letters (same mappings and destination)."""
    if not getattr(opts, "dead_letter", None):
        return ""
    parts = ["iomt-fhir", "replay", "--dead-letter", f"{opts.dead_letter}*",
             "--device-mapping", opts.device_mapping, "--fhir-mapping", opts.fhir_mapping]
    if opts.fhir_url:
        parts += ["--fhir-url", opts.fhir_url]
        if opts.fhir_auth and opts.fhir_auth != "none":
            parts += ["--fhir-auth", opts.fhir_auth]
        if opts.identity_mode != "Create":
            parts += ["--identity-mode", opts.identity_mode]
        if opts.device_identifier_system:
            parts += ["--device-identifier-system", opts.device_identifier_system]
    return " ".join(shlex.quote(p) for p in parts)
