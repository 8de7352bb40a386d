"""The exported-student contract, asserted the same way for every strategy's student."""
import numpy as np
import tensorflow as tf

# Variable-name fragments of what a served student must never hold.
TEACHER_SIDE = ("teacher", "privileged", "mapping")


def assert_saved_student_is_regular_only(student, batch, regular, path) -> None:
    """Saves `student` with a raw signature on the `regular` features {user_id, bid}
    and checks: no teacher-side variable saved, nothing saved beyond the student's
    own variables, the signature asks for regular features only and serves what
    the in-memory student predicts."""
    module = tf.Module()
    module.student = student
    spec = {"user_id": tf.TensorSpec([None], tf.string, name="user_id"),
            "bid": tf.TensorSpec([None], tf.int64, name="bid")}
    serve = tf.function(lambda features: {"cvr": student(features)}, input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})

    saved = tf.train.list_variables(str(path / "variables" / "variables"))
    names = [name for name, _ in saved if not name.startswith("_CHECKPOINTABLE")]
    assert not [n for n in names if any(w in n for w in TEACHER_SIDE)]
    saved_params = sum(int(np.prod(shape)) for name, shape in saved
                       if name.endswith(".ATTRIBUTES/VARIABLE_VALUE"))
    assert saved_params == sum(int(np.prod(v.shape)) for v in student.variables)

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == set(regular)
    features = batch[0]
    out = signature(user_id=features["user_id"], bid=features["bid"])["cvr"]
    np.testing.assert_allclose(out, student({k: features[k] for k in regular}), rtol=1e-6)
