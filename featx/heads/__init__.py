"""heads: light classifiers on cached feature vectors, behind one small interface.

=============  ====================================================================================
``logreg``     scikit-learn LogisticRegression (lbfgs, multinomial)
``svm``        SVC (RBF kernel)
``linear-svm`` LinearSVC
``softmax``    a Keras softmax head (Dense softmax, categorical cross-entropy), the tutorial's
               model, trained full-batch by L-BFGS (default) or by the tutorial's Adam
``cnn``        the from-scratch CNN of :mod:`featx.baseline` (pixels in, not vectors); trained
               there, loaded and used here like the others
``finetune``   VGG16's block5 + a softmax head on cached block4_pool maps (:mod:`featx.finetune`);
               trained there, loaded and used here like the others
=============  ====================================================================================

``scale`` (every head on vectors): ``"none"``, ``"l2"`` (each row divided by its L2 norm),
``"standard"`` (per-feature mean and variance of the training part) or ``"l2+standard"`` (both, in
that order). In the sklearn heads it is the Pipeline's first step(s) (Normalizer, StandardScaler);
in the softmax head, Keras layers before the Dense one (UnitNormalization, Normalization), so a saved
head applies it to new vectors exactly as it did in training. ``featx fit`` picks ``scale`` and
``C`` by cross-validation when they are not given (:mod:`featx.sweep`).

``C`` means the same for every head: the inverse L2 strength of LogisticRegression's objective,
``mean loss + ||W||^2 / (2 C n)`` (``n``: the sum of the sample weights). The softmax head minimises
exactly that (weighted mean cross-entropy + the Dense kernel's L2 penalty ``1 / (2 C n)``, doubled for
two classes, where LogisticRegression fits one weight vector and softmax two opposite halves of it),
so with the same ``C`` and ``scale`` both fit the same decision function. Its default solver,
``"lbfgs"``, minimises that objective over the whole training part with SciPy's L-BFGS-B and
LogisticRegression's stopping rule (``tol`` 1e-4); each iteration is one full-batch step, counted
as an epoch, ``epochs`` caps them (1000) and ``history`` holds loss, accuracy, val_loss and
val_accuracy per epoch. ``solver="adam"`` is the tutorial's training: mini-batches, Adam, early
stopping on validation loss with the best weights restored. ``converged`` says whether a run
stopped by itself or used up its budget.

Probabilities of both SVMs: Platt scaling by scikit-learn's CalibratedClassifierCV
(``method="sigmoid"``, ``ensemble=False``): a sigmoid (one-vs-rest per class, renormalised) is fitted
on 3-fold out-of-fold decision values and the SVM itself is refitted on the whole training part; the
same as libsvm's ``probability=True``, which scikit-learn 1.9 deprecates. Predicted labels are the
argmax of these probabilities.

Every head follows scikit-learn's conventions (``fit`` returns self, ``predict_proba`` gives one
column per class in label order) and adds ``save``/``load`` to a directory. The core uses keras,
numpy and scipy only (no direct TensorFlow imports), so any Keras backend works.

The package, by job: :mod:`~featx.heads.params` (names, parameters, defaults, checks),
:mod:`~featx.heads.base` (the interface), :mod:`~featx.heads.sklearn_heads`,
:mod:`~featx.heads.keras_heads`, :mod:`~featx.heads.softmax_math` (the L-BFGS objective) and
:mod:`~featx.heads.registry` (by name: new or saved).
"""

from __future__ import annotations

from featx.heads.base import Head
from featx.heads.keras_heads import CnnHead, FinetuneHead, KerasHead, SoftmaxHead, with_pooled
from featx.heads.params import (CLASSIFIERS, DEFAULTS, SCALES, SOLVER_EPOCHS, SOLVERS, check_clf,
                                head_params, unused_params)
from featx.heads.registry import HEADS, load_head, make_head
from featx.heads.sklearn_heads import SklearnHead
from featx.heads.softmax_math import (LBFGS_OPTIONS, l2_strength, softmax_objective,
                                      two_class_objective)

__all__ = ["CLASSIFIERS", "CnnHead", "DEFAULTS", "FinetuneHead", "HEADS", "Head", "KerasHead",
           "LBFGS_OPTIONS", "SCALES", "SOLVERS", "SOLVER_EPOCHS", "SklearnHead", "SoftmaxHead",
           "check_clf", "head_params", "l2_strength", "load_head", "make_head", "softmax_objective",
           "two_class_objective", "unused_params", "with_pooled"]
