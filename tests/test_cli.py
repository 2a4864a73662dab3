"""The command line as a user meets it: quiet start-up, no needless imports, help texts, progress
in a pipe, exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_WEIGHTS, make_images, needs_shared, synthetic_store

# What TensorFlow 2.21 printed on this project's machine (no GPU) before featx quieted it.
TF_NOISE = "".join(line + "\n" for line in (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795929032.912574    5845 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "I0000 00:00:1795929032.999275    5845 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with "
    "the appropriate compiler flags.",
    "E0000 00:00:1795929050.940413    5921 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA "
    "error: Failed call to cuInit: UNKNOWN ERROR (303)",
))


def _user_env() -> dict[str, str]:
    """The environment a user has: without the test suite's log settings, or those an in-process
    CLI run left in this process."""
    return {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "FEATX_QUIET_IMPORTS", "FEATX_VERBOSE")}


def _cli(*args: str) -> subprocess.CompletedProcess:
    """featx in a fresh process, with the environment a user has."""
    cmd = [sys.executable, "-c", "from featx.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_user_env())


# --- item 3: third-party start-up noise -------------------------------------------------------


def test_noise_filter_drops_tensorflow_start_up_lines_and_keeps_real_errors():
    from featx.quiet import filter_noise

    real = "E0000 00:00:1.0 1 op_kernel.cc:1] OOM when allocating tensor\nTraceback (most recent call):\n"
    assert filter_noise(TF_NOISE) == ""
    assert filter_noise(TF_NOISE + real) == real


def test_captured_stderr_is_replayed_without_noise(capfd):
    from featx.quiet import stderr_captured

    with stderr_captured():
        os.write(2, TF_NOISE.encode())
        os.write(2, b"F0000 real failure\n")
    assert capfd.readouterr().err == "F0000 real failure\n"


def test_the_cli_its_workers_and_a_library_user_get_the_quiet_import(tmp_path: Path):
    code = """
import os, sys
from featx.quiet import _QuietFinder
quiet = lambda: any(isinstance(f, _QuietFinder) for f in sys.meta_path)
import featx  # a library user's process: the same quiet start-up as the CLI
assert quiet() and os.environ["FEATX_QUIET_IMPORTS"] == "1"
featx.quiet.uninstall()
from featx.cli import main
try:
    main(["info", "absent.h5"])
except SystemExit:
    pass
assert quiet() and os.environ["FEATX_QUIET_IMPORTS"] == "1"  # inherited by loky workers
print("ok")
"""
    env = {**_user_env(), "PYTHONPATH": str(Path(__file__).parents[1])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env=env)
    assert res.stdout == "ok\n", res.stderr
    worker = subprocess.run([sys.executable, "-c", "import sys, featx, featx.quiet as q; "
                             "print(any(isinstance(f, q._QuietFinder) for f in sys.meta_path))"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**env, "FEATX_QUIET_IMPORTS": "1"})
    assert worker.stdout == "True\n", worker.stderr
    verbose = subprocess.run([sys.executable, "-c", "import sys, featx, featx.quiet as q; "
                              "print(any(isinstance(f, q._QuietFinder) for f in sys.meta_path))"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path,
                             env={**env, "FEATX_VERBOSE": "1"})
    assert verbose.stdout == "False\n", verbose.stderr


def test_sweep_workers_importing_tensorflow_print_nothing(tmp_path: Path):
    """A softmax point makes a loky worker import TensorFlow; logreg wins, so only the worker does."""
    store = synthetic_store(tmp_path / "s.h5", counts=(30, 30), dim=8)
    res = _cli("sweep", str(store), "--clf", "logreg,softmax", "--C", "1", "--epochs", "1",
               "--lr", "1e-7", "--jobs", "2", "-o", str(tmp_path / "sweep"), "--json",
               "--quiet")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""


@needs_shared
def test_fc2_with_notop_weights_prints_featx_line_only(tmp_path: Path, capsys):
    from featx.cli import main

    data = make_images(tmp_path / "data", {"a": 1, "b": 1})
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", str(data), "--weights", str(SHARED_WEIGHTS), "--layer", "fc2",
              "-o", str(tmp_path / "s.h5")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("featx: error: could not load") and err.count("\n") == 1, err


# --- item 4: no TensorFlow where no Keras model is needed -------------------------------------


def test_commands_without_a_keras_model_do_not_import_tensorflow(tmp_path: Path):
    store = str(synthetic_store(tmp_path / "s.h5", counts=(30, 30), dim=8))
    runs = [["info", store], ["fit", store, "--clf", "logreg", "-o", str(tmp_path / "b")],
            ["sweep", store, "--clf", "logreg,linear-svm", "--C", "1", "--backend", "threading",
             "-o", str(tmp_path / "sw")],
            ["neighbors", store, "class0/0.jpg", "-k", "3"], ["duplicates", store],
            ["export", store, "-o", str(tmp_path / "e.npz")]]
    code = f"""
import sys
from featx.cli import main
for args in {runs!r}:
    try:
        main(args)
    except SystemExit as e:
        assert e.code == 0, (args, e.code)
print("heavy:", sorted(m for m in ("tensorflow", "keras", "jax") if m in sys.modules))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "heavy: []"


# --- item 9: help texts -----------------------------------------------------------------------


def _commands() -> dict:
    import typer

    from featx.cli import app

    return typer.main.get_command(app).commands


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_reads_as_written(name: str, capsys):
    from featx.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "<bool>" not in text and "{" not in text
    assert not re.search(r"\[\s*\]|\(\s*\)|\s[.,;](\s|$)", text), text  # brackets eaten
    flat = "".join(text.split())
    command = _commands()[name]
    for param in command.params:  # every help text whole: no bracket eaten as markup
        if param.help and not getattr(param, "hidden", False):
            assert "".join(param.help.split()) in flat, param.help
    usage = text.splitlines()[0]
    args = [p.name.upper() for p in command.params if p.param_type_name == "argument"]
    assert usage.startswith(f"Usage: featx {name} [OPTIONS]") and all(a in usage for a in args)


# --- item 6: progress in a log or a pipe ------------------------------------------------------


def test_plain_progress_prints_first_last_and_every_few_seconds():
    from featx.cli import PlainProgress

    lines: list[str] = []
    now = [0.0]
    progress = PlainProgress(lines.append, interval=5.0, clock=lambda: now[0])
    for t, done in ((0, 0), (1, 10), (4.9, 40), (5, 50), (6, 60), (30, 90), (31, 100), (32, 100)):
        now[0] = t
        progress("embed", done, 100)
    assert lines == ["embed: 50/100 (50%), about 5 s left",
                     "embed: 90/100 (90%), about 3 s left", "embed: 100/100 (100%)"]
    quick: list[str] = []  # a stage that ends within the first interval says nothing
    progress = PlainProgress(quick.append, interval=5.0, clock=lambda: now[0])
    for t, done in ((0, 0), (1, 5), (2, 10)):
        now[0] = t
        progress("hash", done, 10)
    assert quick == []


def test_map_in_a_pipe_prints_no_progress_noise_for_a_quick_run(tmp_path: Path, capsys):
    from featx.cli import main

    store = synthetic_store(tmp_path / "s.h5", counts=(10, 10), dim=8)
    with pytest.raises(SystemExit) as exit_info:
        main(["map", str(store), "--method", "pca", "-o", str(tmp_path / "map.png")])
    assert exit_info.value.code == 0
    assert capsys.readouterr().err.splitlines() == []


# --- item 11: predict's exit code -------------------------------------------------------------


def test_predict_exits_3_when_an_input_failed_and_still_predicts_the_others(
        tiny_store: Path, tmp_path: Path, capsys):
    from featx.cli import main
    from featx.store import read_meta

    good = Path(read_meta(tiny_store)["data_dir"]) / "circle" / "circle_000.jpg"
    bundle = str(tmp_path / "b")
    with pytest.raises(SystemExit):
        main(["fit", str(tiny_store), "-o", bundle])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", bundle, str(good), str(tmp_path / "missing.jpg")])
    captured = capsys.readouterr()
    assert exit_info.value.code == 3
    assert captured.out.startswith(f"{good}: ") and captured.out.count("\n") == 2
    assert "of 1 photo" in captured.out.splitlines()[1]  # the unfamiliar photos' summary
    assert captured.err.splitlines() == [  # a quick run: no progress lines, the error only
        f"featx: error: {tmp_path / 'missing.jpg'}: no such file or folder"]


def test_predict_exits_0_when_every_input_was_predicted(tmp_path: Path, monkeypatch):
    from featx import predict
    from featx.cli import main

    done = predict.PredictReport(tmp_path, ["a", "b"], [predict.Prediction("x.jpg", {}, [("a", 1.0)])])
    monkeypatch.setattr(predict, "predict", lambda *args, **kw: done)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path), "x.jpg"])
    assert exit_info.value.code == 0


# --- item 14: speed hint, precision in the default store name ---------------------------------


def test_amx_bf16_is_read_from_the_cpu_flags():
    from featx.backbones import cpu_has_amx_bf16

    assert cpu_has_amx_bf16(["fpu", "avx512f", "amx_bf16", "amx_tile"])
    assert not cpu_has_amx_bf16(["fpu", "avx2", "fma"])


@pytest.mark.parametrize("precision, hinted", [("float32", True), ("bfloat16", False)])
def test_extract_hints_at_bfloat16_on_an_amx_cpu(precision, hinted, tmp_path, monkeypatch, capsys):
    from featx import backbones
    from featx.cli import main

    monkeypatch.setattr(backbones, "cpu_has_amx_bf16", lambda flags=None: True)
    with pytest.raises(SystemExit):
        main(["extract", str(tmp_path / "absent"), "--precision", precision])
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("featx: error: data folder not found")
    assert (lines[0].startswith("hint: this CPU has AMX-BF16: --precision bfloat16") and
            len(lines) == 2) if hinted else len(lines) == 1


def test_default_store_name_names_a_precision_other_than_float32():
    from featx.embed import ExtractorSettings
    from featx.extract import default_output

    names = [default_output(Path("/d/pets"), ExtractorSettings(layer="block5_pool", precision=p)).name
             for p in ("float32", "bfloat16", "float16")]
    assert names == ["pets_vgg16_block5_pool_avg.h5", "pets_vgg16_block5_pool_avg_mixed_bfloat16.h5",
                     "pets_vgg16_block5_pool_avg_mixed_float16.h5"]  # apart from a float16 store
    stored16 = ExtractorSettings(layer="block5_pool", store_dtype="float16")
    assert default_output(Path("/d/pets"), stored16).name == "pets_vgg16_block5_pool_avg_float16.h5"


# --- item 15: what a run did, counted -----------------------------------------------------------


def test_extract_counts_embedded_stored_duplicates_and_removed(tmp_path: Path, capsys):
    import json
    import shutil

    from featx.cli import main

    data = make_images(tmp_path / "data", {"cat": 3, "dog": 3})
    shutil.copy(data / "cat" / "cat_000.jpg", data / "cat" / "dup.jpg")  # a duplicate in one run
    args = ["extract", str(data), "-o", str(tmp_path / "s.h5"), "--model", "mobilenet_v2",
            "--layer", "out_relu", "--weights", "none"]

    def run(*extra: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(args + list(extra))
        assert exit_info.value.code == 0
        return capsys.readouterr().out

    first = json.loads(run("--json"))
    assert [first[k] for k in ("n_images", "n_embedded", "n_reused", "n_duplicates", "n_removed")] \
        == [7, 6, 0, 1, 0]
    (data / "dog" / "dog_000.jpg").unlink()
    make_images(tmp_path / "more", {"dog": 1}, seed=5)
    shutil.move(tmp_path / "more" / "dog" / "dog_000.jpg", data / "dog" / "new.jpg")
    assert run().splitlines()[0].endswith(
        "7 vectors of 1280 dims (1 embedded, 5 already stored, 1 exact duplicate of another file; "
        "1 removed since the last run)")


def test_predict_with_a_missing_bundle_says_not_found(tmp_path: Path, capsys):
    from featx.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path / "models" / "absent"), str(tmp_path / "x.jpg")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"featx: error: bundle not found: {tmp_path / 'models' / 'absent'}\n"


def test_verbose_after_the_command_is_the_global_flag(tmp_path: Path, monkeypatch, capsys):
    from featx import quiet
    from featx.cli import main

    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    store = str(synthetic_store(tmp_path / "s.h5", counts=(5, 5), dim=4))
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["info", store, "--verbose"])
        assert exit_info.value.code == 0 and quiet.verbose()
        assert not any(isinstance(f, quiet._QuietFinder) for f in sys.meta_path)
    finally:
        quiet.install()  # as the other tests' CLI runs leave it
