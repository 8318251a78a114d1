"""Under CI (the CI environment variable set and non-empty) a skipped test fails with its
skip reason: a CI run that silently skipped the lab or checkov would prove nothing.
Outside CI a skip stays a skip; an expected failure (xfail) stays one everywhere."""

from __future__ import annotations

import pytest

# One test per way a test gets skipped, plus an xfail and a plain pass.
INNER_TESTS = """
import pytest

@pytest.fixture
def gate():
    pytest.skip("the gate says no")

def test_skips_itself():
    pytest.skip("needs a unicorn")

@pytest.mark.skipif(True, reason="marked away")
def test_marked():
    pass

def test_skipped_by_a_fixture(gate):
    pass

@pytest.mark.xfail(reason="known bug")
def test_expected_to_fail():
    assert False

def test_passes():
    pass
"""

INNER_MODULE_SKIP = """
import pytest

pytest.skip("the whole module needs a unicorn", allow_module_level=True)

def test_never_collected():
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A test directory whose conftest has this suite's hooks."""
    pytester.makeconftest(
        "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport\n"
    )
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_under_ci_every_skip_fails_with_its_reason(inner, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    result = inner.runpytest("-rA")
    # A skip in the test body is a failure; one during setup (a mark, a fixture) an error.
    result.assert_outcomes(passed=1, failed=1, errors=2, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            f"*CI={ci!r}*must not skip*needs a unicorn*",
            f"*CI={ci!r}*must not skip*marked away*",
            f"*CI={ci!r}*must not skip*the gate says no*",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("ci", [None, ""], ids=["unset", "empty"])
def test_outside_ci_a_skip_stays_a_skip(inner, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = inner.runpytest("-rA")
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_under_ci_a_module_level_skip_fails(inner, monkeypatch):
    inner.makepyfile(test_module_skip=INNER_MODULE_SKIP)
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest("-rA", "test_module_skip.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*CI='true'*must not skip*the whole module needs a unicorn*"])
    monkeypatch.delenv("CI")
    assert inner.runpytest("test_module_skip.py").ret == pytest.ExitCode.NO_TESTS_COLLECTED


INNER_XFAILS = """
import pytest

def test_gives_up_imperatively():
    pytest.xfail("not today")

@pytest.mark.xfail(run=False, reason="never run")
def test_never_run():
    assert False

@pytest.mark.xfail(reason="declared")
def test_declared_then_gives_up():
    pytest.xfail("gave up anyway")

@pytest.mark.xfail(run=False, reason="class never runs")
class TestNeverRun:
    @pytest.mark.xfail(False, reason="method marker says no xfail")
    def test_in_class(self):
        assert False
"""


def test_under_ci_an_xfail_that_skips_the_check_fails(inner, monkeypatch):
    """pytest.xfail() in the body and xfail(run=False), however declared, are skips by another
    name; an xfail whose test ran (test_expected_to_fail above) is a result."""
    inner.makepyfile(test_xfails=INNER_XFAILS)
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest("-rA", "test_xfails.py")
    result.assert_outcomes(failed=2, errors=2)
    for reason in ("not today", "never run", "gave up anyway", "class never runs"):
        result.stdout.fnmatch_lines([f"*CI='true'*must not skip*{reason}*"])
    monkeypatch.delenv("CI")
    inner.runpytest("test_xfails.py").assert_outcomes(xfailed=4)
