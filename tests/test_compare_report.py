"""pyro_vae.experiments.compare.report: the Markdown table of the summary rows."""

from test_compare_stats import SNR, fake_runs

from pyro_vae.experiments.compare import format_markdown_table, summarize_runs


def test_table_shows_mean_std_paired_delta_and_missing_snr():
    rows = summarize_runs(fake_runs(), SNR)
    table = format_markdown_table(rows)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 2
    assert "Δ log p(x) vs trace (K=1)" in lines[0]
    mean, std = rows[1]["test_log_likelihood_mean"], rows[1]["test_log_likelihood_std"]
    assert f"{mean:.2f} ± {std:.2f}".replace("-", "−") in lines[3]
    assert "+1.10 ± 0.10" in lines[3] and "(baseline)" in lines[2] and "n/a" in lines[2]


def test_table_single_seed_has_no_std():
    rows = summarize_runs([r for r in fake_runs() if r["seed"] == 0])
    assert "±" not in format_markdown_table(rows).splitlines()[2].split("|")[3]
