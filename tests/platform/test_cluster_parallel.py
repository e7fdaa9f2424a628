"""Heavy steps on a real Dask cluster (a scheduler and two worker processes on 127.0.0.1, started once for the module):
the demand backtest's folds through joblib's Dask backend (`joblib_on_cluster`) give the same numbers as in local
processes, and the service-time model's final fit on the workers (`lightgbm.dask`, chosen by
`cluster.dask_lgbm_min_rows`) scores beside the local fit and is saved as a plain model that loads without Dask."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from kronkers_ml.demand.backtest import rolling_origins, run_backtest
from kronkers_ml.demand.data import check_transactions, clean_transactions
from kronkers_ml.demand.generator import simulate_transactions
from kronkers_ml.demand.series import daily_revenue
from kronkers_ml.metrics import mae
from kronkers_ml.platform.cluster import joblib_on_cluster, local_cluster
from kronkers_ml.service_time.data import ZONES
from kronkers_ml.service_time.features import FEATURES
from kronkers_ml.service_time.model import (base_lgb_params, fit_lightgbm, fit_lightgbm_dask, lightgbm_on_dask,
                                            load_model, predict_lightgbm, save_model)
from kronkers_ml.service_time.settings import TrainServiceTime
from conftest import ROOT


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    "A scheduler and two worker processes (one thread each) that import this checkout; yields the scheduler address."
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with local_cluster(2, env=env, cwd=ROOT, logs=tmp_path_factory.mktemp("dask")) as address:
        yield address


def small_daily() -> pd.DataFrame:
    "500 days of a small generated shop (the backtest notebook's example series)."
    log = check_transactions(simulate_transactions(start="2023-01-01", days=500, invoices_per_day=20, n_products=30,
                                                   n_customers=300, seed=2), "sim")
    lines, _ = clean_transactions(log)
    return daily_revenue(lines, "2023-01-01", "2024-05-14")


def test_backtest_through_joblibs_dask_backend_gives_the_local_figures(cluster):
    """Six folds of four candidates (SARIMA with its order search, LightGBM, ETS, the seasonal naive): the forecast
    table is identical, number for number, in local processes and on the cluster, and the folds ran on both workers."""
    daily = small_daily()
    candidates = {"seasonal_naive": {}, "ets": {}, "sarima": {"max_p": 1, "max_q": 0, "max_P": 0, "max_Q": 1},
                  "lightgbm": {"seed": 1, "horizon": 14}}
    origins = rolling_origins(daily.date.max(), 6, 14, 14)
    local, local_folds = run_backtest(daily, origins, 14, candidates, n_jobs=2)
    with joblib_on_cluster({"scheduler": cluster}) as workers:
        remote, remote_folds = run_backtest(daily, origins, 14, candidates, n_jobs=-1)
    assert len(workers) == 2
    pd.testing.assert_frame_equal(remote, local, check_exact=True)
    assert not remote_folds.errors.any() and remote.notna().all().all()
    assert os.getpid() not in set(remote_folds.pid) and remote_folds.pid.nunique() == 2, remote_folds.pid.tolist()
    assert set(remote_folds.pid).isdisjoint(local_folds.pid)                  # the workers' processes, not joblib's


def stops(n: int, seed: int) -> pd.DataFrame:
    "`n` stops with every feature of the model and a service time with heavy-tailed noise (Student t, 3 df)."
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f: rng.integers(0, 8, n).astype(float) for f in FEATURES if f != "zone"})
    frame["zone"] = pd.Categorical(rng.choice(list(ZONES), n), categories=list(ZONES))
    frame["service_time_s"] = (150 + 30 * frame.n_items + 20 * frame.stairs + np.where(frame.zone == ZONES[0], 60, 0)
                               + rng.standard_t(3, n) * 30)
    return frame


def test_final_fit_on_dask_scores_beside_the_local_fit_and_loads_without_dask(cluster, tmp_path):
    """With `cluster.dask_lgbm_min_rows` below the training rows the final fit runs on the workers. The Dask model is
    another draw of the same learner (bins from per-worker samples, bagging per worker), so its held-out MAE must lie
    within one standard error of the local fit's MAE estimate (sd(|error|) / sqrt(n) on the held-out rows): a
    difference the held-out set cannot tell from noise; a broken distributed fit (a worker's rows lost, categories
    coded apart) is many standard errors off. The saved model predicts the same in a process where Dask cannot load."""
    frame = stops(7000, seed=4)
    train, held = frame.iloc[:5000], frame.iloc[5000:]
    cfg = TrainServiceTime(dask_lgbm_min_rows=4000)
    assert lightgbm_on_dask(len(train), cfg.dask_lgbm_min_rows, {"scheduler": cluster, "worker": None})
    assert not lightgbm_on_dask(len(train), TrainServiceTime().dask_lgbm_min_rows, {"scheduler": cluster, "worker": None})
    params = {**base_lgb_params(7, num_threads=1), "objective": "l1", "learning_rate": 0.1, "num_leaves": 15,
              "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1}
    local = fit_lightgbm(train, params, 200, seed=7)
    on_dask = fit_lightgbm_dask(train, params, 200, cluster, seed=7)
    y = held.service_time_s.to_numpy()
    err_local = np.abs(y - predict_lightgbm(local, held))
    mae_local, mae_dask = err_local.mean(), mae(y, predict_lightgbm(on_dask, held))
    std_error = err_local.std(ddof=1) / np.sqrt(len(held))
    assert abs(mae_dask - mae_local) <= std_error, (mae_dask, mae_local, std_error)
    assert mae_dask < 0.5 * mae(y, np.full(len(y), np.median(train.service_time_s)))      # it learned the effects
    assert on_dask.num_trees() == 200 and on_dask.feature_name() == local.feature_name()

    # a cluster build leaves the task's own worker out: the fit runs on the other one alone
    with Client(cluster, set_as_default=False) as client:
        workers = sorted(client.scheduler_info()["workers"])
    one = fit_lightgbm_dask(train, params, 200, cluster, seed=7, own_worker=workers[0])
    assert abs(mae(y, predict_lightgbm(one, held)) - mae_local) <= std_error

    path = save_model(on_dask, tmp_path / "model.txt")
    held.to_parquet(tmp_path / "held.parquet")
    np.save(tmp_path / "expected.npy", predict_lightgbm(on_dask, held))
    script = ("import sys; sys.modules['dask'] = sys.modules['distributed'] = None\n"
              "import numpy as np, pandas as pd\n"
              "from kronkers_ml.service_time.model import load_model, predict_lightgbm\n"
              f"p = predict_lightgbm(load_model({str(path)!r}), pd.read_parquet({str(tmp_path / 'held.parquet')!r}))\n"
              f"np.testing.assert_allclose(p, np.load({str(tmp_path / 'expected.npy')!r}), rtol=1e-12)\n"
              "try:\n    import dask\nexcept ImportError:\n    print('ok')")                  # Dask could not be used
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert load_model(path).num_trees() == 200
