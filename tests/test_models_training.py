"""A short joint training on simulated clicks: the teacher, which sees post-click
signals, ranks conversions better than the student, which learns something too."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.config import ModelConfig
from pfdx.models import metrics
from pfdx.models.model import build_model
from pfdx.simulator import schema
from pfdx.simulator.simulate import simulate

ROWS = 400_000  # ~11k clicks
HASH_BINS = 2_000
NUMERIC_BINS = 8
# The paper's post-click signals; the near-label leaks are left out on purpose.
PRIVILEGED = schema.PAPER_DISCRETE + schema.PAPER_CONTINUOUS


def to_model_inputs(clicks, train):
    """Categoricals as strings (the model hashes them), numerics as quantile-bucket
    ids, privileged signals as 0/1 ids (continuous ones split at the train median)."""
    features = {name: clicks[name].astype(str).to_numpy() for name in schema.REGULAR_CATEGORICAL}
    for name in schema.REGULAR_NUMERIC:
        edges = np.quantile(train[name], np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])
        features[name] = np.digitize(clicks[name], edges).astype(np.int64)
    for name in schema.PRIVILEGED_CONTINUOUS:
        if name in PRIVILEGED:
            features[name] = (clicks[name] >= train[name].median()).astype(np.int64).to_numpy()
    for name in schema.PAPER_DISCRETE:
        features[name] = clicks[name].astype(np.int64).to_numpy()
    return features, clicks[schema.LABEL].to_numpy()


@pytest.fixture(scope="module")
def clicks():
    df = simulate(ROWS, seed=5)
    return df[df[schema.CLICK] == 1].reset_index(drop=True)


def test_teacher_beats_student_after_joint_training(clicks):
    split = int(len(clicks) * 0.8)  # rows are in time order: train on the past
    train_rows, eval_rows = clicks.iloc[:split], clicks.iloc[split:]
    x_train, y_train = to_model_inputs(train_rows, train_rows)
    x_eval, y_eval = to_model_inputs(eval_rows, train_rows)
    regular = {n: HASH_BINS for n in schema.REGULAR_CATEGORICAL}
    regular.update({n: NUMERIC_BINS for n in schema.REGULAR_NUMERIC})
    privileged = {n: 2 for n in PRIVILEGED}

    tf.keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(), regular, privileged)  # ha_pfd_v2, paper settings
    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(20_000, seed=0).batch(512))
    model.fit(train, epochs=4, verbose=0)

    evaluation = tf.data.Dataset.from_tensor_slices((x_eval, y_eval)).batch(2048)
    logged = model.evaluate(evaluation, return_dict=True, verbose=0)
    probs = model.predict(evaluation, verbose=0)
    student, teacher = metrics.auc(y_eval, probs["student"]), metrics.auc(y_eval, probs["teacher"])

    assert student > 0.6, student  # chance is 0.5; ~0.66 here
    assert teacher > student + 0.05, (teacher, student)  # ~0.79 vs ~0.66 here
    # The streaming training metrics agree with the numpy definitions.
    assert logged["student_auc"] == pytest.approx(student, abs=5e-3)
    assert logged["teacher_auc"] == pytest.approx(teacher, abs=5e-3)
    ece, mce = metrics.calibration_errors(y_eval, probs["student"])
    assert logged["student_ece"] == pytest.approx(ece, abs=1e-4)
    assert logged["student_mce"] == pytest.approx(mce, abs=1e-3)
    assert logged["label_avg"] == pytest.approx(y_eval.mean(), abs=1e-6)


def pairwise_auc(labels, scores) -> float:
    """P(score of a positive > score of a negative), ties counted half: by definition."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_impression_space_summary_scores_cvr_on_clicks_and_ctcvr_on_impressions():
    from pfdx.models.predictions import Predictions, summarize

    rng = np.random.default_rng(3)
    n = 400
    clicks = (rng.uniform(size=n) < 0.3).astype(np.int64)
    labels = clicks * (rng.uniform(size=n) < 0.4)
    student, ctr = rng.uniform(0.01, 0.99, n), rng.uniform(0.01, 0.99, n)
    # Unclicked rows get absurd CVR predictions: they must not move the CVR metrics.
    student[clicks == 0] = 0.999
    truth = rng.uniform(0.0, 1.0, n)
    out = summarize(Predictions(labels, student, None, truth, clicks, ctr), num_bins=10)
    clicked = clicks == 1
    only_clicks = summarize(Predictions(labels[clicked], student[clicked], None, truth[clicked]),
                            num_bins=10)
    assert {k: out[k] for k in only_clicks} == only_clicks
    assert out["rows"] == clicked.sum() and out["impression_rows"] == n
    assert out["student_auc"] == pytest.approx(pairwise_auc(labels[clicked], student[clicked]))
    assert out["ctr_auc"] == pytest.approx(pairwise_auc(clicks, ctr))
    assert out["ctcvr_auc"] == pytest.approx(pairwise_auc(labels, ctr * student))
    # Without a CTR head there is no CTR or CTCVR to score.
    no_ctr = summarize(Predictions(labels, student, None, truth, clicks, None), num_bins=10)
    assert "ctcvr_auc" not in no_ctr and no_ctr["student_auc"] == out["student_auc"]


def test_ukd_needs_exactly_one_source_of_pseudo_labels():
    from pfdx.config import load_config
    from pfdx.models import training

    for strategy, kwargs in [("ukd", {}), ("ukd", {"pseudo_label_column": "p", "teacher": object()}),
                             ("taml", {"pseudo_label_column": "p"})]:
        config = load_config(None, [f"model.strategy={strategy}"])
        fitter = training.Fitter(None, None, training.Splits([], [], []), **kwargs)
        with pytest.raises(ValueError, match="exactly one of a column or a teacher model"):
            fitter.fit(config)


def test_a_fitter_builds_an_unshuffled_pass_once_and_a_shuffled_one_per_fit(monkeypatch):
    import dataclasses

    from pfdx.config import PipelineConfig
    from pfdx.models import training

    built = []

    def transformed_dataset(factory, files, tft_output, config, shuffle, keep_truth, pseudo,
                            rows):
        built.append((tuple(files), shuffle, keep_truth))
        return tf.data.Dataset.range(3)

    monkeypatch.setattr(training, "transformed_dataset", transformed_dataset)
    fitter = training.Fitter(None, None, training.Splits(["train"], ["validation"], ["eval"]))
    config = PipelineConfig()
    other = dataclasses.replace(config, model=dataclasses.replace(config.model, learning_rate=0.1))
    validation = fitter._dataset(config, ["validation"], shuffle=False)
    assert fitter._dataset(other, ["validation"], shuffle=False) is validation
    assert fitter._dataset(config, ["validation"], False, keep_truth=True) is not validation
    bigger = dataclasses.replace(config, model=dataclasses.replace(config.model, batch_size=64))
    assert fitter._dataset(bigger, ["validation"], shuffle=False) is not validation
    assert fitter._dataset(config, ["train"], True) is not fitter._dataset(config, ["train"], True)
    assert built == [(("validation",), False, False), (("validation",), False, True),
                     (("validation",), False, False), (("train",), True, False),
                     (("train",), True, False)]


def _small_batches():
    rng = np.random.default_rng(0)
    features = {"user_id": rng.integers(0, 4, 32), "bid": rng.integers(0, 5, 32),
                "privileged__x": rng.integers(0, 3, 32)}
    return tf.data.Dataset.from_tensor_slices((features, rng.integers(0, 2, 32))).batch(8)


def _small_model():
    """A HA-PFD V2 model over `_small_batches`' features."""
    config = ModelConfig(strategy="ha_pfd_v2", hidden_units=(8, 4))
    return build_model(config, {"user_id": 4, "bid": 5}, {"privileged__x": 3})


@pytest.mark.parametrize("created", [False, True])
def test_variables_created_up_front_let_keras_trace_its_train_function_once(created):
    model = _small_model()
    batches = _small_batches()
    if created:
        model.create_variables(batches.element_spec)
    model.fit(batches, epochs=1, verbose=0)
    # A trace that creates variables is traced again without them.
    assert model.train_function.experimental_get_tracing_count() == (1 if created else 2)


def test_a_model_releasing_its_optimizers_frees_their_state_and_predicts_the_same():
    """A fitted model its refit replaces keeps no optimizer state (`release_optimizers`):
    Adam's moments and LazyAdam's last steps of every table are freed, the weights and
    the predictions stay, and the new optimizers hold only their step until they train."""
    import gc
    import weakref

    model = _small_model()
    batches = _small_batches()
    model.fit(batches, epochs=1, verbose=0)
    features = next(iter(batches))[0]
    before = {k: v.numpy() for k, v in model(features).items()}
    slots = [weakref.ref(v) for name in ("optimizer", "teacher_optimizer")
             for v in getattr(model, name).variables]
    assert len(slots) > 10  # both sides' moments (and the tables' last steps)
    # The traced train step captured them: it must go too, or they stay in memory.
    step = weakref.ref(model.train_function)
    model.release_optimizers()
    gc.collect()
    assert [ref for ref in slots if ref() is not None] == [] and step() is None
    for optimizer in (model.optimizer, model.teacher_optimizer):  # only their step, 0
        assert [v.ref() for v in optimizer.variables] == [optimizer.iterations.ref()]
        assert int(optimizer.iterations) == 0
    after = model(features)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key].numpy(), value)
    model.fit(batches, epochs=1, verbose=0)  # and trains again, its steps counted anew
    assert int(model.optimizer.iterations) == 4


def test_keras_traces_the_model_steps_without_autograph(autograph_conversions):
    """The train and test steps are plain graph code: autograph's source transform of
    them and of everything they call (the optimizers, the strategies) took most of a
    trace."""
    converted = autograph_conversions
    model = _small_model()
    model.fit(_small_batches(), validation_data=_small_batches(), epochs=1, verbose=0)
    assert "Model.make_train_function.<locals>.train_function" in converted  # Keras' own
    assert not [name for name in converted if name.startswith(("JointModel", "LazyAdam"))
                or name.split(".")[-1] in ("train_step", "test_step", "apply_gradients")]


def _counting_fitter(monkeypatch, rows, split, **model):
    """A Fitter whose every split is `split(ids, config, shuffle)` over `rows` ids
    (`training.transformed_dataset` replaced), its config with `model` settings, and
    the list of every id read so far."""
    import dataclasses

    from pfdx.config import PipelineConfig
    from pfdx.models import training

    reads = []

    def read(x):
        reads.append(int(x))
        return x

    def transformed_dataset(factory, files, tft_output, config, shuffle, keep_truth, pseudo,
                            count):
        ids = tf.data.Dataset.range(rows).map(lambda x: tf.py_function(read, [x], tf.int64))
        return split(ids, config, shuffle)

    monkeypatch.setattr(training, "transformed_dataset", transformed_dataset)
    monkeypatch.setattr(training, "count_records", lambda files: rows)
    fitter = training.Fitter(None, None, training.Splits(["train"], ["validation"], ["eval"]))
    config = PipelineConfig()
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model))
    return fitter, config, reads


@pytest.mark.parametrize("cache_rows, passes", [(10, 1), (4, 2)])
def test_an_unshuffled_split_within_cache_rows_is_read_once(monkeypatch, cache_rows, passes):
    fitter, config, reads = _counting_fitter(monkeypatch, 5, lambda ids, config, shuffle: ids,
                                             cache_rows=cache_rows)
    ds = fitter._dataset(config, ["validation"], shuffle=False)
    for _ in range(2):
        assert [int(x) for x in ds] == [0, 1, 2, 3, 4]
    assert len(reads) == 5 * passes


@pytest.mark.parametrize("cache_rows", [100, 99])
def test_the_train_split_is_read_once_and_shuffled_in_memory_every_epoch(monkeypatch, cache_rows):
    """Within `model.cache_rows`, every fit of a Fitter trains on the split's rows read
    once: each pass holds every row once, in another order each pass, the same
    orders for the same seed. Above it, every pass streams (and reads) the split."""
    def split(ids, config, shuffle):
        rows = ids.map(lambda x: ({"id": tf.reshape(x, [])}, x % 2))
        return (rows.shuffle(100, seed=config.model.seed) if shuffle else rows).batch(8)

    fitter, config, reads = _counting_fitter(monkeypatch, 100, split, cache_rows=cache_rows,
                                             batch_size=8)

    def passes(ds, n=2):
        out = []
        for _ in range(n):
            ids = np.concatenate([features["id"].numpy() for features, _ in ds])
            assert sorted(ids) == list(range(100))
            out.append(ids)
        return out

    first, second = passes(fitter._train(config, ["train"]))
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(100))
    again = passes(fitter._train(config, ["train"]))  # another fit, the same seed
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)
    assert len(reads) == (100 if cache_rows == 100 else 400)
