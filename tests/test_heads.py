"""The heads themselves: the softmax head fits logistic regression's model, scaling, convergence."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from featx.bundle import load_bundle, save_bundle
from featx.errors import FeatxError
from featx.heads import CLASSIFIERS, SCALES, make_head, softmax_objective, two_class_objective
from tests.conftest import META


def blobs(n: int = 240, dim: int = 12, classes: int = 3, sep: float = 1.0, seed: int = 0):
    """Overlapping Gaussian blobs (not separable at sep=1), shifted and scaled like ReLU features."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.normal(size=(classes, dim))[y] * sep + rng.normal(size=(n, dim))
    return (np.abs(X) * 3 + 1).astype(np.float32), y


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("scale", SCALES)
def test_softmax_head_fits_logistic_regressions_model(classes: int, scale: str):
    """Same C and scale: the same decision function (two classes included, where logreg fits one
    weight vector and softmax two)."""
    X, y = blobs(classes=classes)
    probas = {}
    for clf in ("logreg", "softmax"):
        head = make_head(clf, C=0.5, scale=scale).fit(X[:180], y[:180], n_classes=classes)
        assert head.converged is True
        probas[clf] = head.predict_proba(X[180:])
    assert 0.6 < np.mean(probas["logreg"].argmax(1) == y[180:]) < 1.0  # a problem with errors
    np.testing.assert_allclose(probas["softmax"], probas["logreg"], atol=2e-3)


def test_balanced_class_weights_mean_the_same_in_both():
    X, y = blobs(n=300)
    keep = np.r_[np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:15]]  # class 2: 15 of 115 rows
    X, y = X[keep], y[keep]
    probas = [make_head(clf, C=0.5, class_weight="balanced").fit(X, y, n_classes=3)
              .predict_proba(X) for clf in ("logreg", "softmax")]
    np.testing.assert_allclose(probas[1], probas[0], atol=2e-3)
    plain = make_head("softmax", C=0.5).fit(X, y, n_classes=3).predict_proba(X)
    assert np.abs(plain - probas[1]).max() > 0.05  # the weights changed the fit


def test_softmax_and_logreg_agree_on_a_separable_set():
    X, y = blobs(n=300, classes=3, sep=6.0, seed=1)
    preds = {clf: make_head(clf, C=1.0, scale="l2").fit(X[:200], y[:200]).predict(X[200:])
             for clf in ("logreg", "softmax")}
    assert np.mean(preds["logreg"] == y[200:]) == 1.0
    assert (preds["softmax"] == preds["logreg"]).all()


def test_the_objective_is_the_keras_models_loss_and_gradient():
    """The numpy objective L-BFGS minimises is the Keras model's own: categorical cross-entropy of
    its Dense softmax plus its kernel's L2 penalty; the gradient is Keras' (TensorFlow's tape)."""
    import keras

    X, y = blobs(n=60, dim=5, classes=3)
    head = make_head("softmax", C=0.3).fit(X, y, n_classes=3)
    model, dense = head.model, head.model.get_layer("softmax")
    rng = np.random.default_rng(1)
    # small weights: no probability below the 1e-7 that Keras clips to (TensorFlow takes the
    # logits instead, other backends clip)
    W, b = (rng.normal(size=(5, 3)) * 0.1).astype(np.float32), rng.normal(size=3).astype(np.float32)
    dense.set_weights([W, b])
    Y = np.eye(3)[y]
    f, to_model, _ = softmax_objective(X, y, np.full(60, 1 / 60), dense.kernel_regularizer.l2, 3)
    theta = np.concatenate([W.ravel(), b]).astype(np.float64)
    loss, grad, _ = f(theta)
    np.testing.assert_allclose(to_model(theta)[1], b, rtol=1e-6)  # uncentred: the bias as it is
    cross_entropy = keras.losses.CategoricalCrossentropy()(Y, model(X))
    keras_loss = float(cross_entropy) + float(sum(model.losses))
    assert loss == pytest.approx(keras_loss, rel=1e-5)
    if keras.backend.backend() == "tensorflow":  # a tape is backend-specific; the check is not
        import tensorflow as tf

        with tf.GradientTape() as tape:
            total = keras.losses.CategoricalCrossentropy()(Y, model(X)) + sum(model.losses)
        gW, gb = tape.gradient(total, [dense.kernel, dense.bias])
        np.testing.assert_allclose(grad, np.concatenate([np.ravel(gW), gb]), rtol=1e-4, atol=1e-6)


def test_the_two_class_and_centred_objectives_are_the_full_one():
    """The two-class objective equals the full one at opposite columns; centring the rows only
    moves the bias (same loss at the same layer weights), and both gradients follow the chain
    rule (checked by central differences, on float64 rows)."""
    X, y = blobs(n=60, dim=5, classes=2)
    X = X.astype(np.float64)
    weights, mean = np.full(60, 1 / 60), X.mean(axis=0)
    full, full_model, _ = softmax_objective(X, y, weights, 0.05, 2)
    for objective in (two_class_objective, softmax_objective):
        extra = () if objective is two_class_objective else (2,)
        f, to_model, size = objective(X, y, weights, 0.05, *extra, mean=mean)
        theta = np.random.default_rng(2).normal(size=size) * 0.3
        loss, grad, logits = f(theta)
        W, b = to_model(theta)
        assert loss == pytest.approx(full(np.concatenate([W.ravel(), b]))[0], rel=1e-6)
        step = 1e-3  # the weights go through float32: a larger step than usual
        numeric = [(f(theta + step * e)[0] - f(theta - step * e)[0]) / (2 * step)
                   for e in np.eye(size)]
        np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-6)


def test_l2_rows_have_unit_norm_inside_every_pipeline():
    X, y = blobs()
    for clf in CLASSIFIERS:
        head = make_head(clf, scale="l2", epochs=20).fit(X, y, n_classes=3)
        if clf == "softmax":
            import keras

            inner = keras.Model(head.model.input, head.model.get_layer("l2_normalize").output)
            Z = np.asarray(inner(X))
        else:
            Z = head.pipeline.named_steps["l2"].transform(X)
            assert list(head.pipeline.named_steps)[0] == "l2"  # the first step
        np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-5)
    both = make_head("logreg", scale="l2+standard").fit(X, y).pipeline
    assert list(both.named_steps) == ["l2", "standard", "clf"]
    np.testing.assert_allclose(np.linalg.norm(both[0].transform(X), axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(both[:-1].transform(X).mean(axis=0), 0.0, atol=1e-5)


def test_centring_logreg_leaves_its_predictions_as_they_are():
    from sklearn.linear_model import LogisticRegression

    X, y = blobs(sep=0.5)
    head = make_head("logreg", C=10.0).fit(X[:180], y[:180])
    assert list(head.pipeline.named_steps) == ["center", "clf"]
    plain = LogisticRegression(C=10.0, max_iter=5000, tol=1e-8).fit(X[:180], y[:180])
    np.testing.assert_allclose(head.predict_proba(X[180:]), plain.predict_proba(X[180:]),
                               atol=2e-3)
    np.testing.assert_allclose(head.pipeline[-1].coef_, plain.coef_, rtol=0.02, atol=1e-3)


@pytest.mark.parametrize("clf", CLASSIFIERS)
@pytest.mark.parametrize("scale", ["l2", "l2+standard"])
def test_a_saved_bundle_predicts_like_the_head_in_memory(clf: str, scale: str, tmp_path: Path):
    X, y = blobs()
    head = make_head(clf, scale=scale, C=2.0, epochs=30).fit(X[:180], y[:180], n_classes=3)
    meta = {**META, "dim": X.shape[1], "n": len(y), "data_dir": str(tmp_path)}
    bundle = load_bundle(save_bundle(tmp_path / "b", head, ["a", "b", "c"], meta))
    assert bundle.params["scale"] == scale
    np.testing.assert_allclose(bundle.predict_proba(X[180:]), head.predict_proba(X[180:]),
                               atol=1e-6)


def test_a_run_out_of_budget_says_it_did_not_converge():
    X, y = blobs(sep=0.3)
    short = make_head("softmax", epochs=3).fit(X, y, X[:30], y[:30], n_classes=3)
    assert short.converged is False and short.n_iter == 3
    assert len(short.history["loss"]) == len(short.history["val_loss"]) == 3
    assert short.history["loss"][-1] < short.history["loss"][0]  # it was improving
    assert make_head("softmax").fit(X, y, n_classes=3).converged is True
    assert make_head("logreg", max_iter=2).fit(X, y).converged is False


def test_lbfgs_history_is_the_models_loss_and_accuracy_per_epoch():
    X, y = blobs()
    head = make_head("softmax", C=1.0).fit(X[:180], y[:180], X[180:], y[180:], n_classes=3)
    h = head.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(h["loss"]) == head.n_iter == head.best_epoch
    proba = head.predict_proba(X[180:])  # the last epoch is the fitted model
    W = head.model.get_layer("softmax").kernel
    penalty = head.model.get_layer("softmax").kernel_regularizer.l2 * float(np.sum(np.square(W)))
    ce = -np.mean(np.log(proba[np.arange(60), y[180:]]))
    assert h["val_loss"][-1] == pytest.approx(ce + penalty, rel=1e-4)
    assert h["val_accuracy"][-1] == np.mean(proba.argmax(1) == y[180:])
    assert h["accuracy"][-1] == np.mean(head.predict(X[:180]) == y[:180])


def test_bad_parameters_name_themselves():
    for params, message in [({"scale": "l3"}, "scale is one of none, l2, standard, l2+standard"),
                            ({"solver": "sgd"}, "solver is one of lbfgs, adam"),
                            ({"epochs": 0}, "epochs must be at least 1")]:
        with pytest.raises(FeatxError, match=re.escape(message)):
            make_head("softmax", **params)


@pytest.mark.parametrize("clf", CLASSIFIERS)
def test_heads_follow_scikit_learns_estimator_conventions(clf: str):
    """clone gives an unfitted head with the same parameters; set_params checks names; a head
    goes into cross_validate (with StratifiedGroupKFold) as it is; fitted attributes end in _."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedGroupKFold, cross_validate

    X, y = blobs(n=90, dim=6, sep=4.0)
    head = make_head(clf, C=0.5, scale="l2")
    copy = clone(head)
    assert copy is not head and copy.get_params() == head.get_params() and not copy.fitted
    assert copy.set_params(C=2.0) is copy and (copy.params["C"], head.params["C"]) == (2.0, 0.5)
    with pytest.raises(FeatxError, match="takes no parameter gamma_x"):
        head.set_params(gamma_x=1)
    folds = StratifiedGroupKFold(3, shuffle=True, random_state=0)
    scores = cross_validate(head, X, y, groups=np.arange(len(y)) // 2, cv=folds)["test_score"]
    assert len(scores) == 3 and min(scores) > 0.8  # separable blobs
    fitted = head.fit(X, y)
    assert fitted is head and fitted.n_features_in_ == 6 and list(fitted.classes_) == [0, 1, 2]
    assert fitted.score(X, y) == np.mean(fitted.predict(X) == y)
