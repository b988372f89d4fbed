from __future__ import annotations

import json

import numpy as np
import pytest

from pcapvision.cli import main
from pcapvision.robustness.suite import EXAMPLES_FILE, HTML_FILE, JSON_FILE, SuiteConfig, run_suite


@pytest.fixture(scope="module")
def mnist_like_model(tmp_path_factory):
    """A classify-stage MNIST model directory trained on a tiny synthetic 'MNIST' file (3 of 10 digits)."""
    from pcapvision.classify.pipeline import train_mnist

    root = tmp_path_factory.mktemp("robustness-model")
    rng = np.random.default_rng(0)
    n = 150
    y = (np.arange(n) % 3).astype(np.uint8)
    x = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
    for k in range(3):
        x[y == k, 4 + 8 * k : 10 + 8 * k, 6:22] = 230  # a bright bar whose row says the class
    mnist_file = root / "mini-mnist.npz"
    np.savez(mnist_file, x=x, y=y)
    model_dir = root / "model"
    train_mnist(model_dir, mnist_file=mnist_file, epochs=3, seed=0, allow_download=False)
    return model_dir, mnist_file


TINY = SuiteConfig(
    n_eval=30, n_attack=12, fgsm_eps=(0.1, 0.3), pgd_linf_eps=(0.1, 0.3), pgd_steps=3, pgd_l2_eps=(1.0,),
    n_deepfool=4, deepfool_steps=5, fooling_per_class=1, fooling_steps=20, noise_class=True, noise_per_class=4,
    retrain_epochs=1, defences=("fgsm_rs",), defence_epochs=1, defence_steps=2, defence_train_n=60, n_certify=4,
    certify_n=50,
)


def test_run_suite_writes_json_html_and_examples(mnist_like_model, tmp_path):
    model_dir, mnist_file = mnist_like_model
    out = tmp_path / "report"
    record = run_suite(model_dir, "mnist", out, config=TINY, mnist_file=mnist_file)
    assert {p.name for p in out.iterdir()} == {JSON_FILE, HTML_FILE, EXAMPLES_FILE}
    on_disk = json.loads((out / JSON_FILE).read_text())
    assert on_disk["stage"] == "robustness" and on_disk["params"]["config"]["n_attack"] == 12
    from tests.contract_keys import check_documented_keys

    assert check_documented_keys(on_disk, "robustness.json") >= 8  # defences and noise class ran here
    assert on_disk["data"]["n_attacked"] == 12 and on_disk["data"]["name"] == "mnist"
    assert "adversarial-robustness-toolbox" in on_disk["library_versions"]
    assert len(on_disk["distortions"]) == 8 * 6
    attacks = {(r["attack"], r["eps"]) for r in on_disk["attacks"]}
    assert attacks == {("fgsm", 0.1), ("fgsm", 0.3), ("pgd_linf", 0.1), ("pgd_linf", 0.3), ("pgd_l2", 1.0)}
    for r in on_disk["attacks"]:
        assert r["norm_linf"]["max"] <= (r["eps"] + 1e-5 if r["norm"] == "inf" else 1.0)
        assert 0 <= r["attack_success_rate"] <= 1
    assert on_disk["traffic_distortions"]["skipped"].startswith("MNIST model")
    n_classes = len(on_disk["model"]["class_names"])  # classify's MNIST models always have 10 outputs
    assert len(on_disk["confusion_under_attack"]["matrix"]) == n_classes
    assert on_disk["noise_class"]["noise_class_index"] == n_classes
    assert [row["model"] for row in on_disk["defences"]["table"]] == ["standard (given)", "fgsm_rs"]
    assert on_disk["certification"]["n"] == 50
    assert record["summary"] == on_disk["summary"]
    html = (out / HTML_FILE).read_text()
    assert html.count("data:image/png;base64,") >= 7 and "Fooling images" in html
    with np.load(out / EXAMPLES_FILE) as npz:
        assert npz["fgsm_eps0.3/linf"].max() <= 0.3 + 1e-5 and len(npz["y"]) == 12


def test_cli_quick_suite(mnist_like_model, tmp_path, capsys):
    model_dir, mnist_file = mnist_like_model
    out = tmp_path / "cli-report"
    code = main(["robustness", str(model_dir), "--dataset", "mnist", "--mnist-file", str(mnist_file), "-o", str(out),
                 "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "clean accuracy" in printed and "robustness.html" in printed
    record = json.loads((out / JSON_FILE).read_text())
    assert record["params"]["suite"] == "quick"
    assert record["defences"]["skipped"] and record["noise_class"]["skipped"]


def test_cli_refuses_data_and_dataset_together(mnist_like_model, tmp_path, capsys):
    model_dir, _ = mnist_like_model
    with pytest.raises(SystemExit) as exc:
        main(["robustness", str(model_dir), "table.parquet", "--dataset", "mnist", "-o", str(tmp_path / "r")])
    assert exc.value.code == 2
    assert "must be omitted with --dataset mnist" in capsys.readouterr().err


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["robustness", "--help"])
    text = capsys.readouterr().out
    for option in ("--suite", "--dataset", "--mnist-file", "--flows", "--seed", "--quiet", "--debug", "(default: quick)"):
        assert option in text


def test_defences_select_their_epoch_on_training_data_and_report_unseen_test_images(tiny_model, tiny_data, monkeypatch):
    """The epoch check of a defence never sees the images its table reports (the old check used x_att)."""
    from pcapvision.robustness import defences
    from pcapvision.robustness.studies import defence_study, selection_split
    from pcapvision.robustness.suite import EvalData

    x, y = tiny_data
    x_train, y_train, x_att, y_att = x[:72], y[:72], x[72:], y[72:]
    seen: dict = {}
    real = defences.adversarial_training

    def spy(model, xt, yt, **kw):
        seen["train"], seen["check"] = xt, kw["x_check"]
        return real(model, xt, yt, **kw)

    monkeypatch.setattr(defences, "adversarial_training", spy)
    ev = EvalData(x_att, y_att, ["a", "b"], {}, x_train=x_train, y_train=y_train)
    cfg = SuiteConfig(defences=("fgsm_rs",), defence_epochs=1, defence_steps=1, pgd_steps=2, defence_eps=0.1)
    out = defence_study(tiny_model, ev, x_att, y_att, cfg, None, seed=0)

    def rows_of(images, pool):
        return {int(np.flatnonzero((pool == img).all(axis=(1, 2, 3)))[0]) for img in images}

    check = rows_of(seen["check"], x_train)  # every check image is a training image ...
    assert check and not check & rows_of(seen["train"], x_train)  # ... held out of the defence's own training
    assert not any((x_att == img).all(axis=(1, 2, 3)).any() for img in seen["check"])  # never a reported image
    assert "never saw" in out["selection"] and out["n_reported"] == len(y_att)
    fit, select = selection_split(100, 1000, seed=1)
    assert len(select) == 20 and not set(fit) & set(select) and len(fit) + len(select) == 100
