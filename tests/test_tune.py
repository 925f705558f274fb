"""`genaccel tune`: the search space, the front, a short tune on a tiny pipeline, resuming and saving presets."""

import json
import subprocess
import sys

import optuna
import pytest

from genaccel.errors import InputError
from genaccel.generation.prepare import prepare
from genaccel.generation.request import GenerationRequest, split_configuration
from genaccel.generation.spec import check_spec
from genaccel.models.profiles import load_profile, pipeline_model_key, save_profile
from genaccel.pipelines.families import family_of
from genaccel.tools.tune import SPACE, TunePlan, pareto_front, run_tune, save_preset, search_space, suggest_spec

PROMPTS = ["a red circle moving left on a black background", "a blue square moving up on a gray background"]
HOLDOUT = ["a yellow triangle standing still on a black background"]


class Ticks:
    """A clock that moves one second per reading: `--minutes` in the tests counts readings, not time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_search_space_follows_the_family_and_the_profile(tiny):
    wan = family_of(tiny("wan"))
    bare = search_space(wan, {}, 30)
    assert [o.accel for o in bare["pass"]] == ["teacache", "fbcache"]  # magcache and schedule need a profile
    profile = {
        "magcache": {"ratios": [1.0] * 30},
        "schedule": {
            "default": {"steps30": {"computed5": [0, 7, 14, 21, 29], "computed9": list(range(0, 30, 4)) + [29]}},
            "long": {"steps30": {"computed7": [0, 4, 9, 14, 19, 24, 29]}},
        },
    }
    full = search_space(wan, profile, 30)
    schedule = next(o for o in full["pass"] if o.accel == "schedule")
    assert (schedule.params[0].low, schedule.params[0].high) == (5, 9)
    assert "schedule" not in [o.accel for o in search_space(wan, profile, 50)["pass"]]  # no 50-step schedules
    long = next(o for o in search_space(wan, profile, 30, setting="long")["pass"] if o.accel == "schedule")
    assert (long.params[0].low, long.params[0].high) == (7, 7)  # that setting's own schedules
    assert set(full) == {"pass", "cfg", "attention", "compile", "quant"}  # quant: torchao is a test dependency
    with pytest.raises(InputError, match="unknown group"):
        search_space(wan, profile, 30, ("pass", "bogus"))


def test_compile_is_warmed_once_per_compiled_form(tiny, monkeypatch):
    """A stack with compile gets one untimed run before its first timed one, per compiled form (the
    configurations of compile and quant and the accelerators around them, not their parameters), so no
    trial's speedup pays for compiling."""
    from genaccel.tools import tune

    runs = []
    monkeypatch.setattr(tune, "_run", lambda pipe, facts, plan, prompt, seed, spec, callback=None: runs.append(spec))
    monkeypatch.setattr(tune, "_WARMED", set())
    plan = TunePlan(min_psnr=30, prompts=["a"], holdout=["b"], seeds=[0])
    pipe = object()
    specs = ("teacache(threshold=0.1)", "pab+compile", "pab(spatial=3)+compile", "teacache(threshold=0.2)+compile")
    for spec in (*specs, "teacache(threshold=0.3)+compile", "quant+compile", "compile", "compile(scope=blocks)"):
        tune._warm_compilation(pipe, None, plan, spec)
    expected = ["pab+compile", "teacache(threshold=0.2)+compile", "quant+compile", "compile", "compile(scope=blocks)"]
    assert runs == expected


def test_every_suggested_stack_is_a_valid_spec():
    space = {group: options for group, options in SPACE.items() if group != "pass"}
    space["pass"] = SPACE["pass"][:1] + SPACE["pass"][2:]  # schedule's range comes from a profile
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    seen = set()
    for _ in range(60):
        trial = study.ask()
        spec = suggest_spec(trial, space)
        accel, overrides = split_configuration(spec)  # "SPEC; decoder=light" where the decoder group chose it
        check_spec(accel)
        assert overrides in ({}, {"decoder": "light"})
        study.tell(trial, 0.0)
        seen.add(spec.split("(")[0])
    assert len(seen) > 3  # a mix of stacks, not one accelerator


def test_front_keeps_the_budget_and_drops_dominated_trials():
    plan = TunePlan(min_psnr=30, prompts=["a"], holdout=["b"], max_adherence_drop=2)

    def row(spec, speedup, psnr, drop=0.0, pruned=False):
        return {"spec": spec, "speedup": speedup, "psnr": psnr, "adherence_drop": drop, "pruned": pruned}

    rows = [
        row("a", 2.0, 35),
        row("b", 2.5, 31),
        row("c", 1.9, 34),  # c: beaten by a on both
        row("d", 3.0, 29),
        row("e", 2.8, 33, drop=10.0),
        row("f", 4.0, 40, pruned=True),
        row("none", 1.0, 100),
    ]
    assert [r["spec"] for r in pareto_front(rows, plan)] == ["b", "a"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(min_psnr=float("nan")), "--min-psnr nan"),
        (dict(min_psnr=0), "--min-psnr 0"),
        (dict(max_adherence_drop=-1), "--max-adherence-drop"),
        (dict(minutes=-1), "--minutes"),
        (dict(holdout=[]), "held-out"),
        (dict(holdout=PROMPTS[:1]), "must differ"),
    ],
)
def test_bad_plans_are_refused(bad, message):
    with pytest.raises(InputError, match=message):
        TunePlan(**{"min_psnr": 30, "prompts": PROMPTS, "holdout": HOLDOUT, **bad})


@pytest.fixture
def calibrated_wan(tiny, tmp_path, monkeypatch):
    """The tiny Wan pipeline with a calibrated profile (MagCache ratios) in a private profile folder."""
    from genaccel.tools.calibrate import calibrate

    monkeypatch.setenv("GENACCEL_PROFILE_DIR", str(tmp_path / "profiles"))
    pipe = tiny("wan")
    save_profile(calibrate(pipe, PROMPTS[:1]), tmp_path / "profiles" / f"{pipeline_model_key(pipe)}.toml")
    return pipe


def test_short_tune_resumes_and_saves_a_preset(calibrated_wan, tmp_path):
    pipe = calibrated_wan
    plan = TunePlan(min_psnr=12, prompts=PROMPTS, holdout=HOLDOUT, max_trials=5, minutes=1000, seed=3)
    out = tmp_path / "tune"
    first = run_tune(pipe, plan, out, progress=False, clock=Ticks())
    lines = (out / "trials.jsonl").read_text().splitlines()
    assert len(lines) == len(first.trials) == 5
    for row in first.trials:
        check_spec(row["spec"])
        assert row["prompts_run"] in (1, 2) and (row["prompts_run"] == 2 or row["pruned"])
    assert first.front and all(r["psnr"] >= 12 for r in first.front)
    assert first.holdout[0]["accel"] == "none" and {r["accel"] for r in first.holdout[1:]} <= {
        r["spec"] for r in first.front
    }
    assert (out / "pareto-psnr12.png").stat().st_size > 0
    # a second run on the same folder adds trials to the log and keeps the first ones
    plan.max_trials = 2
    second = run_tune(pipe, plan, out, progress=False, clock=Ticks())
    assert len(second.trials) == 7 and (out / "trials.jsonl").read_text().splitlines()[:5] == lines
    # another budget on the same log, no new trial: re-selects from what was measured
    stricter = TunePlan(min_psnr=200 - 101, prompts=PROMPTS, holdout=HOLDOUT, minutes=0, seed=3)
    assert run_tune(pipe, stricter, out, progress=False, clock=Ticks()).front == [
        r for r in pareto_front(second.trials, stricter)
    ]
    # a different tune in the same folder is refused
    with pytest.raises(InputError, match="differs in: prompts"):
        run_tune(pipe, TunePlan(min_psnr=12, prompts=PROMPTS[:1], holdout=HOLDOUT, minutes=0), out, progress=False)
    # the winner saved as a preset: prepare resolves the name for this model and setting
    winner = second.winner
    assert winner is not None and winner["psnr"] >= 12
    key = pipeline_model_key(pipe)
    path = save_preset(
        tmp_path / "profiles" / f"{key}.toml", "mine", "default", winner["accel"], {"min_psnr": 12.0}, load_profile(key)
    )
    assert load_profile(key)["magcache"]  # the calibration is kept
    check_spec("mine")  # known without a model: some profile has it
    prepared = prepare(pipe, GenerationRequest(prompt=PROMPTS[0], accel="mine"))
    assert prepared.spec.text == prepare(pipe, GenerationRequest(prompt=PROMPTS[0], accel=winner["accel"])).spec.text
    assert path.is_file()


def test_same_seed_proposes_the_same_trials(calibrated_wan, tmp_path):
    """The first trials come from the seeded sampler alone: two tunes with one seed propose the same."""
    pipe = calibrated_wan
    specs = []
    for folder in ("a", "b"):
        plan = TunePlan(min_psnr=12, prompts=PROMPTS[:1], holdout=HOLDOUT, max_trials=3, minutes=1000, seed=7)
        result = run_tune(pipe, plan, tmp_path / folder, progress=False, clock=Ticks())
        specs.append([(r["spec"], r["psnr"]) for r in result.trials])
    assert specs[0] == specs[1]


@pytest.mark.slow  # fresh processes, about 6 s each here to start and import torch
@pytest.mark.parametrize(
    "args, message",
    [
        (["--min-psnr", "nan"], "--min-psnr nan"),
        (["--min-psnr", "30", "--save-as", "teacache"], "--save-as teacache"),
        (["--min-psnr", "30", "--save-as", "my preset"], "one word"),
        (["--min-psnr", "30", "--search", "pass,bogus"], "--search"),
    ],
)
def test_cli_refuses_bad_options_before_loading(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "genaccel", "tune", "--model", "tiny-wan", "--out", str(tmp_path / "o"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # fresh processes, about 6 s each here to start and import torch
def test_cli_tune_saves_a_preset_generate_accepts(tmp_path):
    env = {"GENACCEL_PROFILE_DIR": str(tmp_path / "profiles")}
    import os

    env = {**os.environ, **env}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genaccel",
            "tune",
            "--model",
            "tiny-wan",
            "--min-psnr",
            "10",
            "--trials",
            "3",
            "--search",
            "cfg,attention",
            "--prompt",
            PROMPTS[0],
            "--prompt",
            PROMPTS[1],
            "--prompt",
            HOLDOUT[0],
            "--save-as",
            "Quick",
            "--out",
            str(tmp_path / "t"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["trials"] == 3
    if proc.returncode == 0:  # a winner was saved: generate takes the name
        assert result["saved"]
        gen = subprocess.run(
            [
                sys.executable,
                "-m",
                "genaccel",
                "generate",
                PROMPTS[0],
                "--model",
                "tiny-wan",
                "--accel",
                "quick",
                "--out",
                str(tmp_path / "v.mp4"),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert gen.returncode == 0, gen.stderr
        assert json.loads(gen.stdout.strip().splitlines()[-1])["accel"] == result["winner"]["accel"]


def test_tuned_presets_follow_the_setting_and_win_over_the_files(tmp_path, monkeypatch):
    from genaccel.generation.spec import resolve_spec
    from genaccel.models.facts import ModelFacts
    from genaccel.models.presets import preset_names, preset_spec
    from genaccel.models.profiles import read_profiles
    from genaccel.pipelines.families import FAMILIES
    from genaccel.tools.catalog import catalog, format_catalog

    monkeypatch.setenv("GENACCEL_PROFILE_DIR", str(tmp_path))
    wan = FAMILIES["wan"]
    family_balanced = preset_spec("wan", "balanced")
    save_preset(tmp_path / "my-wan.toml", "balanced", "long", "cfgcache(interval=3)", {"min_psnr": 30.0}, {})
    save_preset(
        tmp_path / "my-wan.toml",
        "snappy",
        "default",
        "cfgcache(interval=5)",
        {"min_psnr": 20.0},
        load_profile("my-wan"),
    )
    assert preset_spec("wan", "balanced", "my-wan", "long") == "cfgcache(interval=3)"
    assert preset_spec("wan", "balanced", "my-wan", "default") == family_balanced  # not tuned there
    assert preset_spec("wan", "snappy", "my-wan", "long") == "cfgcache(interval=5)"  # the default setting's
    assert preset_names("my-wan", "default") == ["quality", "balanced", "fast", "snappy"]
    mine = ModelFacts(wan, "my-wan", {}, profiles=read_profiles("my-wan"))
    assert resolve_spec("snappy+pab", wan, mine.presets("default")).text == "cfgcache(interval=5)+pab"
    assert resolve_spec("balanced", wan, mine.presets("long")).text == "cfgcache(interval=3)"
    other = ModelFacts(wan, "other-model", {}, profiles=read_profiles("other-model"))
    with pytest.raises(Exception, match="unknown accelerator 'snappy'"):
        resolve_spec("snappy", wan, other.presets("default"))  # another model's preset is not this one's
    check_spec("snappy")
    listed = catalog()["tuned_presets"]["my-wan"]
    assert listed == {"long": {"balanced": "cfgcache(interval=3)"}, "default": {"snappy": "cfgcache(interval=5)"}}
    assert "my-wan (long setting)" in format_catalog(catalog())


def test_a_stack_proposed_again_is_not_run_again(calibrated_wan, tmp_path, monkeypatch):
    import genaccel.tools.tune as tune

    runs = []
    evaluate = tune._evaluate

    def counting(pipe, plan, spec, *args, **kwargs):
        runs.append(spec)
        return evaluate(pipe, plan, spec, *args, **kwargs)

    monkeypatch.setattr(tune, "_evaluate", counting)
    plan = TunePlan(
        min_psnr=12, prompts=PROMPTS[:1], holdout=HOLDOUT, max_trials=200, minutes=1000, seed=1, groups=("cfg",)
    )  # six stacks: none, cfgcache(interval=2..6)
    result = run_tune(calibrated_wan, plan, tmp_path / "t", progress=False, clock=Ticks())
    assert len(runs) == len(set(runs)) <= 6
    reused = [r for r in result.trials if "reused" in r]
    assert len(result.trials) == len(runs) + len(reused) < 200  # stopped by the repeats, not the limit
    first = {r["spec"]: r for r in result.trials if "reused" not in r}
    assert all(r["psnr"] == first[r["spec"]]["psnr"] for r in reused)


def test_the_search_starts_from_the_models_presets(calibrated_wan, tmp_path):
    from genaccel.models.presets import preset_spec
    from genaccel.tools.tune import starting_points

    space = {g: SPACE[g] for g in ("pass", "cfg", "attention")}
    points = starting_points(
        space,
        [
            "magcache(threshold=0.4,max_skip=6)+cfgcache(interval=2)+pab(spatial=2,cross=4)",
            "sta(density=0.3)",
            "teacache(threshold=0.08)+tome",
        ],
    )
    assert points == [
        {
            "pass": "magcache",
            "cfg": "cfgcache",
            "attention": "pab",
            "magcache.threshold": 0.4,
            "magcache.max_skip": 6,
            "magcache.retention": 0.2,
            "cfgcache.interval": 2,
            "pab.spatial": 2,
            "pab.cross": 4,
        }
    ]  # the others are outside this space
    plan = TunePlan(min_psnr=12, prompts=PROMPTS[:1], holdout=HOLDOUT, max_trials=3, minutes=1000)
    result = run_tune(calibrated_wan, plan, tmp_path / "t", progress=False, clock=Ticks())
    presets = [preset_spec("wan", name) for name in ("quality", "balanced", "fast")]  # the Wan family's files
    assert [r["spec"] for r in result.trials] == presets


def test_a_looser_budget_finishes_what_a_stricter_one_stopped_early(calibrated_wan, tmp_path, monkeypatch):
    """`fast` reuses `balanced`'s trial log: a stack stopped after one prompt for missing 30 dB by far may
    keep 25 dB, so the looser tune measures it in full before searching on."""
    import genaccel.tools.tune as tune

    out = tmp_path / "t"
    strict = TunePlan(
        min_psnr=99, prompts=PROMPTS, holdout=HOLDOUT, max_trials=4, minutes=1000, seed=2, groups=("cfg",)
    )
    run_tune(calibrated_wan, strict, out, progress=False, clock=Ticks())
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    stopped = [r for r in rows if r["pruned"] and "reused" not in r]
    assert stopped and all(r["prompts_run"] == 1 for r in stopped)
    for i, row in enumerate(stopped):  # as if each had been faster than the baseline on the first prompt
        row["speedups"][0] = 1.5 + 0.1 * i
    (out / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    runs = []
    evaluate = tune._evaluate
    monkeypatch.setattr(
        tune, "_evaluate", lambda pipe, plan, spec, *a, **k: runs.append(spec) or evaluate(pipe, plan, spec, *a, **k)
    )
    loose = TunePlan(
        min_psnr=1, prompts=PROMPTS, holdout=HOLDOUT, max_trials=len(stopped), minutes=1000, seed=2, groups=("cfg",)
    )
    result = run_tune(calibrated_wan, loose, out, progress=False, clock=Ticks())
    fastest_first = [r["spec"] for r in sorted(stopped, key=lambda r: -r["speedups"][0])]
    assert runs == list(dict.fromkeys(fastest_first))  # each measured again once, fastest first
    again = result.trials[len(rows) :]
    assert [r["spec"] for r in again] == runs
    # measured on both prompts now (unless really slower than the baseline this time)
    assert all(r["prompts_run"] == 2 or r["speedups"][0] < 1.0 for r in again)
