"""`robota suite run`: run a regression suite and exit non-zero when it fails.

Exit status: 0 when every scenario meets its thresholds and none regresses against the
baseline, 1 when one does not, 2 on bad input (the CLI's handling of `RobotaError`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robota import console

EXIT_PASSED = 0
EXIT_FAILED = 1


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `suite` command with its `run` action to the CLI's subcommands."""
    parser = commands.add_parser("suite", help="run simulation regression suites")
    actions = parser.add_subparsers(dest="suite_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="run a suite's scenario matrix with a policy",
        description="Run every scenario of a suite file, write report.json, junit.xml and "
        "report.html, and exit 1 on a missed threshold or a significant regression.",
    )
    run.add_argument("suite", type=Path, help="suite file (TOML)")
    run.add_argument("--policy", type=Path, required=True, help="checkpoint or bundle folder")
    run.add_argument(
        "--compare-bundle",
        type=Path,
        metavar="BUNDLE",
        help="bundle exported from --policy; runs it on the same seeds and reports agreement",
    )
    run.add_argument(
        "--baseline", type=Path, metavar="REPORT", help="report.json of an earlier run to pair seeds with"
    )
    run.add_argument("--workers", type=int, default=1, help="processes running episodes")
    run.add_argument(
        "--output", type=Path, default=Path("suite-report"), help="folder for the reports"
    )
    run.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the suite that `args` names and print one line per scenario."""
    from robota.suite_report import REPORT_HTML, REPORT_JSON, REPORT_JUNIT
    from robota.suite_report import describe_scenario, scenario_failure_reasons
    from robota.suite_run import SuiteRunConfig, run_suite

    config = SuiteRunConfig(
        suite=args.suite,
        policy=args.policy,
        compare_bundle=args.compare_bundle,
        baseline=args.baseline,
        workers=args.workers,
        output=args.output,
    )
    total = len(config.suite.scenarios) * config.suite.episodes
    with console.progress("suite", total) as bar:
        result = run_suite(config, progress=bar)

    for scenario in result.report["scenarios"]:
        reasons = scenario_failure_reasons(scenario)
        verdict = "passed" if not reasons else "FAILED: " + "; ".join(reasons)
        print(f"{describe_scenario(scenario)} {verdict}")
    outcome = "passed" if result.passed else "failed"
    reports = ", ".join(str(config.output / name) for name in (REPORT_HTML, REPORT_JUNIT, REPORT_JSON))
    print(f"suite {result.report['suite']['name']} {outcome}; reports: {reports}")
    return EXIT_PASSED if result.passed else EXIT_FAILED
