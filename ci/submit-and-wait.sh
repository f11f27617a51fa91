#!/usr/bin/env bash
# Submit a dtf suite to a running coordinator, wait for it, and leave reports behind.
# A CI-neutral wrapper around `dtf submit --wait` for Jenkins, Buildkite or any shell;
# the GitHub and GitLab pipelines in ci/ call it too.
#
# Usage: ci/submit-and-wait.sh SUITE [more `dtf submit` options, e.g. --templates DIR]
#
# Environment:
#   DTF_BROKER_URL          broker the coordinator and workers use (required)
#   DTF_REPORT_DIR          folder for report.json, report.md, report.html, junit.xml
#                           (default: dtf-reports)
#   DTF_WAIT_TIMEOUT        seconds to wait before giving up with exit 2 (default: 3600)
#   DTF_BASELINE            run id, "latest", or "none" to skip the comparison (default: latest)
#   DTF_FAIL_ON_REGRESSION  1: exit 1 on a flagged performance regression (default: 0)
#   DTF_CMD                 how to call dtf (default: dtf; e.g. "python -m dtf.cli")
#   DTF_COMMENT_MAX         longest comment.md in characters (default: 60000; GitHub
#                           refuses comments over 65536)
#
# Besides the reports, $DTF_REPORT_DIR/comment.md is a pull/merge-request comment body (the
# verdict and the Markdown report, cut at DTF_COMMENT_MAX with a note). On GitHub the
# Markdown report is appended to the job summary; on Buildkite it becomes a build annotation.
#
# Exit status is dtf's: 0 all passed, 1 test failures (or regressions when asked),
# 2 bad input, an unreachable broker or coordinator, or a timeout.
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: $0 SUITE [dtf submit options...]" >&2
    exit 2
fi
suite=$1
shift
: "${DTF_BROKER_URL:?set DTF_BROKER_URL to the broker the coordinator listens on}"
report_dir=${DTF_REPORT_DIR:-dtf-reports}
wait_timeout=${DTF_WAIT_TIMEOUT:-3600}
baseline=${DTF_BASELINE:-latest}
read -r -a dtf <<< "${DTF_CMD:-dtf}"

args=(submit "$suite" --wait --timeout "$wait_timeout" --output-dir "$report_dir")
if [ "$baseline" != "none" ]; then
    args+=(--baseline "$baseline")
fi
if [ "${DTF_FAIL_ON_REGRESSION:-0}" = "1" ]; then
    args+=(--fail-on-regression)
fi

# CI=true gives plain progress lines instead of a live bar, which logs render badly.
export CI="${CI:-true}"
status=0
"${dtf[@]}" "${args[@]}" "$@" || status=$?

if [ -f "$report_dir/report.md" ]; then
    if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
        cat "$report_dir/report.md" >> "$GITHUB_STEP_SUMMARY"
    fi
    max=${DTF_COMMENT_MAX:-60000}
    {
        echo "<!-- dtf-report -->"
        if [ "$(wc -c < "$report_dir/report.md")" -le "$max" ]; then
            cat "$report_dir/report.md"
        else
            head -c "$max" "$report_dir/report.md"
            printf '\n\n_Cut at %s characters: the full report is in the build artifacts._\n' "$max"
        fi
    } > "$report_dir/comment.md"
    if [ -n "${BUILDKITE_BUILD_ID:-}" ] && command -v buildkite-agent >/dev/null 2>&1; then
        style=success
        [ "$status" -eq 0 ] || style=error
        buildkite-agent annotate --style "$style" --context dtf < "$report_dir/comment.md" || true
    fi
    echo "dtf: exit $status; reports in $report_dir (report.html, junit.xml, report.json, report.md)" >&2
else
    echo "dtf: exit $status; no reports were written" >&2
fi
exit "$status"
