"""Every use of Beam's (and argparse's) private API, in one place, checked by tests/test_beam_private.py.

Why private at all: Beam has no public API for these, and the alternatives cost more.

- A coder that writes into Beam's output stream. Beam's public ``Coder.encode`` returns bytes,
  which the batch shuffle of ``GroupMeasurements`` would then copy and length-prefix per
  element; the stream form (``FastCoder._create_impl`` returning a ``StreamCoderImpl``) is what
  Beam's own coders use and what kept the bench ratio at ~1.0 (issue 8).
- The argparse actions of a ``PipelineOptions`` class. Beam's documented way to declare options
  is to override ``_add_argparse_args``; reading them back (``iomt-fhir run --help``, the Flex
  Template's metadata.json) means calling it on our own parser and reading ``parser._actions``.

A Beam upgrade that changes any of this fails tests/test_beam_private.py with a message naming
what changed, instead of a coder or the help breaking somewhere else. Tested on Beam 2.62 and 2.77.
"""
import argparse
from typing import List

from apache_beam.coders import coder_impl as _coder_impl
from apache_beam.coders import coders as _coders

#: Base of a coder's stream implementation: subclass it with ``encode_to_stream(value, stream,
#: nested)`` and ``decode_from_stream(stream, nested)``.
StreamCoderImpl = _coder_impl.StreamCoderImpl


class StreamCoder(_coders.FastCoder):
    """A coder whose implementation is ``impl_class()`` (a ``StreamCoderImpl``).

    Subclasses set ``impl_class``; ``_create_impl`` is the private hook Beam calls, kept here."""

    impl_class = None

    def _create_impl(self):
        return self.impl_class()


def add_option_arguments(options_class, parser: argparse.ArgumentParser) -> None:
    """Add ``options_class``'s own options (its ``_add_argparse_args``) to ``parser``."""
    options_class._add_argparse_args(parser)


def parser_actions(parser: argparse.ArgumentParser) -> List[argparse.Action]:
    """Every action of ``parser``, groups' included, in definition order (argparse's ``_actions``)."""
    return list(parser._actions)


def option_actions(options_class) -> List[argparse.Action]:
    """The flags ``options_class`` declares, as argparse actions, in definition order."""
    parser = argparse.ArgumentParser(add_help=False)
    add_option_arguments(options_class, parser)
    return [a for a in parser_actions(parser) if a.option_strings]
