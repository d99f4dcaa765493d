import json
import re

import nbformat
import pytest

from nblib.presets import get_preset
from nblib.results import comparison, report
from nblib.results.records import RecordError, make_record, write_record
from nblib.training.classifier import score_predictions

SMOKE = get_preset("smoke")


def fake_record(model, variant, seed, accuracy):
    metrics = {"accuracy": accuracy, "macro_f1": accuracy - 0.05, "recall": {"0": 0.8, "1": 0.9}, "n": 100}
    results = {"val": metrics, "test": metrics, "finetuning": {"epochs": 3, "seconds": 60.0},
               "inference_reviews_per_s": 500.0}
    pre = {"tokens": 1000, "steps": 10, "seconds": 120.0, "final_loss": 3.0} if variant == "pretrained" else None
    return make_record(model=model, variant=variant, preset=SMOKE, seed=seed, train_size=100,
                             parameters=1234, results=results, pretraining=pre)


@pytest.fixture()
def records(runs_tmp):
    for seed, acc in enumerate([0.80, 0.82, 0.84]):
        write_record(fake_record("bert", "pretrained", seed, acc))
        write_record(fake_record("bert", "random", seed, acc - 0.1))
    write_record(fake_record("tfidf", "baseline", 0, 0.88))
    return runs_tmp / "smoke"


def test_table_means_and_stds_over_seeds(records):
    table = comparison.comparison_table(comparison.load_records(records))
    assert table["model"].tolist() == ["tfidf", "bert", "bert"]
    bert = table[(table["model"] == "bert") & (table["variant"] == "pretrained")].iloc[0]
    assert bert["test accuracy"] == "0.820 ± 0.020" and bert["seeds"] == 3
    assert bert["pretrain min"] == "2.0"


def test_write_comparison(records, tmp_path):
    path = comparison.write_comparison("smoke", out=tmp_path / "c.md")
    text = path.read_text(encoding="utf-8")
    assert "| bert | pretrained | 3 | 0.820 ± 0.020 |" in text and "Protocol" in text
    # the clock (minutes, reviews/s) sits in its own table after the results, which a rerun reproduces
    results, clock = text.split(comparison.COST_HEADING)
    assert "pretrain min" not in results and "reviews/s" not in results
    assert "| model | variant | pretrain min | fine-tune min | reviews/s |" in clock
    assert "| bert | pretrained | 2.0 |" in clock


def test_ablations_get_a_section_of_their_own(records, tmp_path):
    write_record(fake_record("gpt", "pretrained-lm0", 0, 0.85))
    text = comparison.write_comparison("smoke", out=tmp_path / "c.md").read_text(encoding="utf-8")
    main, rest = text.split("Ablations (`make ablations`")
    assert "pretrained-lm0" not in main and "| gpt | pretrained-lm0 | 1 | 0.850 |" in rest
    assert "| bert | pretrained | 3 |" in main


def test_gpt_zero_shot_is_part_of_the_main_job_not_an_ablation(records, tmp_path):
    # lesson 04 scores the zero-shot GPT in `make report`; a hyphen in its name made it an "ablation" once
    write_record(fake_record("gpt", "zero-shot", 0, 0.77))
    write_record(fake_record("elmo", "pretrained-frozen", 0, 0.80))
    text = comparison.write_comparison("smoke", out=tmp_path / "c.md").read_text(encoding="utf-8")
    main, rest = text.split("Ablations (`make ablations`")
    assert "| gpt | zero-shot | 1 | 0.770 |" in main and "zero-shot" not in rest.split("\n\n")[1]
    assert "| elmo | pretrained-frozen | 1 | 0.800 |" in rest


def test_write_comparison_without_records(runs_tmp, tmp_path):
    text = comparison.write_comparison("smoke", out=tmp_path / "c.md").read_text(encoding="utf-8")
    assert "_No results records yet._" in text and comparison.COST_HEADING not in text


def test_bad_records_name_the_file(records):
    bad = records / "bert-pretrained" / "0" / "result.json"
    data = json.loads(bad.read_text())
    del data["test"]
    bad.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"{bad}: missing field 'test'"):
        comparison.load_records(records)
    data["test"] = data["val"]
    data["model"] = "xlnet"
    bad.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"{bad}: unknown model 'xlnet'"):
        comparison.load_records(records)


def test_failing_notebook_names_the_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("PRESET = 'small'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise ValueError('boom')"),
    ], metadata={"kernelspec": {"name": "nblib", "display_name": "Python (nblib)", "language": "python"}})
    path = tmp_path / "99_fail.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(RuntimeError, match=r"99_fail.ipynb failed in cell \d+ .*ValueError: boom"):
        report.execute_notebook(path, tmp_path / "out.ipynb", {"PRESET": "smoke"}, timeout_s=60, progress=False)


def test_report_cli_rejects_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        report.main(["run", "--preset", "tiny"])


def test_compare_notebook_renders_from_fixture_records(runs_tmp, hotel_split, tmp_path):
    """Lesson 05 reads only records: it renders from fixtures without training anything."""
    test = hotel_split.test.iloc[:50]
    for model, shift in (("bert", 0.0), ("gpt", -0.02)):
        for variant, base in (("pretrained", 0.85 + shift), ("random", 0.8 + shift)):
            for seed in range(3):
                record = fake_record(model, variant, seed, base + 0.01 * seed)
                pred = [(y + (i % 7 == seed)) % 2 for i, y in enumerate(test["label"])]
                scored = score_predictions(test, pred)
                record.update({k: scored[k] for k in ("predictions", "test_long", "test_short")})
                write_record(record)
                small = dict(record, label_count=100, train_size=100)
                small["test"] = dict(record["test"], accuracy=base - 0.1)
                write_record(small)
    write_record(fake_record("tfidf", "baseline", 0, 0.88))
    notebook = report.NOTEBOOKS_DIR / "05_compare.ipynb"
    report.execute_notebook(notebook, tmp_path / "05.ipynb", {"PRESET": "smoke", "FIGURES": str(tmp_path / "fig")},
                            timeout_s=120, progress=False)
    assert {p.name for p in (tmp_path / "fig").glob("*.png")} >= {
        "05_accuracy.png", "05_label_efficiency.png", "05_long_vs_short.png", "05_confusion.png"}
    executed = [c for c in nbformat.read(tmp_path / "05.ipynb", as_version=4).cells if c.cell_type == "code"]
    conclusions = "".join(o.get("text", "") for c in executed for o in c.outputs)  # the cells' printed text
    assert "Best pretrained model in domain: bert (pretrained) (0.860), below TF-IDF + LR (0.880)" in conclusions
    # the twins predicted the same reviews, so no paired gap is resolved, whatever their accuracies
    assert "of 4 model × label-count comparisons, 0 pays, 0 costs, 4 not resolved" in conclusions
    assert "Ranking of the pretrained models in domain: bert > gpt; the usual claim (BERT > GPT > ELMo) agrees" \
        in conclusions
    # the paired gaps: both twins predicted the same reviews, so no test gap, whatever their accuracies;
    # the lesson's own bootstrap agrees with the library's
    assert "my bootstrap equals comparison.paired_gap" in conclusions
    for model in ("bert", "gpt"):
        assert re.search(rf"{model}\s+all labels, in domain \(hotel test\)\s*:\s*\+0\.0 points", conclusions)


def test_report_order_runs_compare_last_and_07_on_request(tmp_path):
    names = ["00_data", "01_baselines", "05_compare", "06_inside", "07_pretrained_checkpoints"]
    paths = [tmp_path / f"{n}.ipynb" for n in names]
    assert [p.stem for p in report.report_order(paths)] == ["00_data", "01_baselines", "06_inside", "05_compare"]
    assert [p.stem for p in report.report_order(paths, with_checkpoints=True)][-2:] == [
        "07_pretrained_checkpoints", "05_compare"]


def with_predictions(record, labels, n_wrong):
    """The record with test predictions that get the first ``n_wrong`` reviews wrong."""
    pred = [int(y) if i >= n_wrong else 1 - int(y) for i, y in enumerate(labels)]
    return {**record, "predictions": {"ids": list(labels.index), "pred": pred, "labels": [int(y) for y in labels]}}


def test_write_comparison_adds_the_gap_table_when_records_hold_predictions(runs_tmp, tmp_path, monkeypatch):
    import pandas as pd

    labels = pd.Series([i % 2 for i in range(100)], index=range(100))
    for seed in (0, 1):
        write_record(with_predictions(fake_record("gpt", "pretrained", seed, 0.9), labels, 5))
        write_record(with_predictions(fake_record("gpt", "random", seed, 0.8), labels, 15))
    text = comparison.write_comparison("smoke", out=tmp_path / "c.md").read_text(encoding="utf-8")
    # 95 vs 85 reviews right out of 100 on both seeds: +10 points, and the interval is above zero
    assert "What pretraining adds" in text and "| gpt | all | 2 / 2 | +10.0 [" in text
    assert "] | pays |" in text


def test_the_comparison_reads_labels_from_the_records_and_refuses_records_without_them(runs_tmp, tmp_path):
    import pandas as pd

    labels = pd.Series([i % 2 for i in range(10)], index=range(100, 110))
    right = with_predictions(fake_record("gpt", "pretrained", 0, 0.9), labels, 0)
    assert comparison.labels_from_records([right])["test"].equals(labels)
    old = {**right, "predictions": {k: v for k, v in right["predictions"].items() if k != "labels"}}
    with pytest.raises(comparison.ComparisonError, match="keep no true labels"):
        comparison.labels_from_records([old])


def test_reading_records_imports_no_deep_learning_code():
    """records and report read JSON without torch or Lightning: `import nblib.results.report` stays quick."""
    import subprocess
    import sys

    code = ("import sys, nblib.results.records, nblib.results.report, nblib.results.comparison; "
            "heavy = {'torch', 'pytorch_lightning', 'torchmetrics', 'nblib.data'} & set(sys.modules); "
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_git_revision_is_dirty_for_code_but_not_for_a_runs_own_outputs(tmp_path):
    import subprocess

    from nblib.results.records import git_revision

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "comparison.md").write_text("old\n")
    (tmp_path / "README.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = git_revision(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{7,}", clean)
    # what `make report` writes (figures, the README's results block) leaves the revision clean
    (tmp_path / "figures" / "comparison.md").write_text("new\n")
    (tmp_path / "README.md").write_text("new\n")
    assert git_revision(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")  # a code change does not
    assert git_revision(tmp_path) == clean + "-dirty"


def test_an_interrupted_run_resumes_where_it_stopped_under_its_run_id(runs_tmp, tmp_path, monkeypatch):
    """A killed `make report` keeps its finished lessons: RESUME=1 runs only the rest, under the same id."""
    lessons = [tmp_path / f"{n}.ipynb" for n in ("00_data", "01_baselines", "02_elmo", "05_compare")]
    monkeypatch.setattr(report, "lesson_notebooks", lambda: lessons)
    monkeypatch.setattr(comparison, "FIGURES_DIR", tmp_path / "figures")
    monkeypatch.setattr(report, "lesson_parameters", lambda nb, preset_name, ablations: {"PRESET": preset_name})
    executed: list[tuple[str, str]] = []

    def execute(nb, output, parameters, *, timeout_s=None):
        if nb.stem == "02_elmo" and not any(n == "02_elmo" for n, _ in executed):
            executed.append((nb.stem, "killed"))
            raise KeyboardInterrupt  # the session ends in the middle of lesson 02
        executed.append((nb.stem, report.os.environ[report.RUN_ID_ENV]))

    monkeypatch.setattr(report, "execute_notebook", execute)
    (tmp_path / "figures" / "ablations").mkdir(parents=True)
    for stale in ("figures/01_old.png", "figures/ablations/03_truncation.png"):
        (tmp_path / stale).write_bytes(b"a figure of an older run")
    with pytest.raises(KeyboardInterrupt):
        report.run_all("smoke")
    # a whole run starts without the last run's figures (the ablations' are make ablations' own)
    assert not (tmp_path / "figures" / "01_old.png").exists()
    assert (tmp_path / "figures" / "ablations" / "03_truncation.png").exists()
    first_id = executed[0][1]
    state = json.loads((runs_tmp / "smoke" / report.RUN_STATE).read_text())
    assert state["run_id"] == first_id and list(state["lesson_seconds"]) == ["00_data", "01_baselines"]

    report.run_all("smoke", resume=True)
    assert [n for n, _ in executed] == ["00_data", "01_baselines", "02_elmo", "02_elmo", "05_compare"]
    assert {i for _, i in executed if i != "killed"} == {first_id}  # every lesson drew under one run id
    table = (tmp_path / "figures" / "comparison.md").read_text()
    assert f"run `{first_id}`" in table
    assert re.findall(r"\| (0\d_\w+) \|", table) == ["00_data", "01_baselines", "02_elmo", "05_compare"]

    # without --resume a run starts afresh; a state from other code or other lessons is refused
    report.run_all("smoke", only=["00"])
    state_path = runs_tmp / "smoke" / report.RUN_STATE
    assert executed[-1][0] == "00_data" and json.loads(state_path.read_text())["lessons"] == ["00_data"]
    with pytest.raises(RuntimeError, match="ran lessons"):
        report.run_all("smoke", resume=True)
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps(dict(state, commit="0000000")))
    with pytest.raises(RuntimeError, match="is a run of commit 0000000"):
        report.run_all("smoke", only=["00"], resume=True)


def test_ablations_are_named_after_the_complete_run_they_extend(runs_tmp, tmp_path, monkeypatch):
    """`make ablations` after a complete `make report` of the same commit runs under that run's id plus
    "-ablations", and the table keeps the main run's header and lesson minutes, the ablations' added."""
    import papermill

    lessons = [tmp_path / f"{n}.ipynb" for n in ("00_data", "03_bert", "03b_electra")]
    monkeypatch.setattr(report, "lesson_notebooks", lambda: lessons)
    monkeypatch.setattr(comparison, "FIGURES_DIR", tmp_path / "figures")
    monkeypatch.setattr(report, "lesson_parameters", lambda nb, preset_name, ablations: {"PRESET": preset_name})
    monkeypatch.setattr(papermill, "inspect_notebook",
                        lambda path: {"ABLATIONS": {}} if str(path).endswith(("03_bert.ipynb", "03b_electra.ipynb")) else {})
    executed: list[tuple[str, str]] = []
    monkeypatch.setattr(report, "execute_notebook", lambda nb, output, parameters, *, timeout_s=None:
                        executed.append((nb.stem, report.os.environ[report.RUN_ID_ENV])))
    monkeypatch.setenv(report.RUN_ID_ENV, "unset")  # restored after the test: the report sets it
    ids = iter(("smoke-first", "smoke-second"))
    monkeypatch.setattr(report, "run_id", lambda preset_name: next(ids))
    report.run_all("smoke")
    main_id = executed[0][1]
    table_path = tmp_path / "figures" / "comparison.md"
    for only in (["03_"], ["03b"]):  # two calls add up
        monkeypatch.delenv(report.RUN_ID_ENV, raising=False)
        report.run_ablations("smoke", only=only)
    assert executed[3:] == [("03_bert", f"{main_id}-ablations"), ("03b_electra", f"{main_id}-ablations")]
    table = table_path.read_text()
    assert f"run `{main_id}` and its ablations `{main_id}-ablations`" in table
    assert re.search(r"wall time [\d.]+ min \(the ablations [\d.]+ min more\)", table)
    assert re.findall(r"\| (0\w+(?: \(ablations\))?) \|", table) == [
        "00_data", "03_bert", "03b_electra", "03_bert (ablations)", "03b_electra (ablations)"]
    monkeypatch.delenv(report.RUN_ID_ENV, raising=False)
    report.write_table("smoke")  # `report table` rewrites it with the same run and minutes
    assert f"run `{main_id}` and its ablations" in table_path.read_text()
    # the main run is of another commit: the ablations are a run of their own, the table names only them
    state_path = runs_tmp / "smoke" / report.RUN_STATE
    state_path.write_text(json.dumps(dict(json.loads(state_path.read_text()), commit="0000000")))
    monkeypatch.delenv(report.RUN_ID_ENV, raising=False)
    report.run_ablations("smoke", only=["03_"])
    assert (main_id, executed[-1][1]) == ("smoke-first", "smoke-second-ablations")
    assert "run `smoke-second-ablations`" in table_path.read_text()
    assert "03_bert (ablations)" not in table_path.read_text()


def test_the_report_runs_every_lesson_with_its_whole_grid_and_a_learner_gets_a_sitting():
    """`make report` passes FULL = True (the whole grid) to the lessons that declare it, and ABLATIONS as
    asked; the notebooks' own defaults are a learner's sitting without ablations."""
    import papermill

    with_grid = [nb for nb in report.lesson_notebooks() if "FULL" in papermill.inspect_notebook(str(nb))]
    assert {nb.name[:2] for nb in with_grid} >= {"01", "02", "03", "04", "05", "06", "08"}
    for nb in with_grid:
        declared = papermill.inspect_notebook(str(nb))
        assert declared["FULL"]["default"] == "False", nb.name
        assert declared.get("ABLATIONS", {"default": "False"})["default"] == "False", nb.name
        main_job = report.lesson_parameters(nb, "small", ablations=False)
        assert main_job["FULL"] is True and main_job.get("ABLATIONS", False) is False
        if "ABLATIONS" in declared:
            assert report.lesson_parameters(nb, "small", ablations=True)["ABLATIONS"] is True
    assert "FULL" not in report.lesson_parameters(report.NOTEBOOKS_DIR / "00_data.ipynb", "small", False)
