"""Write a suite run as JSON, JUnit XML and one self-contained HTML page.

The HTML page has no scripts and loads nothing: its plots are inline SVG and its failure videos
are GIFs in data URLs, so it opens offline, from a CI artifact or an e-mail attachment.
"""

from __future__ import annotations

import base64
import html
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robota.evaluate import write_json_atomic

REPORT_JSON = "report.json"
REPORT_JUNIT = "junit.xml"
REPORT_HTML = "report.html"
VIDEO_FOLDER = "videos"
# Contact-force traces drawn per scenario; more lines turn into a blur.
MAX_TRACES = 10


def write_suite_outputs(output: Path, report: Mapping[str, Any], videos: Mapping) -> dict[str, Path]:
    """Write `report.json`, `junit.xml`, `report.html` and the GIFs into `output`.

    Returns:
        The written paths keyed by `json`, `junit` and `html`.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output / REPORT_JSON,
        "junit": output / REPORT_JUNIT,
        "html": output / REPORT_HTML,
    }
    write_json_atomic(paths["json"], report)
    paths["junit"].write_text(junit_xml(report), encoding="utf-8")
    paths["html"].write_text(html_report(report, videos), encoding="utf-8")
    if videos:
        (output / VIDEO_FOLDER).mkdir(exist_ok=True)
        for (scenario, seed), gif in videos.items():
            name = f"{scenario.replace('/', '_')}-{seed}.gif"
            (output / VIDEO_FOLDER / name).write_bytes(gif)
    return paths


def junit_xml(report: Mapping[str, Any]) -> str:
    """Return JUnit XML with one test case per scenario, failed on a missed threshold or regression."""
    scenarios = report["scenarios"]
    suite_name = report["suite"]["name"]
    failures = sum(not s["passed"] for s in scenarios)
    root = ElementTree.Element("testsuites", tests=str(len(scenarios)), failures=str(failures))
    testsuite = ElementTree.SubElement(
        root, "testsuite", name=suite_name, tests=str(len(scenarios)), failures=str(failures),
        errors="0", skipped="0",
    )
    for scenario in scenarios:
        case = ElementTree.SubElement(
            testsuite, "testcase", classname=f"robota.suite.{suite_name}", name=scenario["name"]
        )
        reasons = scenario_failure_reasons(scenario)
        if reasons:
            failure = ElementTree.SubElement(case, "failure", message=reasons[0])
            failure.text = "\n".join(reasons)
        ElementTree.SubElement(case, "system-out").text = describe_scenario(scenario)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, "unicode") + "\n"


def scenario_failure_reasons(scenario: Mapping[str, Any]) -> list[str]:
    """Return one sentence per reason the scenario failed, empty if it passed."""
    reasons = list(scenario["threshold_failures"])
    baseline = scenario.get("baseline")
    if baseline and baseline["regression"]:
        reasons.append(
            f"regression against the baseline: {baseline['lost']} seeds lost, "
            f"{baseline['gained']} gained, exact McNemar p = {baseline['p_value']:.4g} "
            f"< alpha {baseline['alpha']}"
        )
    return reasons


def describe_scenario(scenario: Mapping[str, Any]) -> str:
    """Return a one-line summary of a scenario's success rate and interval."""
    low, high = scenario["success_interval_95"]
    return (
        f"{scenario['name']}: success {scenario['successes']}/{scenario['episodes']} "
        f"({scenario['success_rate']:.0%}, 95% Wilson CI [{low:.0%}, {high:.0%}])"
    )


def html_report(report: Mapping[str, Any], videos: Mapping) -> str:
    """Return the self-contained HTML page of a suite run."""
    suite = report["suite"]
    scenarios = report["scenarios"]
    status = "passed" if report["passed"] else "failed"
    parts = [
        _HEAD.format(title=html.escape(f"robota suite {suite['name']}")),
        f"<h1>Suite {_e(suite['name'])}: <span class='{status}'>{status}</span></h1>",
        f"<p>Policy <code>{_e(report['policy'])}</code> ({_e(report['policy_kind'])}); "
        f"{len(scenarios)} scenarios of {suite['episodes']} episodes, seeds "
        f"{suite['seed_start']} to {suite['seed_start'] + suite['episodes'] - 1}. "
        f"Intervals are 95% Wilson score intervals.</p>",
        _summary_table(scenarios, report),
        "<h2>Success per scenario</h2>",
        _success_plot(scenarios),
        "<h2>Time to success</h2>",
        _time_plot(scenarios, report["rows"]),
        "<h2>Contact force on the robot</h2>",
        _force_plots(scenarios, report["rows"]),
        "<h2>Failed episodes</h2>",
        _videos(videos),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _summary_table(scenarios: Sequence[Mapping[str, Any]], report: Mapping[str, Any]) -> str:
    header = ["scenario", "success", "95% CI", "median time to success", "max contact force",
              "cell collisions", "joint / velocity limit steps"]
    if report.get("baseline"):
        header.append("baseline (lost / gained, p)")
    if report.get("compare_bundle"):
        header.append("bundle agreement")
    header.append("result")
    lines = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for s in scenarios:
        low, high = s["success_interval_95"]
        median = s["time_to_success_median_s"]
        cells = [
            s["name"],
            f"{s['successes']}/{s['episodes']}",
            f"{low:.0%} to {high:.0%}",
            "none succeeded" if median is None else f"{median:.1f} s",
            f"{s['max_contact_force_n']:.1f} N",
            str(s["cell_collisions"]),
            f"{s['joint_limit_violations']} / {s['velocity_limit_violations']}",
        ]
        if report.get("baseline"):
            b = s.get("baseline")
            cells.append("no baseline rows" if not b else
                         f"{b['lost']} / {b['gained']}, p = {b['p_value']:.3g}")
        if report.get("compare_bundle"):
            a = s.get("bundle_agreement") or {}
            cells.append(f"{a.get('same_success', 0)}/{a.get('episodes', 0)} same outcome, "
                         f"max action diff {a.get('action_max_abs_diff') or 0:.2g}")
        reasons = scenario_failure_reasons(s)
        verdict = "passed" if not reasons else "failed: " + "; ".join(reasons)
        row = "".join(f"<td>{_e(c)}</td>" for c in cells)
        lines.append(f"<tr>{row}<td class='{'passed' if not reasons else 'failed'}'>"
                     f"{_e(verdict)}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _success_plot(scenarios: Sequence[Mapping[str, Any]]) -> str:
    # One horizontal bar per scenario with its Wilson interval as a whisker; x is the rate.
    row_h, left, width = 26, 330, 420
    height = row_h * len(scenarios) + 40
    svg = [_svg_open(left + width + 30, height, "Success rate per scenario with 95% intervals")]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * width
        svg.append(f"<line x1='{x}' y1='10' x2='{x}' y2='{height - 25}' class='grid'/>")
        svg.append(f"<text x='{x}' y='{height - 8}' text-anchor='middle'>{tick:.0%}</text>")
    for i, s in enumerate(scenarios):
        y = 12 + i * row_h
        low, high = s["success_interval_95"]
        svg.append(f"<text x='{left - 8}' y='{y + 14}' text-anchor='end'>{_e(s['name'])}</text>")
        svg.append(f"<rect x='{left}' y='{y + 3}' width='{s['success_rate'] * width:.1f}' "
                   f"height='{row_h - 8}' class='bar'/>")
        svg.append(f"<line x1='{left + low * width:.1f}' y1='{y + 11}' "
                   f"x2='{left + high * width:.1f}' y2='{y + 11}' class='whisker'/>")
    svg.append("</svg>")
    return "\n".join(svg)


def _time_plot(scenarios: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    # A strip plot: one dot per successful episode at its time to success.
    times = [r["time_to_success_s"] for r in rows if r["time_to_success_s"] is not None]
    if not times:
        return "<p>No episode succeeded, so there is no time to success to show.</p>"
    row_h, left, width = 26, 330, 420
    longest = max(times)
    height = row_h * len(scenarios) + 40
    svg = [_svg_open(left + width + 30, height, "Time to success per scenario in seconds")]
    for k in range(5):
        value = longest * k / 4
        x = left + width * k / 4
        svg.append(f"<line x1='{x}' y1='10' x2='{x}' y2='{height - 25}' class='grid'/>")
        svg.append(f"<text x='{x}' y='{height - 8}' text-anchor='middle'>{value:.1f} s</text>")
    for i, s in enumerate(scenarios):
        y = 12 + i * row_h
        svg.append(f"<text x='{left - 8}' y='{y + 14}' text-anchor='end'>{_e(s['name'])}</text>")
        for r in rows:
            if r["scenario"] == s["name"] and r["time_to_success_s"] is not None:
                x = left + width * r["time_to_success_s"] / longest
                svg.append(f"<circle cx='{x:.1f}' cy='{y + 11}' r='4' class='dot'>"
                           f"<title>seed {r['seed']}: {r['time_to_success_s']:.1f} s</title></circle>")
    svg.append("</svg>")
    return "\n".join(svg)


def _force_plots(scenarios: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    plots = []
    for s in scenarios:
        traces = [r for r in rows if r["scenario"] == s["name"]][:MAX_TRACES]
        plots.append(f"<figure><figcaption>{_e(s['name'])}</figcaption>{_trace_plot(traces)}</figure>")
    return "<div class='grid-of-plots'>" + "\n".join(plots) + "</div>"


def _trace_plot(rows: Sequence[Mapping[str, Any]]) -> str:
    # x is the control step, y the largest contact force on the robot in newtons.
    width, height, left, bottom = 360, 180, 45, 25
    longest = max((len(r["contact_force_trace_n"]) for r in rows), default=1)
    peak = max((max(r["contact_force_trace_n"], default=0.0) for r in rows), default=0.0) or 1.0
    svg = [_svg_open(width, height, "Contact force per control step")]
    svg.append(f"<text x='2' y='14'>{peak:.0f} N</text><text x='2' y='{height - bottom}'>0 N</text>")
    svg.append(f"<text x='{width - 5}' y='{height - 6}' text-anchor='end'>{longest} steps</text>")
    for index, r in enumerate(rows):
        trace = r["contact_force_trace_n"]
        points = " ".join(
            f"{left + (width - left - 5) * k / max(longest - 1, 1):.1f},"
            f"{(height - bottom) - (height - bottom - 10) * v / peak:.1f}"
            for k, v in enumerate(trace)
        )
        colour = _PALETTE[index % len(_PALETTE)]
        svg.append(f"<polyline points='{points}' fill='none' stroke='{colour}' stroke-width='1.2'>"
                   f"<title>seed {r['seed']}</title></polyline>")
    svg.append("</svg>")
    return "\n".join(svg)


def _videos(videos: Mapping) -> str:
    if not videos:
        return "<p>No failed episode has a video.</p>"
    figures = []
    for (scenario, seed), gif in sorted(videos.items()):
        data = base64.b64encode(gif).decode("ascii")
        figures.append(
            f"<figure><img class='video' alt='overhead camera, {_e(scenario)} seed {seed}' "
            f"src='data:image/gif;base64,{data}'/><figcaption>{_e(scenario)}, seed {seed}"
            "</figcaption></figure>"
        )
    return "<div class='grid-of-plots'>" + "\n".join(figures) + "</div>"


def _svg_open(width: int, height: int, label: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{_e(label)}'>")


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
.passed {{ color: #1a7f37; }} .failed {{ color: #c62828; }}
svg text {{ font-size: 11px; fill: #333; }}
.grid {{ stroke: #ddd; }} .bar {{ fill: #8fb8de; }} .whisker {{ stroke: #123; stroke-width: 2; }}
.dot {{ fill: #1f77b4; fill-opacity: 0.7; }}
.grid-of-plots {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }} figcaption {{ font-size: 0.85em; }}
img.video {{ width: 192px; image-rendering: pixelated; }}
</style></head><body>"""
