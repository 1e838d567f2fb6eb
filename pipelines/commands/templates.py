"""``iomt-fhir templates list | show PACK | export PACK DIR``: start from a template pack.

CLI glue only; the packs and their reading are ``pipelines.packs``. ``export`` writes plain
iomt-fhir-format files that ``validate``, ``normalize``, ``transform``, ``run`` and the
debugger take as they are; ``--medtech`` leaves out our ``profiles`` extension so MedTech
loads the FHIR mapping too. Exit 0 on success, 2 for an unknown pack or files in the way.
"""
import sys

from pipelines.launch_errors import EXIT_REFUSED


def register(sub) -> None:
    """Add ``templates`` and its three actions to ``iomt-fhir``'s sub-parsers."""
    t = sub.add_parser("templates", help="template packs: ready mappings for common device data",
                       description="Template packs: device and FHIR mappings for data in well-known "
                                   "shapes (Open mHealth, Apple Health, Fitbit, Withings, IoT Central).")
    actions = t.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the packs, one a line").set_defaults(func=cmd_list)
    s = actions.add_parser("show", help="a pack's README and the types it maps")
    s.add_argument("pack")
    s.set_defaults(func=cmd_show)
    e = actions.add_parser("export", help="write a pack's mappings, sample messages and README to DIR")
    e.add_argument("pack")
    e.add_argument("dir")
    e.add_argument("--medtech", action="store_true",
                   help="leave out the 'profiles' extension (MedTech rejects unknown template fields)")
    e.add_argument("--force", action="store_true", help="overwrite files already in DIR")
    e.set_defaults(func=cmd_export)


def cmd_list(args) -> int:
    from pipelines import packs

    width = max(len(p) for p in packs.PACKS)
    for name in packs.PACKS:
        print(f"{name:<{width}}  {packs.summary(name)[0]}")
    return 0


def cmd_show(args) -> int:
    from pipelines import packs

    try:
        readme = packs.read(args.pack, "README.md")
        rows = packs.types(args.pack)
    except packs.PackError as e:
        print(f"iomt-fhir templates: error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print(readme.rstrip() + "\n")
    cols = ("type", "code", "value", "unit", "profiles")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip())
    return 0


def cmd_export(args) -> int:
    from pipelines import packs

    try:
        paths = packs.export(args.pack, args.dir, medtech=args.medtech, force=args.force)
    except packs.PackError as e:
        print(f"iomt-fhir templates: error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as e:
        print(f"iomt-fhir templates: error: cannot write to {args.dir}: {e.strerror or e}",
              file=sys.stderr)
        return EXIT_REFUSED
    for p in paths:
        print(p)
    return 0
