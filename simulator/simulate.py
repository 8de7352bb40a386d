"""A simulated ad impression log with privileged post-click signals.

Generative story (simulator/README.md has the long form):
- users, ads and contexts have latent traits; a user's `purchase_affinity` and an
  ad's `appeal` shape both click and conversion;
- each impression has a *purchase intent* = visible part (user, ad, category match,
  placement, hour) + a private part `session_intent` that no regular feature shows;
  a share ρ of the private part also drives the click (sample-selection bias);
- conversion = click ∧ (bias + intent + ε > 0), ε ~ Logistic(0, 1), so
  true_cvr = sigmoid(bias + intent), on every impression, clicked or not;
- post-click signals are noisy read-outs of intent + w·ε (so a teacher that sees them
  knows the private intent and part of this click's outcome), two are near-copies of
  the conversion label (leaks), two are pure noise; on unclicked rows every post-click
  signal is missing (NaN).

The knobs (bias, ρ, w, ...) come from a named scenario (scenarios.py). Everything is
vectorised numpy; the same seed and scenario give the same log.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pfdx.simulator import schema as S
from pfdx.simulator.scenarios import Scenario, get as get_scenario

_START_TIME = 1_704_067_200  # 2024-01-01 00:00:00 UTC
_DAYS = 14


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _zipf_index(rng: np.random.Generator, n_items: int, size: int, a: float = 1.1) -> np.ndarray:
    """Popularity-skewed draws of item indices in [0, n_items)."""
    weights = 1.0 / np.arange(1, n_items + 1) ** a
    weights /= weights.sum()
    perm = rng.permutation(n_items)  # popular items are not the low ids
    return perm[rng.choice(n_items, size=size, p=weights)]


def _probability(p: np.ndarray) -> np.ndarray:
    """Six decimals keep text logs small; never exactly 0 or 1, a probability a log
    loss against the truth can take."""
    return np.clip(np.round(p, 6), 1e-6, 1.0 - 1e-6)


def _logistic_noise(u: np.ndarray) -> np.ndarray:
    """ε = logit(1 - u) ~ Logistic(0, 1) for u ~ U(0, 1): bias + intent + ε > 0 exactly
    when u < sigmoid(bias + intent), a Bernoulli draw of true_cvr."""
    u = np.clip(u, 1e-15, 1.0 - 1e-15)  # finite ε, so w·ε is defined for w = 0
    return np.log1p(-u) - np.log(u)


def simulate(rows: int, seed: int = 0, scenario: str | Scenario = "default",
             days: int = _DAYS) -> pd.DataFrame:
    """`rows` ad impressions (all of them, clicked or not) as a DataFrame, logged over
    `days` days from 2024-01-01 00:00 UTC (the same users and ads every day)."""
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    sc = get_scenario(scenario) if isinstance(scenario, str) else scenario
    rng = np.random.default_rng(seed)
    n = rows
    n_users = max(200, n // 40)
    n_ads = max(100, n // 200)
    n_advertisers = max(20, n_ads // 8)
    n_categories = 20

    # Entities and their latent traits.
    user_affinity = rng.normal(0.0, 1.0, n_users)          # drives purchases
    user_clickiness = rng.normal(0.0, 0.6, n_users)        # drives clicks
    user_favourite_cat = rng.integers(0, n_categories, n_users)
    ad_appeal = rng.normal(0.0, 0.6, n_ads)
    ad_category = rng.integers(0, n_categories, n_ads)
    ad_advertiser = rng.integers(0, n_advertisers, n_ads)
    advertiser_quality = rng.normal(0.0, 0.4, n_advertisers)
    ad_base_bid = rng.lognormal(0.0, 0.5, n_ads)

    # Impressions.
    user = _zipf_index(rng, n_users, n, sc.popularity_skew)
    ad = _zipf_index(rng, n_ads, n, sc.popularity_skew)
    creative_of_ad = rng.integers(0, 4, n)
    event_time = np.sort(rng.integers(_START_TIME, _START_TIME + days * 86_400, n))
    hour = (event_time // 3600) % 24
    weekday = ((event_time // 86_400) + 0) % 7  # 2024-01-01 was a Monday -> 0
    device = rng.choice(3, n, p=[0.62, 0.30, 0.08])
    os_ = np.where(device == 2, 2, rng.choice(2, n, p=[0.55, 0.45]))
    region = _zipf_index(rng, 30, n, a=0.8)
    placement = rng.choice(5, n, p=[0.4, 0.25, 0.15, 0.12, 0.08])
    cat = ad_category[ad]

    # Request-time counters: noisy, partial views of the user's traits.
    past_clicks = rng.poisson(np.exp(sc.history_log_mean + user_clickiness[user]))
    past_conv = rng.binomial(past_clicks, _sigmoid(-2.0 + 0.8 * user_affinity[user]))
    bid = ad_base_bid[ad] * rng.lognormal(0.0, 0.1, n)

    # Purchase intent: a visible part and a private, session-only part. (The click's
    # uniform is drawn first, where v1 drew it, so that v1's logs stay the same.)
    click_u = rng.random(n)
    placement_cvr = np.array([0.2, 0.0, -0.1, -0.3, 0.1])
    visible = sc.visible_scale * (
        0.9 * user_affinity[user] + 0.6 * ad_appeal[ad]
        + 0.5 * advertiser_quality[ad_advertiser[ad]]
        + 0.8 * (user_favourite_cat[user] == cat) + placement_cvr[placement]
        + 0.25 * np.cos(2 * np.pi * (hour - 20) / 24))
    session_intent = rng.normal(0.0, sc.private_sd, n)
    intent = visible + session_intent
    true_cvr = _sigmoid(sc.cvr_bias + intent)

    # Click funnel: CTR of a few percent; ρ of the private intent makes the clicked
    # rows a biased sample of the impressions.
    placement_ctr = np.array([0.3, 0.0, -0.2, -0.5, 0.4])
    ctr_logit = (sc.ctr_bias + user_clickiness[user] + 0.8 * ad_appeal[ad]
                 + placement_ctr[placement] + 0.3 * np.sin(2 * np.pi * hour / 24)
                 + sc.selection_share * session_intent)
    true_ctr = _sigmoid(ctr_logit)
    click = click_u < true_ctr

    # The conversion's own noise ε: the part of the outcome the intent does not fix.
    eps = _logistic_noise(rng.random(n))
    conversion = click & (sc.cvr_bias + intent + eps > 0)

    def bern(logit: np.ndarray) -> np.ndarray:
        return (rng.random(n) < _sigmoid(logit)).astype(np.float64)

    read = intent + sc.outcome_weight * eps  # what the post-click behaviour reflects
    z = read - read.mean()
    priv = {
        "page_jump": bern(-0.4 + 0.9 * z),
        "done_loading": bern(2.2 + 0.4 * z),
        "play_2s": bern(0.6 + 0.7 * z),
        "button_click": bern(-1.2 + 1.0 * z),
        "page_click": bern(-0.8 + 0.6 * z),
        "swipe_click": bern(-0.2 - 0.7 * z),
        "tag": bern(-4.0 + 0.8 * z),
        "like": bern(-3.5 + 0.8 * z),
        "share": bern(-4.2 + 0.8 * z),
        # seconds on the ad page, seconds until moving on, session seconds in the app
        "duration": np.round(np.exp(2.6 + 0.45 * z + rng.normal(0, 0.6, n)), 1),
        "click_leave_time": np.round(np.exp(2.2 + 0.5 * z + rng.normal(0, 0.7, n)), 1),
        "in_platform_time": np.round(np.exp(6.5 + 0.25 * z + rng.normal(0, 0.8, n)), 0),
        # near-label leaks: almost always on for converters, rarely otherwise
        "payment_page_visit": np.where(conversion, rng.random(n) < 0.97,
                                       rng.random(n) < 0.02).astype(np.float64),
        "order_form_submit": np.where(conversion, rng.random(n) < 0.9,
                                      rng.random(n) < 0.01).astype(np.float64),
        # pure noise
        "noise_flag": (rng.random(n) < 0.3).astype(np.float64),
        "noise_scroll_speed": np.round(rng.gamma(2.0, 50.0, n), 2),
    }
    for values in priv.values():
        values[~click] = np.nan  # post-click signals exist only after a click

    frame = {
        S.IMPRESSION_ID: np.arange(n, dtype=np.int64),
        S.EVENT_TIME: event_time.astype(np.int64),
        "user_id": np.char.add("u", user.astype(str)),
        "ad_id": np.char.add("a", ad.astype(str)),
        "advertiser_id": np.char.add("adv", ad_advertiser[ad].astype(str)),
        "creative_id": np.char.add(np.char.add("c", ad.astype(str)),
                                   np.char.add("_", creative_of_ad.astype(str))),
        "device": np.array(["android", "ios", "desktop"])[device],
        "os": np.array(["android", "ios", "other"])[os_],
        "region": np.char.add("r", region.astype(str)),
        "placement": np.array(["feed", "search", "detail", "banner", "story"])[placement],
        "ad_category": np.char.add("cat", cat.astype(str)),
        "hour": hour.astype(np.int64),
        "weekday": weekday.astype(np.int64),
        "user_past_clicks": past_clicks.astype(np.int64),
        "user_past_conversions": past_conv.astype(np.int64),
        "bid": np.round(bid, 4),
        **priv,
        S.CLICK: click.astype(np.int64),
        S.LABEL: conversion.astype(np.int64),
        S.TRUE_CTR: _probability(true_ctr),
        S.TRUE_CVR: _probability(true_cvr),
    }
    return pd.DataFrame(frame, columns=list(S.COLUMNS))


def write(df: pd.DataFrame, out_dir: str, fmt: str = "csv", shards: int = 1) -> list[str]:
    """Write `df` as `shards` files of `fmt` (csv | parquet | tfrecord) into `out_dir`."""
    import os

    os.makedirs(out_dir, exist_ok=True)
    bounds = np.linspace(0, len(df), shards + 1).astype(int)
    paths = []
    for i in range(shards):
        part = df.iloc[bounds[i]:bounds[i + 1]]
        stem = os.path.join(out_dir, f"impressions-{i:05d}-of-{shards:05d}")
        if fmt == "csv":
            path = stem + ".csv"
            part.to_csv(path, index=False, na_rep="")
        elif fmt == "parquet":
            path = stem + ".parquet"
            part.to_parquet(path, index=False)
        elif fmt == "tfrecord":
            path = stem + ".tfrecord"
            _write_tfrecord(part, path)
        else:
            raise ValueError(f"unknown format {fmt!r}; expected csv, parquet or tfrecord")
        paths.append(path)
    return paths


# `write_days`' layout: one Hive-style folder per UTC day, named by its date, which
# is what TFX's date specs read: span = days since 1970-01-01 = event_time // 86400.
DAY_FOLDER = "day={date}"
DAY_PATTERNS = {"csv": "day={YYYY}-{MM}-{DD}/*.csv", "parquet": "day={YYYY}-{MM}-{DD}/*.parquet",
                "tfrecord": "day={YYYY}-{MM}-{DD}/*.tfrecord"}


def write_days(df: pd.DataFrame, out_dir: str, fmt: str = "csv",
               shards: int = 1) -> dict[str, list[str]]:
    """Write `df` as one folder per UTC day of its event time, `day=YYYY-MM-DD/`, each
    with `shards` files of `fmt` (`write`): the rows of day k, and only they, in day
    k's folder. Returns {folder name: paths}; read it with DAY_PATTERNS[fmt] as
    data.file_pattern."""
    import datetime
    import os

    day = df[S.EVENT_TIME].to_numpy() // 86_400
    written = {}
    for number in np.unique(day):
        date = (datetime.date(1970, 1, 1) + datetime.timedelta(days=int(number))).isoformat()
        folder = DAY_FOLDER.format(date=date)
        written[folder] = write(df[day == number], os.path.join(out_dir, folder), fmt, shards)
    return written


def _write_tfrecord(df: pd.DataFrame, path: str) -> None:
    """tf.Examples, one per row; a missing value is an absent feature."""
    import tensorflow as tf

    columns = [(c, df[c].to_numpy()) for c in df.columns]
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(len(df)):
            feats = {}
            for name, col in columns:
                v = col[i]
                if isinstance(v, str):
                    feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                elif np.issubdtype(type(v), np.integer):
                    feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
                elif not np.isnan(v):
                    feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
