"""A pytest plugin that turns a regression suite's scenarios into test items.

    pytest --robota-suite examples/suites/pick_place_smoke.toml --robota-policy CHECKPOINT

Each scenario becomes one item, failed by a missed threshold or a significant regression
against `--robota-baseline`. The whole suite runs once, when the first item runs, and the items
then read its result. The plugin is registered under the `pytest11` entry point as
`robota`; `-p robota.pytest_plugin` loads it where the package is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

_RESULT_KEY = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robota", "robota regression suites")
    group.addoption("--robota-suite", type=Path, help="suite file (TOML) to run as tests")
    group.addoption("--robota-policy", type=Path, help="checkpoint or bundle folder to test")
    group.addoption("--robota-baseline", type=Path, help="report.json of an earlier run")
    group.addoption("--robota-compare-bundle", type=Path, help="bundle exported from the policy")
    group.addoption("--robota-workers", type=int, default=1, help="processes running episodes")
    group.addoption("--robota-output", type=Path, help="folder for report.json, junit.xml, report.html")


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    suite_path = config.getoption("--robota-suite")
    if suite_path is None:
        return
    if config.getoption("--robota-policy") is None:
        raise pytest.UsageError("--robota-suite needs --robota-policy CHECKPOINT_OR_BUNDLE")

    from robota.suite import load_suite

    suite = load_suite(suite_path)
    collector = SuiteFile.from_parent(session, path=Path(suite_path).resolve())
    collector.suite = suite
    items.extend(collector.collect())


class SuiteFile(pytest.File):
    """The suite file as a pytest collector with one item per scenario."""

    suite: Any = None

    def collect(self) -> list[pytest.Item]:
        return [ScenarioItem.from_parent(self, name=s.name) for s in self.suite.scenarios]


class ScenarioFailed(Exception):
    """A scenario that missed a threshold or regressed against the baseline."""


class ScenarioItem(pytest.Item):
    """One scenario of the suite; the suite runs once for all items."""

    def runtest(self) -> None:
        result = _suite_result(self.config, self.parent.suite)
        from robota.suite_report import describe_scenario, scenario_failure_reasons

        scenario = next(s for s in result.report["scenarios"] if s["name"] == self.name)
        self.user_properties.append(("summary", describe_scenario(scenario)))
        reasons = scenario_failure_reasons(scenario)
        if reasons:
            raise ScenarioFailed("\n".join([describe_scenario(scenario), *reasons]))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ScenarioFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"robota scenario {self.name}"


def _suite_result(config: pytest.Config, suite: Any):
    if _RESULT_KEY not in config.stash:
        from robota.suite_run import SuiteRunConfig, run_suite

        run_config = SuiteRunConfig(
            suite=suite,
            policy=config.getoption("--robota-policy"),
            compare_bundle=config.getoption("--robota-compare-bundle"),
            baseline=config.getoption("--robota-baseline"),
            workers=config.getoption("--robota-workers"),
            output=config.getoption("--robota-output"),
        )
        # A run that raised is stored too, so the other items report it without rerunning.
        try:
            result = run_suite(run_config)
        except Exception as error:
            result = error
        config.stash[_RESULT_KEY] = result
    result = config.stash[_RESULT_KEY]
    if isinstance(result, Exception):
        raise result
    return result
