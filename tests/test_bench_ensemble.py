"""``residuals bench ensemble``: lesion plans, the verdict rule, the command and its run folder."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from residuals.bench import ensemble as ens
from residuals.bench.ensemble import families as fam
from residuals.bench.ensemble_cli import ensemble as ensemble_cmd
from residuals.cli import main
from residuals.core import StageStep, Stagewise

TINY = [
    "--depth",
    "8",
    "--epochs",
    "2",
    "--stage-epochs",
    "1",
    "--n-estimators",
    "4",
    "--max-depth",
    "2",
    "--draws",
    "2",
    "--seeds",
    "1",
    "--train-size",
    "400",
    "--device",
    "cpu",
    "--jobs",
    "1",
]


def invoke(*args, command=ensemble_cmd):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


# ---------------------------------------------------------------------- lesion plans
def test_lesion_counts_cover_small_models_and_spread_over_large_ones():
    assert ens.lesion_counts(9, 21) == list(range(10))
    counts = ens.lesion_counts(100, 21)
    assert counts[0] == 0 and counts[-1] == 100 and len(counts) == 21


def test_lesion_plan_draws_random_sets_or_every_set_when_there_are_few():
    plan = ens.lesion_plan(5, draws=3, points=21, seed=0, family="residual")
    by_k = {}
    for lesion in plan:
        if lesion.kind == "lesion":
            by_k.setdefault(len(lesion.dropped), []).append(lesion)
    assert [le.dropped for le in by_k[0]] == [()]
    assert [le.stage for le in by_k[1]] == list(range(5))
    assert len(by_k[2]) == 3 and all(le.draw is not None for le in by_k[2])  # C(5,2)=10 > 3
    # C(5,4) = 5 > 3 draws: random; C(5,5) = 1 <= 3: every set, once
    assert len(by_k[4]) == 3
    assert by_k[5][0].dropped == (0, 1, 2, 3, 4)
    staged = [le for le in plan if le.kind == "staged"]
    assert [le.kept for le in staged] == list(range(6))
    assert staged[2].dropped == (2, 3, 4)
    # seeded: the same plan again, another seed draws other sets
    assert plan == ens.lesion_plan(5, draws=3, points=21, seed=0, family="residual")
    other = ens.lesion_plan(5, draws=3, points=21, seed=1, family="residual")
    assert [le.dropped for le in other if len(le.dropped) == 2] != [le.dropped for le in by_k[2]]


# ---------------------------------------------------------------------- the verdict
def _lesions(per_family: dict[str, list[tuple[float, list[float]]]]) -> pd.DataFrame:
    """family -> per seed (whole-model error, [error with stage m deleted, ...])."""
    rows = []
    for family, seeds in per_family.items():
        for seed, (whole, singles) in enumerate(seeds):
            ids = {"model": f"{family}-net", "family": family, "seed": seed}
            rows.append({**ids, "dropped": 0, "stage": None, "draw": None, "test_error": whole})
            rows += [
                {**ids, "dropped": 1, "stage": m, "draw": None, "test_error": e}
                for m, e in enumerate(singles)
            ]
    return pd.DataFrame(rows, columns=ens.LESION_COLUMNS)


def test_verdict_reproduced_states_the_numbers_and_the_rule():
    v = ens.ensemble_verdict(
        _lesions(
            {
                "residual": [(0.02, [0.03, 0.05]), (0.02, [0.04, 0.04])],
                "plain": [(0.02, [0.90, 0.88]), (0.03, [0.90, 0.90])],
                "booster": [(0.04, [0.041, 0.04])],
            }
        )
    )
    assert v.reproduced is True
    assert v.headline.startswith(
        "residual nets behave like ensembles: deleting one block raised "
        "the test error of residual-net by 2.0 points on average, of "
        "plain-net by 87.0 points"
    )
    assert "booster (booster-net): 0.1 points" in v.headline
    assert "rule: on every seed, residual <= 0.25 x plain and plain >= 10 points" in v.headline


def test_verdict_fails_when_one_seed_misses_the_rule():
    v = ens.ensemble_verdict(
        _lesions(
            {
                "residual": [(0.02, [0.03, 0.05]), (0.02, [0.40, 0.40])],  # seed 1: 38 points
                "plain": [(0.02, [0.90, 0.88]), (0.03, [0.90, 0.90])],
            }
        )
    )
    assert v.reproduced is False
    assert v.headline.startswith("Veit's contrast not reproduced on seed(s) 1")
    assert v.notes == ("seed 1: residual 38.0 vs plain 87.0 points",)


def test_verdict_fails_when_deleting_a_plain_block_does_not_hurt():
    v = ens.ensemble_verdict(
        _lesions({"residual": [(0.02, [0.02, 0.02])], "plain": [(0.02, [0.08, 0.10])]})
    )  # 7 < 10 points
    assert v.reproduced is False


def test_no_verdict_without_both_nets():
    v = ens.ensemble_verdict(_lesions({"booster": [(0.04, [0.04])]}))
    assert v.reproduced is None and "booster" in v.headline
    assert ens.ensemble_verdict(pd.DataFrame(columns=ens.LESION_COLUMNS)).reproduced is None


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "changes, match",
    [
        (
            {"families": ("booster", "forest")},
            r"families: unknown \['forest'\]; choose from booster",
        ),
        ({"families": ()}, "families: unknown none given"),
        ({"depth": 21}, r"depth must be 6n\+2"),
        ({"draws": 0}, "draws must be an integer >= 1"),
        ({"seeds": 0}, "seeds must be an integer >= 1"),
        ({"train_size": 1}, "train_size must be an integer >= 2"),
        ({"epochs": 2}, r"the nets' training recipe: TrainConfig.warmup_epochs \(2.0\) must be"),
        ({"stage_lr": 0.0}, "the stagewise net's training recipe: TrainConfig.lr"),
    ],
)
def test_config_rejects_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        ens.EnsembleConfig(**changes)


def test_config_round_trips_through_json_and_presets_are_valid():
    for cfg in ens.PRESETS.values():
        assert ens.EnsembleConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ens.PRESETS["digits"] == ens.EnsembleConfig()
    assert (ens.PRESETS["fashion-mnist"].depth, ens.PRESETS["paper"].depth) == (56, 110)
    assert ens.PRESETS["paper"].dataset == "cifar10"
    with pytest.raises(ValueError, match="unknown keys"):
        ens.EnsembleConfig.from_dict({"dept": 20})


def test_help_shows_the_presets_and_the_rule_from_the_configs():
    result = invoke("--help")
    text = " ".join(result.output.split())
    squeezed = "".join(result.output.split())  # help wraps lines, also at hyphens
    for name in ens.PRESETS:
        assert "".join(ens.describe_preset(name).split()) in squeezed
    assert "".join(ens.verdict_rule().split()) in squeezed
    d = ens.PRESETS["digits"]
    assert f"ResNet-{d.depth} and its plain twin ({d.epochs} epochs" in text
    assert f"{d.n_estimators} iterations of depth-{d.max_depth} trees" in text


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["--families", "booster,forest"],
            "unknown family 'forest'; choose from booster, residual",
        ),
        (["--depth", "21"], r"depth must be 6n\+2"),
        (["--draws", "0"], "0 is not in the range x>=1"),
        (
            ["--train-size", "12"],
            "the booster cannot take this training split: 12 images of digits without class",
        ),
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    ],
)
def test_bad_input_gets_a_clear_error_before_anything_is_written(args, match, tmp_path):
    result = invoke(*args, "--out", tmp_path / "reports", "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert re.search(match, " ".join(result.output.split())), result.output
    assert not (tmp_path / "reports").exists()


def test_the_booster_refuses_more_pixels_than_it_can_hold(tmp_path, monkeypatch):
    monkeypatch.setattr(fam, "BOOSTER_MAX_CELLS", 1000)
    result = invoke("--out", tmp_path / "reports", "--device", "cpu")
    assert result.exit_code == 2
    assert "the booster cannot take 1347 images of (1, 8, 8) pixels" in result.output
    assert "--train-size" in result.output and not (tmp_path / "reports").exists()


def test_resume_takes_no_run_options_and_needs_a_run_folder(tmp_path):
    result = invoke("--resume", tmp_path, "--depth", "20")
    assert result.exit_code == 2 and "drop --depth" in result.output
    result = invoke("--resume", tmp_path)
    assert result.exit_code == 2 and "no meta.json" in result.output
    assert "Invalid value for --resume" in result.output


# ---------------------------------------------------------------------- a whole run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    result = invoke(*TINY, "--out", out)
    assert result.exit_code == 0, result.output
    (run,) = [p.parent for p in out.glob("*/meta.json")]
    return run, result.output


def test_cli_writes_a_complete_run_folder(tiny_run):
    run, output = tiny_run
    meta = json.loads((run / "meta.json").read_text())
    assert meta["bench"] == "ensemble" and meta["status"] == "complete"
    assert meta["config"]["depth"] == 8 and meta["config"]["families"] == list(ens.DEFAULT_FAMILIES)
    assert meta["headline"] in output and "rule: on every seed" in meta["headline"]
    # progress: a line per epoch of the nets and per block of the stagewise net
    assert "resnet-8 seed 0 epoch 2/2: train error" in output
    assert "stagewise-resnet-8 seed 0 block 3/3: test error" in output
    lesions = pd.read_csv(run / "lesions.csv")
    assert list(lesions.columns) == [
        "model",
        "family",
        "seed",
        "dropped",
        "stage",
        "draw",
        "test_error",
    ]
    models = pd.read_csv(run / "models.csv").set_index("family")
    assert set(models.index) == set(ens.DEFAULT_FAMILIES)
    for family, g in lesions.groupby("family"):
        n = models.loc[family, "n_stages"]
        assert n == (4 if family == "booster" else 3)
        assert (g["dropped"] == 0).sum() == 1 and g.loc[g["dropped"] == 0, "stage"].isna().all()
        single = g[g["dropped"] == 1]
        assert sorted(single["stage"]) == list(range(n)) and single["draw"].isna().all()
        multi = g[g["dropped"] >= 2]
        assert multi["stage"].isna().all() and multi["draw"].notna().all()
        assert set(multi["dropped"]) == set(range(2, n + 1))
        assert g["test_error"].between(0, 1).all()
        whole = g.loc[g["dropped"] == 0, "test_error"].iloc[0]
        assert whole == pytest.approx(models.loc[family, "test_error"])
    staged = pd.read_csv(run / "staged.csv")
    assert set(staged["curve"]) == {"truncated", "training"}
    assert set(staged.loc[staged["curve"] == "training", "family"]) == {"stagewise"}
    contributions = pd.read_csv(run / "contributions.csv")
    plain = contributions[contributions["family"] == "plain"]
    assert np.isinf(plain["ratio"]).all()
    assert contributions.loc[contributions["family"] == "residual", "changes_shape"].tolist() == [
        False,
        True,
        True,
    ]
    page = (run / "index.html").read_text()
    for key in ("single_lesions", "lesion_curve", "contributions", "staged"):
        assert (run / "figures" / f"{key}.png").is_file()
        assert (run / "figures" / f"{key}.csv").is_file()
    assert "Veit" in page and "rule" in page


def test_the_staged_curve_ends_at_the_whole_model(tiny_run):
    run, _ = tiny_run
    staged = pd.read_csv(run / "staged.csv")
    models = pd.read_csv(run / "models.csv").set_index("family")
    lesions = pd.read_csv(run / "lesions.csv")
    for family, g in staged[staged["curve"] == "truncated"].groupby("family"):
        n = models.loc[family, "n_stages"]
        assert g.loc[g["kept"] == n, "test_error"].iloc[0] == pytest.approx(
            models.loc[family, "test_error"]
        )
        everything = lesions[(lesions["family"] == family) & (lesions["dropped"] == n)]
        assert g.loc[g["kept"] == 0, "test_error"].iloc[0] == pytest.approx(
            everything["test_error"].mean()
        )


def test_report_commands_list_build_and_compare_the_run(tiny_run, tmp_path):
    run, _ = tiny_run
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    (copy / "index.html").unlink()
    shutil.rmtree(copy / "figures")
    result = invoke("report", "build", copy, command=main)
    assert result.exit_code == 0, result.output
    assert (copy / "index.html").is_file() and (copy / "figures" / "lesion_curve.png").is_file()
    for name in ("lesions", "models"):  # the page is rebuilt from the tables, unchanged
        pd.testing.assert_frame_equal(
            pd.read_csv(run / f"{name}.csv"), pd.read_csv(copy / f"{name}.csv")
        )
    listed = invoke("report", "list", "--root", tmp_path, command=main)
    assert listed.exit_code == 0 and "ensemble" in listed.output and run.name in listed.output
    assert "missing" not in listed.output  # the index checks lesions.csv, the main table
    other = tmp_path / (run.name + "-b")
    shutil.copytree(copy, other)
    compared = invoke("report", "compare", copy, other, "--out", tmp_path / "cmp", command=main)
    assert compared.exit_code == 0, compared.output
    assert any((tmp_path / "cmp").rglob("*.html"))


def test_resume_skips_measured_models(tmp_path, monkeypatch):
    cfg = ens.EnsembleConfig(
        families=("booster", "residual"),
        depth=8,
        epochs=1,
        warmup="none",
        seeds=1,
        n_estimators=3,
        max_depth=2,
        draws=2,
        train_size=300,
    )
    calls = []
    real = fam.FAMILIES["residual"]

    def interrupted(request):
        calls.append("residual")
        raise KeyboardInterrupt

    monkeypatch.setitem(fam.FAMILIES, "residual", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ens.run(cfg, out=tmp_path, device="cpu", jobs=1, echo=lambda s: None, html=False)
    (run,) = [p.parent for p in tmp_path.glob("*/meta.json")]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "interrupted" and "--resume" in meta["resume_command"]
    assert list(pd.read_csv(run / "models.csv")["family"]) == ["booster"]

    def counted(request):
        calls.append("residual")
        return real(request)

    def no_booster(request):
        raise AssertionError("the measured booster was trained again")

    monkeypatch.setitem(fam.FAMILIES, "residual", counted)
    monkeypatch.setitem(fam.FAMILIES, "booster", no_booster)
    result = ens.run(resume=run, jobs=1, echo=lambda s: None, html=False)
    assert calls == ["residual", "residual"] and result.verdict.reproduced is None
    assert result.device == "cpu"  # the device the run started on
    assert json.loads((run / "meta.json").read_text())["status"] == "complete"
    assert sorted(pd.read_csv(run / "models.csv")["family"]) == ["booster", "residual"]


# ---------------------------------------------------------------------- a new model plugs in
class Prototypes(Stagewise):
    """A toy Stagewise classifier: stage k adds minus the squared distance to class k's mean
    pixels to the score of class k (scores start at 0), and predicts the best score."""

    def __init__(self, means):
        self.means = means

    @property
    def n_stages_(self):
        return len(self.means)

    def _initial_state(self, X):
        return np.zeros((len(X), len(self.means)))

    def _stage_step(self, m, state, X, *, drop=False):
        correction = np.zeros_like(state)
        correction[:, m] = -((X - self.means[m]) ** 2).mean(1)
        return StageStep(
            base=state, correction=correction, state=state if drop else state + correction
        )

    def _predict_state(self, state):
        return state.argmax(1)


def fit_prototypes(request):
    X = fam.booster_inputs(request.data.train_x) / 255
    y = request.data.train_y.cpu().numpy()
    means = np.stack([X[y == k].mean(0) for k in range(request.data.num_classes)])
    return fam.Fitted(
        model=Prototypes(means),
        inputs=lambda x: fam.booster_inputs(x) / 255,
        name="prototypes",
        stage_label="class",
    )


def test_a_new_stagewise_model_plugs_in_without_bench_changes(tmp_path, monkeypatch):
    monkeypatch.setitem(fam.FAMILIES, "prototypes", fit_prototypes)
    cfg = ens.EnsembleConfig(families=("prototypes",), seeds=2, draws=3)
    result = ens.run(cfg, out=tmp_path, device="cpu", jobs=1, echo=lambda s: None)
    run, verdict = result.run, result.verdict
    lesions = pd.read_csv(run.path / "lesions.csv")
    assert set(lesions["family"]) == {"prototypes"} and set(lesions["seed"]) == {0, 1}
    whole = lesions.loc[lesions["dropped"] == 0, "test_error"]
    single = lesions.loc[lesions["dropped"] == 1, "test_error"]
    assert (whole < 0.2).all() and single.mean() > whole.mean()  # deleting a class's stage hurts
    assert len(lesions[(lesions["dropped"] == 1) & (lesions["seed"] == 0)]) == 10
    assert verdict.reproduced is None and "prototypes" in verdict.headline
    assert (run.path / "index.html").is_file() and result.report == run.path / "index.html"
    # resuming a complete run does nothing and says so
    again = ens.run(resume=run.path, echo=lambda s: None)
    assert again.already_complete and again.verdict.headline == verdict.headline
