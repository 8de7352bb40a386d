"""The selection policy (ranking, drop/keep, OR-groups, support) on hand-made data."""
import json

import numpy as np
import pytest

from pfdx.config import ColumnRoles, ConfigError, SelectionConfig
from pfdx.features import selection_policy as policy
from pfdx.features import selection_report
from pfdx.features.selection import mutual_information

N = 4000


def _roles(continuous=(), discrete=()):
    return ColumnRoles(privileged_continuous=tuple(continuous), privileged_discrete=tuple(discrete))


def _noisy_copy(y, flip, rng):
    return np.where(rng.random(len(y)) < flip, 1 - y, y).astype(float)


def _run(columns, y, selection, roles):
    return policy.select(policy.reference_stats(columns, y, selection, roles), selection, roles)


@pytest.fixture()
def labels():
    return (np.random.default_rng(0).random(N) < 0.3).astype(int)


def test_drop_top_k_then_keep_top_n(labels):
    rng = np.random.default_rng(1)
    # d0 is the most informative, d5 the least.
    columns = {f"d{i}": _noisy_copy(labels, 0.05 + 0.08 * i, rng) for i in range(6)}
    selection = SelectionConfig(drop_top_k=2, keep_top_n=3, or_groups={})
    result = _run(columns, labels, selection, _roles(discrete=columns))
    f = result["features"]
    assert [f[f"d{i}"]["rank"] for i in range(6)] == [1, 2, 3, 4, 5, 6]
    assert [f[f"d{i}"]["reason"] for i in range(6)] == [
        "too_informative", "too_informative", "selected", "selected", "selected", "below_top_n"]
    assert result["selected"] == ["d2", "d3", "d4"]
    for i in range(6):
        assert f[f"d{i}"]["mutual_information"] == pytest.approx(
            mutual_information(columns[f"d{i}"], labels), rel=1e-11)


def test_or_group_is_the_or_of_its_kept_members(labels):
    rng = np.random.default_rng(2)
    sparse = lambda p: np.where(labels == 1, rng.random(N) < p, rng.random(N) < p / 4).astype(float)
    columns = {"leak": _noisy_copy(labels, 0.01, rng), "tag": sparse(0.1), "like": sparse(0.12),
               "share": _noisy_copy(labels, 0.02, rng), "plain": _noisy_copy(labels, 0.3, rng)}
    columns["tag"][:50] = np.nan  # missing on some clicked rows
    selection = SelectionConfig(drop_top_k=2, keep_top_n=3, min_support=10,
                                or_groups={"interact": ("tag", "like", "share")})
    result = _run(columns, labels, selection, _roles(discrete=columns))
    f = result["features"]
    # `share` is too informative: it stays out of the group rather than leaking into it.
    assert f["share"]["reason"] == "too_informative" and f["share"]["group"] is None
    assert result["or_groups"] == {"interact": ["tag", "like"]}
    assert f["tag"]["reason"] == f["like"]["reason"] == "or_group"
    assert f["tag"]["missing"] == 50
    both = ~np.isnan(columns["tag"])
    combined = ((columns["tag"][both] == 1) | (columns["like"][both] == 1)).astype(float)
    assert f["interact"]["missing"] == 50
    assert f["interact"]["present"] == N - 50
    assert f["interact"]["mutual_information"] == pytest.approx(
        mutual_information(combined, labels[both]), rel=1e-11)
    # The group takes the place of its best-ranked kept member.
    places = {"plain": f["plain"]["rank"], "interact": min(f["tag"]["rank"], f["like"]["rank"])}
    assert result["selected"] == sorted(places, key=places.get)


def test_min_support_judges_a_group_on_its_combined_flag(labels):
    rng = np.random.default_rng(3)
    rare = lambda: (rng.random(N) < 0.01).astype(float)  # ~40 rows each
    columns = {"a": rare(), "b": rare(), "c": rare(), "alone": rare()}
    selection = SelectionConfig(drop_top_k=0, keep_top_n=4, min_support=100,
                                or_groups={"abc": ("a", "b", "c")})
    result = _run(columns, labels, selection, _roles(discrete=columns))
    f = result["features"]
    assert all(f[m]["support"] < 100 for m in "abc")
    assert f["abc"]["support"] >= 100 and f["abc"]["chosen"]
    assert f["alone"]["reason"] == "low_support" and not f["alone"]["chosen"]
    assert result["selected"] == ["abc"]


def test_unusable_candidates_are_not_ranked(labels):
    rng = np.random.default_rng(4)
    columns = {"constant": np.full(N, 2.0), "absent": np.full(N, np.nan),
               "fine": rng.normal(size=N) + labels}
    result = _run(columns, labels, SelectionConfig(or_groups={}), _roles(continuous=columns))
    f = result["features"]
    assert (f["constant"]["reason"], f["constant"]["rank"]) == ("no_split", None)
    assert (f["absent"]["reason"], f["absent"]["missing"]) == ("no_values", N)
    assert f["fine"]["rank"] == 1 and set(result["thresholds"]) == {"fine"}


def test_min_part_fraction_guards_each_part(labels):
    rng = np.random.default_rng(5)
    z = rng.normal(size=N) + labels
    selection = SelectionConfig(min_part_fraction=0.25, drop_top_k=0, or_groups={})
    f = _run({"z": z}, labels, selection, _roles(continuous=["z"]))["features"]["z"]
    assert min(np.sum(z < f["threshold"]), np.sum(z >= f["threshold"])) >= 0.25 * N
    assert f["counts"] == [[int(np.sum((z < f["threshold"]) & (labels == v))) for v in (0, 1)],
                           [int(np.sum((z >= f["threshold"]) & (labels == v))) for v in (0, 1)]]


@pytest.mark.parametrize("selection, roles, key", [
    (SelectionConfig(or_groups={"g": ("dur", "x")}), _roles(["dur"], ["x"]),
     "selection.or_groups.g: member 'dur' is not a privileged_discrete"),
    (SelectionConfig(or_groups={"g": ("x",), "h": ("x",)}), _roles([], ["x"]),
     "selection.or_groups.h: member 'x' is already in group 'g'"),
    (SelectionConfig(or_groups={"x": ("y",)}), _roles([], ["x", "y"]),
     "selection.or_groups.x: the group name is already a privileged column"),
    (SelectionConfig(min_part_fraction=0.7, or_groups={}), _roles([], ["x"]),
     "selection.min_part_fraction"),
    (SelectionConfig(keep_top_n=0, or_groups={}), _roles([], ["x"]), "selection.keep_top_n"),
])
def test_bad_policy_names_the_key(selection, roles, key):
    with pytest.raises(ConfigError, match=key.replace("(", r"\(").replace(")", r"\)")):
        policy.check_config(selection, roles)


def test_discrete_flags_must_be_0_or_1(labels):
    with pytest.raises(ValueError, match="privileged_discrete feature 'flag' holds 2"):
        _run({"flag": np.where(labels == 1, 2.0, 0.0)}, labels,
             SelectionConfig(or_groups={}), _roles(discrete=["flag"]))


def test_result_json_is_stable(labels, tmp_path):
    rng = np.random.default_rng(6)
    columns = {"z": rng.normal(size=N) * 1e3 + labels, "d": _noisy_copy(labels, 0.2, rng)}
    roles = _roles(continuous=["z"], discrete=["d"])
    result = _run(columns, labels, SelectionConfig(drop_top_k=0, or_groups={}), roles)
    text = selection_report.dumps(result)
    assert selection_report.dumps(json.loads(text)) == text
    selection_report.write_report(result, str(tmp_path / "s.json"), str(tmp_path / "s.png"))
    assert selection_report.load_selection(str(tmp_path / "s.json")) == json.loads(text)
