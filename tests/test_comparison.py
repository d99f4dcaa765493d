"""Gains over the random twin with paired intervals over reviews and seeds; the README's results block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nblib.results import comparison

N = 400
LABELS = pd.Series(np.random.default_rng(0).integers(0, 2, N), index=range(1000, 1000 + N))


def _record(model: str, variant: str, seed: int, accuracy: float, label_count=None, ood=True, cut=False):
    rng = np.random.default_rng(hash((model, variant, seed, label_count)) % 2**32)
    y = LABELS.to_numpy()
    right = rng.random(N) < accuracy
    pred = np.where(right, y, 1 - y).tolist()
    r = {"model": model, "variant": variant, "seed": seed, "label_count": label_count,
         "predictions": {"ids": LABELS.index.tolist(), "pred": pred},
         "pretraining": {"budget": {"time_cap": {"capped": cut, "max_seconds": 780}}} if variant == "pretrained" else None}
    if ood:
        r["ood_predictions"] = {"ids": LABELS.index.tolist(), "pred": pred}
    return r


def test_paired_gap_sees_a_real_gain_and_no_gain():
    rng = np.random.default_rng(1)
    base = (rng.random((3, 2000)) < 0.80).astype(float)
    better = np.maximum(base, (rng.random((3, 2000)) < 0.10))  # ~+2 points on every seed
    g = comparison.paired_gap(better, base, n_boot=500)
    assert g["low"] > 0 and comparison.verdict(g["low"], g["high"]) == "pays"
    same = comparison.paired_gap(base, base[::-1], n_boot=500)
    assert same["low"] < 0 < same["high"]
    assert comparison.verdict(same["low"], same["high"]) == "not resolved"
    worse = comparison.paired_gap(base, better, n_boot=500)
    assert comparison.verdict(worse["low"], worse["high"]) == "costs"


def test_seed_resampling_widens_the_interval():
    rng = np.random.default_rng(2)
    # the pretrained seeds disagree a lot with each other: the interval must say so
    noisy = np.stack([(rng.random(2000) < p).astype(float) for p in (0.70, 0.80, 0.90)])
    steady = (rng.random((3, 2000)) < 0.78).astype(float)
    pooled = comparison.paired_gap(noisy, steady, n_boot=500)
    one_level = noisy.mean(axis=0) - steady.mean(axis=0)  # reviews only
    idx = rng.integers(0, 2000, size=(500, 2000))
    low, high = np.percentile(one_level[idx].mean(axis=1) * 100, [2.5, 97.5])
    assert pooled["high"] - pooled["low"] > 1.5 * (high - low)


def test_gains_table_per_label_count_and_part():
    records = []
    for count in (None, 100):
        for seed in range(3):
            records.append(_record("gpt", "pretrained", seed, 0.90, count))
            records.append(_record("gpt", "random", seed, 0.70, count))
    table = comparison.gains_table(records, {"test": LABELS, "ood": LABELS}, n_boot=300)
    assert table["labels"].tolist() == ["100", "all"]
    assert set(table["test verdict"]) == {"pays"} and set(table["ood verdict"]) == {"pays"}
    gain = float(table["test gain"].iloc[0].split()[0])
    assert 14 < gain < 26


def test_cut_pretraining_is_never_compared():
    records = [_record("elmo", "pretrained", 0, 0.69, cut=True), _record("elmo", "random", 0, 0.83)]
    table = comparison.gains_table(records, {"test": LABELS}, n_boot=100)
    assert "cut at 13 min" in table["test gain"].iloc[0] and table["test verdict"].iloc[0] == "–"


def test_mismatched_predictions_are_an_error():
    a = _record("bert", "pretrained", 0, 0.8)
    b = _record("bert", "random", 0, 0.8)
    b["predictions"] = {"ids": b["predictions"]["ids"][:-1], "pred": b["predictions"]["pred"][:-1]}
    with pytest.raises(comparison.ComparisonError, match="other reviews"):
        comparison.gains_table([a, b], {"test": LABELS}, n_boot=10)



def _fixed(model: str, variant: str, seed: int, labels: pd.Series, n_wrong: int) -> dict:
    """A record whose test predictions get exactly the first ``n_wrong`` reviews wrong."""
    pred = [int(y) if i >= n_wrong else 1 - int(y) for i, y in enumerate(labels)]
    return {"model": model, "variant": variant, "seed": seed, "predictions": {"ids": list(labels.index), "pred": pred}}


def test_gains_table_pairs_the_twins_exactly_and_skips_a_model_without_one():
    """(Moved here from report.pretraining_gaps' test when gains_table replaced it.)"""
    labels = pd.Series([i % 2 for i in range(200)], index=range(1000, 1200))
    records = []
    for seed in (0, 1, 2):
        records.append(_fixed("gpt", "pretrained", seed, labels, 10 + seed))  # 11 wrong on average
        records.append(_fixed("gpt", "random", seed, labels, 40))
        records.append(_fixed("bert", "pretrained", seed, labels, 30))  # the same predictions as its twin
        records.append(_fixed("bert", "random", seed, labels, 30))
    records.append(_fixed("elmo", "pretrained", 0, labels, 5))  # no random twin: no row
    table = comparison.gains_table(records, {"test": labels}, n_boot=500).set_index("model")
    assert list(table.index) == ["gpt", "bert"] and table.loc["gpt", "seeds"] == "3 / 3"
    gain, interval = table.loc["gpt", "test gain"].split(" ", 1)
    low, high = (float(x) for x in interval.strip("[]").split(","))
    assert gain == "+14.5" and 5 < low < 14.5 < high < 25 and table.loc["gpt", "test verdict"] == "pays"
    assert table.loc["bert", "test gain"] == "+0.0 [+0.0, +0.0]"
    assert table.loc["bert", "test verdict"] == "not resolved"

def test_readme_block_round_trip():
    readme = f"# x\n\nintro\n\n{comparison.README_START}\nold\n{comparison.README_END}\n\nafter\n"
    md = "# Comparison — preset `small`\n\nwritten on …\n\n| a |\n|---|\n| 1 |\n"
    new = comparison.write_readme_block(readme, md)
    assert comparison.readme_results(new) == comparison.readme_block(md)
    assert new.endswith("\n\nafter\n") and "old" not in new
    with pytest.raises(comparison.ComparisonError, match="markers"):
        comparison.write_readme_block("# no markers", md)


def test_the_protocol_line_reads_the_budget_from_the_records_not_from_todays_preset():
    def pretrained(chars):
        return {"model": "bert", "variant": "pretrained", "pretraining": {"settings": {"pretrain_chars": chars}}}

    random_twin = {"model": "bert", "variant": "random", "pretraining": None}
    assert comparison.pretraining_budgets([pretrained(5_000_000), pretrained(5_000_000), random_twin]) == [5_000_000]
    assert "the same budget of 5,000,000 characters" in comparison._budget_phrase([pretrained(5_000_000)])
    mixed = comparison._budget_phrase([pretrained(5_000_000), pretrained(20_000)])
    assert "DIFFER" in mixed and "20,000" in mixed and "5,000,000" in mixed
    assert "no pretrained model" in comparison._budget_phrase([random_twin])
