"""`thinktank report`: a Markdown report with PNG plots for one bench run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on these machines

import matplotlib.pyplot as plt

from thinktank.bench.summary import ConfigSummary
from thinktank.economics import price_reversals
from thinktank.ledger import BenchAttempt

#: What a configuration's cost reads when a model it called has no price.
UNKNOWN_COST = "unknown (unpriced)"


def label(summary: ConfigSummary) -> str:
    return f"{summary.strategy} @ {summary.model}"


def cost_of_pass_text(summary: ConfigSummary, nothing_solved: str = "-") -> str:
    """Cost-of-pass as a table shows it: unknown for an unpriced configuration,
    ``nothing_solved`` when nothing was solved."""
    if summary.unpriced_models:
        return UNKNOWN_COST
    return nothing_solved if summary.cost_of_pass_usd is None else f"{summary.cost_of_pass_usd:.3g}"


def cost_per_problem_text(summary: ConfigSummary) -> str:
    cost = summary.cost_per_problem
    return UNKNOWN_COST if cost is None else f"{cost:.3g}"


def pass_at_k_output_text(summary: ConfigSummary) -> str:
    """A pass@k output's any-of-k figure, labelled with its k; "-" for one answer."""
    if summary.pass_at_k_output is None:
        return "-"
    return f"{summary.pass_at_k_output:.2f} (any of {summary.answers_given})"


def wall_time_text(attempts: Sequence[BenchAttempt]) -> str:
    """The run's wall time: its attempts' (concurrent problems overlap), and their
    concurrency."""
    if not attempts:
        return "wall time not recorded"
    seconds = sum(a.wall_seconds for a in attempts)
    concurrency = ", ".join(dict.fromkeys(str(a.concurrency) for a in attempts))
    over = f" over {len(attempts)} attempts" if len(attempts) > 1 else ""
    return f"wall time {seconds:.1f} s{over} (concurrency {concurrency})"


def unpriced_lines(summaries: Sequence[ConfigSummary]) -> list[str]:
    """One warning for every model without a price, naming what it leaves unknown."""
    models = sorted({m for s in summaries for m in s.unpriced_models})
    if not models:
        return []
    return [
        f"- **unpriced**: {', '.join(models)} has no price in the price book, so the cost "
        "and cost-of-pass of what calls it are unknown (not $0); add it to "
        "`$THINKTANK_HOME/prices.toml`."
    ]


def write_report(
    run_id: str,
    config: dict,
    summaries: list[ConfigSummary],
    out_dir: Path,
    attempts: Sequence[BenchAttempt] = (),
) -> Path:
    """Write ``report.md`` and its plots into ``out_dir``; returns the report's path.
    ``attempts``: the run's, for its wall time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [_save(figure, out_dir / f"{name}.png") for name, figure in report_figures(summaries)]
    path = out_dir / "report.md"
    path.write_text(_markdown(run_id, config, summaries, plots, attempts))
    return path


def report_figures(summaries: list[ConfigSummary]) -> list[tuple[str, plt.Figure]]:
    """The report's plots, each with its name, in the order the report shows them
    (the caller saves or renders each, which closes it: see `_save`)."""
    figures = [
        ("accuracy_vs_tokens", _plot_accuracy_vs_tokens(summaries)),
        ("cost_of_pass", _plot_cost_of_pass(summaries)),
        ("pareto", pareto_figure([(label(s), s) for s in summaries])),
    ]
    if any(s.samples > 1 for s in summaries):
        figures.insert(1, ("pass_and_majority_at_k", _plot_scaling(summaries)))
    if any(s.best_of_k for s in summaries):
        figures.insert(2, ("verifier_scaling", _plot_verifier(summaries)))
    return figures


def _markdown(
    run_id: str,
    config: dict,
    summaries: list[ConfigSummary],
    plots: list[Path],
    attempts: Sequence[BenchAttempt],
) -> str:
    several = any(s.pass_at_k_output is not None for s in summaries)
    lines = [
        f"# thinktank bench report: `{run_id}`",
        "",
        f"Suite `{config['suite']}`, seed {config['seed']}, "
        f"budget per problem {config.get('budget') or 'none'}; {wall_time_text(attempts)}.",
        "",
        *_summary_table(summaries, several),
        "",
        *_column_notes(several),
        *unpriced_lines(summaries),
        *_price_reversal_lines(summaries),
        *_evaluation_lines(summaries),
        "",
        *[f"![{plot.stem}]({plot.name})" for plot in plots],
        "",
    ]
    return "\n".join(lines)


def _summary_table(summaries: Sequence[ConfigSummary], several: bool) -> list[str]:
    """One row per configuration; a pass@k column when some strategy gives k answers."""
    lines = [
        "| strategy | model | problems | accuracy | 95% CI | tokens/problem | $/problem "
        "| cost-of-pass $ | model-seconds | coverage (upper bound) |"
        + (" pass@k output (k answers) |" if several else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if several else ""),
    ]
    for s in summaries:
        cop = cost_of_pass_text(s, nothing_solved="∞ (nothing solved)")
        if s.on_frontier:
            cop = f"**{cop}** (frontier)"
        coverage = "-" if s.coverage_upper_bound is None else f"{s.coverage_upper_bound:.2f}"
        lines.append(
            f"| {s.strategy} | {s.model} | {s.n_problems} | {s.accuracy:.2f} "
            f"| {s.ci95[0]:.2f}-{s.ci95[1]:.2f} | {s.tokens_per_problem:.0f} "
            f"| {cost_per_problem_text(s)} | {cop} | {s.model_seconds:.1f} | {coverage} |"
            + (f" {pass_at_k_output_text(s)} |" if several else "")
        )
    return lines


def _column_notes(several: bool) -> list[str]:
    """What each column means, and which ones read the ground truth."""
    lines = [
        "- *accuracy*: share of problems whose committed answer is right (a pass@k output's "
        "first answer).",
        "- *cost-of-pass*: expected dollars for one correct answer (cost per problem ÷ "
        "accuracy); the *frontier* is the lowest of the run.",
        "- *model-seconds*: time in model calls, summed over problems; concurrent problems "
        "overlap, so it exceeds the wall time above.",
        "- *coverage* and *pass@k* read the ground truth of every sample: they bound what a "
        "perfect selector could reach and are **not** any strategy's accuracy.",
        "- *majority@k*: expected accuracy of a vote over k of the same samples (no resampling).",
    ]
    if several:
        lines.append(
            "- *pass@k output*: share of problems where any of a strategy's k answers is right:"
            " the grader picks among the guesses, so it is **not** accuracy and feeds neither"
            " cost-of-pass, `tune` nor a router."
        )
    return lines


def _evaluation_lines(summaries: Sequence[ConfigSummary]) -> list[str]:
    """Per configuration, what was measured against the ground truth (evaluation only):
    its verifier's false positives, its workers' reliability, its coverage fit."""
    lines: list[str] = []
    for s in summaries:
        if s.verifier_false_positive_rate is not None:
            lines.append(
                f"- verifier of {label(s)}: accepts {s.verifier_false_positive_rate:.0%} of wrong"
                " samples (score >= 0.5; measured against the ground truth, evaluation only)"
            )
    for s in summaries:
        if s.worker_reliability:
            lines += [
                "",
                f"Workers of {label(s)}: reliability estimated by Dawid-Skene from agreement "
                "alone, against the share of each worker's samples that were right (ground "
                "truth, evaluation only).",
                "",
                "| worker | estimated reliability | accuracy of its samples |",
                "|---|---|---|",
                *[
                    f"| {worker} | {p:.2f} | {s.worker_accuracy.get(worker, math.nan):.2f} |"
                    for worker, p in s.worker_reliability.items()
                ],
                "",
            ]
    for s in summaries:
        if s.coverage_power_law:
            a, b = s.coverage_power_law
            lines.append(f"- coverage fit for {label(s)}: exp({a:.3f} · k^{b:.3f})")
    return lines


def _style(
    axes: plt.Axes,
    title: str,
    xlabel: str,
    *,
    ylabel: str = "accuracy",
    log_base: int = 10,
    legend_size: int = 8,
) -> None:
    """The look the accuracy plots share: log x, y from 0 to 1, legend and grid.

    Many configurations get their legend outside the plot, where it hides nothing.
    """
    axes.set_xscale("log", base=log_base)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_ylim(0, 1)
    axes.set_title(title)
    if len(axes.get_legend_handles_labels()[0]) > 6:
        width, height = axes.figure.get_size_inches()
        axes.figure.set_size_inches(width + 4, height)  # room for the legend
        axes.legend(fontsize=legend_size, loc="upper left", bbox_to_anchor=(1.02, 1))
    else:
        axes.legend(fontsize=legend_size)
    axes.grid(alpha=0.3)


def _figure(width: float, height: float) -> tuple[plt.Figure, plt.Axes]:
    """A figure whose colours do not repeat before 20 configurations."""
    figure, axes = plt.subplots(figsize=(width, height))
    axes.set_prop_cycle(color=plt.cm.tab20.colors)
    return figure, axes


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")  # keeps a legend set outside
    plt.close(figure)
    return path


def results_table(summaries: list[ConfigSummary]) -> str:
    """A Markdown table of a run: accuracy, tokens as computed (prompt tokens a prefix
    cache served shown apart), cost-of-pass and model-seconds (and a pass@k output's
    any-of-k figure, apart)."""
    several = any(s.pass_at_k_output is not None for s in summaries)
    lines = [
        "| strategy @ model | accuracy (95% CI) | majority@max of its samples | completion tokens "
        "| prompt tokens computed (+ cached) | cost-of-pass $ | model-seconds |"
        + (" pass@k output (k answers) |" if several else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if several else ""),
    ]
    for s in summaries:
        majority = f"{s.majority_at_k[-1]:.2f}" if s.majority_at_k else "-"
        lines.append(
            f"| {label(s)} | {s.accuracy:.2f} ({s.ci95[0]:.2f}-{s.ci95[1]:.2f}) | {majority} "
            f"| {s.completion_tokens:,} | {s.prompt_tokens - s.cached_tokens:,} "
            f"(+ {s.cached_tokens:,}) | {cost_of_pass_text(s)}"
            f"{' (frontier)' if s.on_frontier else ''} | {s.model_seconds:.0f} |"
            + (f" {pass_at_k_output_text(s)} |" if several else "")
        )
    return "\n".join(lines)


def _price_reversal_lines(summaries: list[ConfigSummary]) -> list[str]:
    """Configurations ordered by what they paid per token and by cost-of-pass, and the
    pairs where the cheaper per token is the dearer per correct answer."""
    priced = [s for s in summaries if s.total_tokens and s.cost_usd is not None]
    if len(priced) < 2:
        return []
    per_token = [s.cost_usd / s.total_tokens for s in priced]
    reversals = price_reversals(
        [(rate, s.cost_of_pass_usd) for rate, s in zip(per_token, priced, strict=True)]
    )
    by_rate = sorted(range(len(priced)), key=lambda i: per_token[i])
    by_answer = sorted(range(len(priced)), key=lambda i: priced[i].cost_of_pass_usd or math.inf)
    lines = [
        "",
        "## Price per token vs cost per correct answer",
        "",
        "By dollars paid per token (all tokens, cheapest first): "
        + ", ".join(f"{label(priced[i])} ({per_token[i] * 1e6:.3g} $/M)" for i in by_rate),
        "",
        "By cost-of-pass (cheapest first): " + ", ".join(label(priced[i]) for i in by_answer),
        "",
    ]
    if not reversals:
        return [*lines, "No price reversal: paying less per token never cost more per answer."]
    lines.append(f"Price reversals ({len(reversals)}): cheaper per token, dearer per answer:")
    lines += [f"- {label(priced[i])} costs more per correct answer than {label(priced[j])}"
              for i, j in reversals]  # fmt: skip
    return lines


def _plot_accuracy_vs_tokens(summaries: list[ConfigSummary]) -> plt.Figure:
    figure, axes = _figure(7, 4.5)
    for s in summaries:
        errors = [[max(0.0, s.accuracy - s.ci95[0])], [max(0.0, s.ci95[1] - s.accuracy)]]
        tokens = s.computed_tokens_per_problem
        line = axes.errorbar(
            [tokens], [s.accuracy], yerr=errors, fmt="o", capsize=4, label=label(s)
        )
        if s.samples > 1:  # the same samples voted k at a time: the scaling curve
            per_sample = tokens / s.samples
            ks = range(1, s.samples + 1)
            axes.plot([k * per_sample for k in ks], s.majority_at_k, "-", alpha=0.5,
                      color=line[0].get_color())  # fmt: skip
    _style(axes, "Accuracy vs tokens (lines: majority@k of the same samples)",
           "tokens computed per problem (cached prompt tokens not counted; log)")  # fmt: skip
    return figure


def _plot_scaling(summaries: list[ConfigSummary]) -> plt.Figure:
    figure, axes = _figure(7, 4.5)
    for s in (s for s in summaries if s.samples > 1):
        ks = list(range(1, s.samples + 1))
        (line,) = axes.plot(ks, s.majority_at_k, "o-", label=f"majority@k, {label(s)}")
        axes.plot(ks, s.pass_at_k, "s--", color=line.get_color(), alpha=0.7,
                  label=f"pass@k (upper bound), {label(s)}")  # fmt: skip
        if s.coverage_power_law:
            a, b = s.coverage_power_law
            fine = [k / 10 for k in range(10, 10 * s.samples + 1)]
            axes.plot(fine, [_power_law(k, a, b) for k in fine], ":", color=line.get_color(),
                      alpha=0.7)  # fmt: skip
    _style(axes, "pass@k (dashed, ground-truth upper bound) and majority@k (solid)",
           "k samples (log)", ylabel="fraction of problems", log_base=2, legend_size=7)  # fmt: skip
    return figure


def _plot_verifier(summaries: list[ConfigSummary]) -> plt.Figure:
    figure, axes = _figure(7, 4.5)
    for s in (s for s in summaries if s.best_of_k):
        ks = list(range(1, s.samples + 1))
        (line,) = axes.plot(ks, s.best_of_k, "o-", label=f"best-scored of k, {label(s)}")
        axes.plot(ks, s.majority_at_k, ":", color=line.get_color(), alpha=0.7,
                  label=f"majority@k, {label(s)}")  # fmt: skip
        axes.plot(ks, s.pass_at_k, "--", color=line.get_color(), alpha=0.4,
                  label=f"pass@k (upper bound), {label(s)}")  # fmt: skip
    _style(axes, "Verifier scaling: accuracy of the best-scored of k samples",
           "k samples (log)", log_base=2, legend_size=7)  # fmt: skip
    return figure


def _power_law(k: float, a: float, b: float) -> float:
    return math.exp(a * k**b)


def _plot_cost_of_pass(summaries: list[ConfigSummary]) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(7, 0.6 * len(summaries) + 1.5))
    names = [label(s) for s in summaries]
    values = [s.cost_of_pass_usd or 0.0 for s in summaries]
    colors = ["tab:green" if s.on_frontier else "tab:blue" for s in summaries]
    bars = axes.barh(names, values, color=colors)
    for bar, s in zip(bars, summaries, strict=True):
        text = cost_of_pass_text(s, nothing_solved="nothing solved")
        text = text if s.cost_of_pass_usd is None else f"${text}"
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {text}",
                  va="center", fontsize=8)  # fmt: skip
    axes.invert_yaxis()
    axes.set_xlabel("cost-of-pass: $ per correct answer (green: frontier)")
    axes.set_title("Cost-of-pass")
    axes.margins(x=0.3)
    return figure


def plot_pareto(
    points: list[tuple[str, ConfigSummary]],
    path: Path,
    *,
    title: str = "Accuracy-cost Pareto front (stars)",
    recommended: ConfigSummary | None = None,
    held_out: ConfigSummary | None = None,
) -> Path:
    """`pareto_figure` saved to ``path``."""
    return _save(pareto_figure(points, title=title, recommended=recommended,
                               held_out=held_out), path)  # fmt: skip


def pareto_figure(
    points: list[tuple[str, ConfigSummary]],
    *,
    title: str = "Accuracy-cost Pareto front (stars)",
    recommended: ConfigSummary | None = None,
    held_out: ConfigSummary | None = None,
) -> plt.Figure:
    """Accuracy against cost per problem, stars on the Pareto front; for `thinktank
    tune`, also the recommendation and where it landed on the held-out split. A
    configuration of unknown cost has no place on it."""
    figure, axes = _figure(7, 4.5)
    for name, s in ((name, s) for name, s in points if s.cost_per_problem is not None):
        axes.scatter([s.cost_per_problem], [s.accuracy], s=50, label=name,
                     marker="*" if s.on_pareto_front else "o")  # fmt: skip
    front = sorted((s for _, s in points if s.on_pareto_front), key=lambda s: s.cost_per_problem)
    axes.step([s.cost_per_problem for s in front], [s.accuracy for s in front], where="post",
              color="gray", alpha=0.6, label="Pareto front")  # fmt: skip
    if recommended is not None:
        axes.scatter([recommended.cost_per_problem], [recommended.accuracy], s=260,
                     facecolors="none", edgecolors="red", linewidths=2,
                     label="recommended")  # fmt: skip
    if recommended is not None and held_out is not None:
        axes.scatter([held_out.cost_per_problem], [held_out.accuracy], s=90, marker="X",
                     color="red", label="recommended (held-out)")  # fmt: skip
        axes.plot([recommended.cost_per_problem, held_out.cost_per_problem],
                  [recommended.accuracy, held_out.accuracy], "r--", alpha=0.6)  # fmt: skip
    _style(axes, title, "$ per problem (log)")
    return figure
