"""The check every user-facing error must pass, natively and in the guest."""


def assert_one_line_error(result, *fragments):
    """`result` (a finished subprocess) failed with one line on stderr, no
    traceback, and that line holds each of `fragments`."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
