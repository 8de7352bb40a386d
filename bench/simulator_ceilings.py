"""Measured ceilings of the simulator's scenarios (simulator/README.md quotes them).

    .venv/bin/python bench/simulator_ceilings.py [--rows 600000] [--seed 1] [--scenario NAME ...]

Per scenario, on a time split (the last 20 % of event_time is the test window):
- CTR and CVR among clicks (the label average);
- mean true CVR of clicked vs unclicked impressions, and the same gap in a GBT
  regression of true_cvr on the regular columns (in-sample, ids as leave-one-out means):
  at most the part of the selection bias the regular features explain;
- AUC on test clicks of sklearn's HistGradientBoostingClassifier trained on train
  clicks with the regular columns alone (student ceiling) and with the non-leak
  privileged columns too (teacher ceiling), beside the oracle's (true_cvr);
- the privileged columns the pipeline's selection drops as too informative (the top
  two by mutual information) and the rank of the noise columns.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import TargetEncoder

from pfdx.config import PipelineConfig
from pfdx.features import selection_policy
from pfdx.simulator import schema as S
from pfdx.simulator import scenarios, simulate

NON_LEAK_PRIVILEGED = (S.PAPER_DISCRETE + S.PAPER_CONTINUOUS + S.NOISE_DISCRETE
                       + S.NOISE_CONTINUOUS)


def time_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    cutoff = frame[S.EVENT_TIME].quantile(0.8)
    return frame[frame[S.EVENT_TIME] < cutoff], frame[frame[S.EVENT_TIME] >= cutoff]


def regular_matrix(train: pd.DataFrame, test: pd.DataFrame,
                   target: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """Regular columns as GBT input: ids target-encoded (cross-fitted on train, too
    many values for native categories), small categoricals as codes, numerics as is."""
    encoder = TargetEncoder(target_type="binary", random_state=0)
    ids_train = encoder.fit_transform(train[list(S.ID_FEATURES)].astype(str), target)
    ids_test = encoder.transform(test[list(S.ID_FEATURES)].astype(str))
    small = [pd.Categorical(train[c]).categories for c in S.SMALL_CATEGORICALS]

    def codes(frame):
        return np.column_stack([pd.Categorical(frame[c], categories=cats).codes
                                for c, cats in zip(S.SMALL_CATEGORICALS, small)])

    def numeric(frame):
        return frame[list(S.REGULAR_NUMERIC)].to_numpy(np.float64)

    x_train = np.hstack([ids_train, codes(train), numeric(train)])
    x_test = np.hstack([ids_test, codes(test), numeric(test)])
    categorical = ([False] * len(S.ID_FEATURES) + [True] * len(S.SMALL_CATEGORICALS)
                   + [False] * len(S.REGULAR_NUMERIC))
    return x_train, x_test, categorical


def gbt_auc(train: pd.DataFrame, test: pd.DataFrame, privileged: tuple[str, ...]) -> float:
    y = train[S.LABEL].to_numpy()
    x_train, x_test, categorical = regular_matrix(train, test, y)
    x_train = np.hstack([x_train, train[list(privileged)].to_numpy(np.float64)])
    x_test = np.hstack([x_test, test[list(privileged)].to_numpy(np.float64)])
    model = HistGradientBoostingClassifier(
        categorical_features=categorical + [False] * len(privileged), random_state=0)
    model.fit(x_train, y)
    return roc_auc_score(test[S.LABEL], model.predict_proba(x_test)[:, 1])


def leave_one_out_means(frame: pd.DataFrame, column: str, target: np.ndarray) -> np.ndarray:
    """Mean `target` over the other rows of the same `column` value (NaN when alone):
    what an id shows about a row without the row's own private intent."""
    keys = frame[column].to_numpy()
    sums = pd.Series(target).groupby(keys).transform("sum").to_numpy()
    counts = pd.Series(target).groupby(keys).transform("count").to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums - target) / (counts - 1)


def bias_gap(frame: pd.DataFrame) -> tuple[float, float, float, float]:
    """(clicked, unclicked mean true CVR, relative gap, the gap a GBT regression of
    true_cvr on the regular columns shows) over all impressions. The regression is
    fitted in-sample, ids as leave-one-out means of true_cvr: an upper bound on
    what the regular features explain."""
    truth = frame[S.TRUE_CVR].to_numpy()
    small = [pd.Categorical(frame[c]).codes for c in S.SMALL_CATEGORICALS]
    x = np.column_stack([leave_one_out_means(frame, c, truth) for c in S.ID_FEATURES]
                        + small + [frame[list(S.REGULAR_NUMERIC)].to_numpy(np.float64)])
    categorical = ([False] * len(S.ID_FEATURES) + [True] * len(small)
                   + [False] * len(S.REGULAR_NUMERIC))
    model = HistGradientBoostingRegressor(categorical_features=categorical, random_state=0)
    predicted = model.fit(x, truth).predict(x)
    clicked = frame[S.CLICK].to_numpy() == 1

    def gap(values):
        return values[clicked].mean() / values[~clicked].mean() - 1.0

    return truth[clicked].mean(), truth[~clicked].mean(), gap(truth), gap(predicted)


def selection_ranks(clicks: pd.DataFrame) -> tuple[list[str], dict[str, int]]:
    """(columns the pipeline's selection drops as too informative, noise ranks)."""
    config = PipelineConfig()
    roles = config.data.columns
    columns = {c: clicks[c].to_numpy(np.float64) for c in roles.privileged}
    stats = selection_policy.reference_stats(columns, clicks[S.LABEL].to_numpy(),
                                             config.selection, roles)
    features = selection_policy.select(stats, config.selection, roles)["features"]
    dropped = sorted((f["rank"], n) for n, f in features.items()
                     if f.get("reason") == "too_informative")
    noise = {n: features[n]["rank"] for n in S.NOISE_DISCRETE + S.NOISE_CONTINUOUS}
    return [n for _, n in dropped], noise


def measure(name: str, rows: int, seed: int) -> None:
    started = time.time()
    frame = simulate.simulate(rows, seed, name)
    train, test = time_split(frame)
    clicks_train, clicks_test = (f[f[S.CLICK] == 1] for f in (train, test))
    clicks = frame[frame[S.CLICK] == 1]
    clicked_cvr, unclicked_cvr, gap, explained = bias_gap(frame)
    dropped, noise = selection_ranks(clicks_train)
    print(f"## {name}  ({rows} rows, seed {seed}; {len(clicks_train)} train / "
          f"{len(clicks_test)} test clicks)")
    print(f"CTR {frame[S.CLICK].mean():.4f}   CVR|click (label avg) {clicks[S.LABEL].mean():.4f}")
    print(f"mean true CVR: clicked {clicked_cvr:.4f}, unclicked {unclicked_cvr:.4f}, "
          f"gap {gap:+.1%}; a regular-feature GBT regression shows {explained:+.1%}, "
          f"leaving {(1 + gap) / (1 + explained) - 1:+.1%} unexplained")
    print(f"AUC on test clicks: GBT regular {gbt_auc(clicks_train, clicks_test, ()):.4f}   "
          f"GBT regular + non-leak privileged "
          f"{gbt_auc(clicks_train, clicks_test, NON_LEAK_PRIVILEGED):.4f}   "
          f"oracle true_cvr {roc_auc_score(clicks_test[S.LABEL], clicks_test[S.TRUE_CVR]):.4f}")
    print(f"selection drops (top 2 by MI): {', '.join(dropped)}; noise ranks {noise}")
    print(f"({time.time() - started:.0f} s)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=600_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenario", action="append", choices=list(scenarios.SCENARIOS),
                        help="repeatable; default: every scenario")
    args = parser.parse_args()
    for name in args.scenario or scenarios.SCENARIOS:
        measure(name, args.rows, args.seed)


if __name__ == "__main__":
    main()
