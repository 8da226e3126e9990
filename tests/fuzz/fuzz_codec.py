"""atheris (libFuzzer) entry point for the codec: framer, command_view, strict decoders.

    .venv/bin/python -m tests.fuzz.fuzz_codec -runs=1000000 tests/fuzz/corpus/codec

Needs ``pip install atheris`` (the ``fuzz`` extra); importing this module
without it is fine (pytest never collects it). See tests/fuzz/targets.py for
what is checked on every input.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    import atheris

    with atheris.instrument_imports(include=["scalyproxy"]):
        from tests.fuzz.targets import codec_target
    atheris.Setup(argv if argv is not None else sys.argv, codec_target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
